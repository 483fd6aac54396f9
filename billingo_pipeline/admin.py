"""Company administration shared by the CLI and the demo: keys are checked live, then stored encrypted."""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.fernet import MultiFernet
from sqlalchemy.engine import Connection, Engine

from .billingo_client import BillingoClient
from .credentials import (
    CredentialError,
    api_key_fingerprint,
    can_decrypt,
    clean_api_key,
    decrypt_api_key,
    encrypt_api_key,
    load_fernet,
    reencrypt_api_key,
    same_api_key,
)
from .settings import FERNET_KEY_ENV
from .warehouse import companies as company_store
from .warehouse.companies import Company, CompanyError, ReaderGrant

# How many company slugs a refusal names before it says "…".
_NAMED_AT_MOST = 5


class SharedApiKeyError(CompanyError):
    """The key is already another company's: both would silently share one Billingo rate limit."""


def _slug_list(slugs: list[str]) -> str:
    shown = ", ".join(f"'{s}'" for s in slugs[:_NAMED_AT_MOST])
    return shown + (", …" if len(slugs) > _NAMED_AT_MOST else "")


def _key_guard(fernet: MultiFernet, api_key: str, *, slug: str, allow_shared_key: bool):
    """The checks a key must pass against the keys already stored, run before the live check (to
    fail fast) and again inside the write's transaction (so they still hold when it is written).

    - Every other company's token must open with ``fernet``: else the new token would be under a
      different Fernet key than theirs, a split nobody notices until one of them is rotated out.
      The company whose key is being replaced is left out: an unreadable old key is a reason to
      replace it.
    - The key must not already be another company's (unless ``allow_shared_key``): Billingo's
      rate limit is per key. Fingerprints find the candidates, the decrypted keys decide.
    """
    api_key = clean_api_key(api_key)
    fingerprint = api_key_fingerprint(api_key)

    def guard(conn: Connection) -> None:
        others = [c for c in company_store.companies_with_keys(conn) if c.slug != slug]
        unreadable = [c.slug for c in others if not can_decrypt(c.api_key_encrypted, fernet)]
        if unreadable:
            raise CredentialError(
                f"{FERNET_KEY_ENV} cannot decrypt the stored API keys of {len(unreadable)} of {len(others)} other "
                f"companies ({_slug_list(unreadable)}): a key stored now would be encrypted under a different Fernet "
                f"key than theirs. Set {FERNET_KEY_ENV} to the key(s) they were stored with (a new key first, the "
                "old ones after it), then `billingo-pipeline rotate-fernet-key`."
            )
        if allow_shared_key:
            return
        sharing = [
            c.slug
            for c in others
            if c.api_key_fingerprint in (fingerprint, None)  # None: stored before fingerprints were kept
            and same_api_key(decrypt_api_key(c.api_key_encrypted, c.slug, fernet), api_key)
        ]
        if sharing:
            raise SharedApiKeyError(
                f"this Billingo API key is already the key of company {_slug_list(sharing)}: two companies on one "
                "key share its rate limit and would slow each other's syncs down. Pass --allow-shared-key if they "
                "really are one Billingo account."
            )

    return guard


def check_api_key(api_base_url: str, slug: str, api_key: str) -> str:
    """``GET /organization`` with the key; returns the organization's tax code.

    Raises BillingoApiError (401/402/403...) with a message naming the company, never the key.
    """
    with BillingoClient(api_base_url, api_key, company=slug, max_retries=1, backoff_seconds=0.5) as client:
        organization = client.get_organization()
    return str(organization.get("tax_code") or "?")


def register_company(
    engine: Engine,
    slug: str,
    name: str,
    api_key: str,
    *,
    api_base_url: str,
    verify: bool = True,
    sync_enabled: bool = True,
    allow_shared_key: bool = False,
) -> tuple[Company, str | None]:
    """Validate everything first (slug, name, uniqueness, Fernet key against the stored keys, key
    not another company's, live key), then store in one write."""
    company_store.check_new_company(engine, slug, name)
    fernet = load_fernet()
    guard = _key_guard(fernet, api_key, slug=slug, allow_shared_key=allow_shared_key)
    with engine.connect() as conn:
        guard(conn)
    tax_code = check_api_key(api_base_url, slug, api_key) if verify else None
    company = company_store.add_company(
        engine,
        slug,
        name,
        api_key_encrypted=encrypt_api_key(api_key, fernet),
        api_key_fingerprint=api_key_fingerprint(api_key),
        billingo_sync_enabled=sync_enabled,
        key_checked=verify,
        key_guard=guard,
    )
    return company, tax_code


def replace_api_key(
    engine: Engine,
    slug: str,
    api_key: str,
    *,
    api_base_url: str,
    verify: bool = True,
    allow_shared_key: bool = False,
) -> tuple[Company, str | None]:
    fernet = load_fernet()
    company_store.get_company(engine, slug)
    guard = _key_guard(fernet, api_key, slug=slug, allow_shared_key=allow_shared_key)
    with engine.connect() as conn:
        guard(conn)
    tax_code = check_api_key(api_base_url, slug, api_key) if verify else None
    company = company_store.set_api_key(
        engine,
        slug,
        api_key_encrypted=encrypt_api_key(api_key, fernet),
        api_key_fingerprint=api_key_fingerprint(api_key),
        key_checked=verify,
        key_guard=guard,
    )
    return company, tax_code


@dataclass(frozen=True)
class FernetRotation:
    reencrypted: int
    without_key: int


def rotate_fernet_key(engine: Engine) -> FernetRotation:
    """Re-encrypt every stored API key with the first key of ``BILLINGO_FERNET_KEY``, all in one
    transaction: a token none of the keys opens stops it with that company's name, and nothing is
    changed. Afterwards the old keys can be dropped from the variable."""
    fernet = load_fernet()
    reencrypted, without_key = company_store.reencrypt_api_keys(
        engine, lambda slug, token: reencrypt_api_key(token, slug, fernet)
    )
    return FernetRotation(reencrypted, without_key)


def grant_reader(engine: Engine, slug: str, role: str, password: str | None) -> ReaderGrant:
    """A LOGIN role that reads company ``slug``'s rows only (PostgreSQL row-level security)."""
    if password is not None and not password:
        raise CompanyError("the reader's password is empty (use --no-password for pg_hba peer/cert authentication).")
    return company_store.grant_reader(engine, slug, role, password)


def verify_stored_api_key(engine: Engine, slug: str, *, api_base_url: str) -> str:
    stored = company_store.get_company(engine, slug)
    tax_code = check_api_key(api_base_url, slug, decrypt_api_key(stored.api_key_encrypted or "", slug))
    company_store.mark_key_checked(engine, slug)
    return tax_code
