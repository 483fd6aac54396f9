"""Company administration shared by the CLI and the demo: keys are checked live, then stored encrypted."""

from __future__ import annotations

from sqlalchemy.engine import Engine

from .billingo_client import BillingoClient
from .credentials import api_key_fingerprint, decrypt_api_key, encrypt_api_key, load_fernet
from .warehouse import companies as company_store
from .warehouse.companies import Company


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
) -> tuple[Company, str | None]:
    """Validate everything first (slug, name, uniqueness, Fernet key, live key), then store in one write."""
    company_store.check_new_company(engine, slug, name)
    fernet = load_fernet()
    tax_code = check_api_key(api_base_url, slug, api_key) if verify else None
    company = company_store.add_company(
        engine,
        slug,
        name,
        api_key_encrypted=encrypt_api_key(api_key, fernet),
        api_key_fingerprint=api_key_fingerprint(api_key),
        billingo_sync_enabled=sync_enabled,
        key_checked=verify,
    )
    return company, tax_code


def replace_api_key(engine: Engine, slug: str, api_key: str, *, api_base_url: str, verify: bool = True) -> tuple[Company, str | None]:
    fernet = load_fernet()
    company_store.get_company(engine, slug)
    tax_code = check_api_key(api_base_url, slug, api_key) if verify else None
    company = company_store.set_api_key(
        engine,
        slug,
        api_key_encrypted=encrypt_api_key(api_key, fernet),
        api_key_fingerprint=api_key_fingerprint(api_key),
        key_checked=verify,
    )
    return company, tax_code


def verify_stored_api_key(engine: Engine, slug: str, *, api_base_url: str) -> str:
    stored = company_store.get_company(engine, slug)
    tax_code = check_api_key(api_base_url, slug, decrypt_api_key(stored.api_key_encrypted or "", slug))
    company_store.mark_key_checked(engine, slug)
    return tax_code
