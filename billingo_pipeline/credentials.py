"""Per-company Billingo API keys, Fernet-encrypted at rest.

The Fernet key comes from the environment only (``BILLINGO_FERNET_KEY``). It may hold several
comma-separated keys: the first encrypts, all of them decrypt (``MultiFernet``), so the key can be
rotated without a flag day. No function here ever puts a plaintext key into an exception message.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from .settings import FERNET_KEY_ENV


class CredentialError(Exception):
    """A key is unusable, or cannot be encrypted or decrypted. The message never contains key material."""


def generate_fernet_key() -> str:
    return Fernet.generate_key().decode("ascii")


def load_fernet(environ: Mapping[str, str] | None = None) -> MultiFernet:
    environ = os.environ if environ is None else environ
    raw = (environ.get(FERNET_KEY_ENV) or "").strip()
    if not raw:
        raise CredentialError(
            f"{FERNET_KEY_ENV} is not set: it must hold the Fernet key that encrypts company API keys "
            "(generate one with `billingo-pipeline generate-fernet-key`)."
        )
    fernets = []
    for position, part in enumerate(p.strip() for p in raw.split(",")):
        try:
            fernets.append(Fernet(part))
        except (ValueError, TypeError):
            # The value itself must not appear in the message: it is the secret.
            raise CredentialError(
                f"{FERNET_KEY_ENV} entry #{position + 1} is not a valid Fernet key "
                "(expected 32 url-safe base64-encoded bytes)."
            ) from None
    return MultiFernet(fernets)


def clean_api_key(api_key: str) -> str:
    """The key as it is checked, stored and sent: without surrounding whitespace (a pasted or
    file-read key often ends in a line break).

    A key that still cannot be an HTTP header value is refused here, in words of our own:
    ``requests`` would refuse it too, but with the whole value in its exception text.
    """
    api_key = (api_key or "").strip()
    if not api_key:
        raise CredentialError("the API key is empty.")
    if not (api_key.isascii() and api_key.isprintable()):
        raise CredentialError("the API key contains a line break, a control character or a non-ASCII character.")
    return api_key


def encrypt_api_key(api_key: str, fernet: MultiFernet | None = None) -> str:
    return (fernet or load_fernet()).encrypt(clean_api_key(api_key).encode("utf-8")).decode("ascii")


def decrypt_api_key(token: str, company_slug: str, fernet: MultiFernet | None = None) -> str:
    if not token:
        raise CredentialError(f"company '{company_slug}' has no Billingo API key configured.")
    try:
        return (fernet or load_fernet()).decrypt(token.encode("ascii")).decode("utf-8")
    except InvalidToken:
        raise CredentialError(
            f"the stored API key of company '{company_slug}' cannot be decrypted with "
            f"{FERNET_KEY_ENV}: wrong or rotated-out Fernet key."
        ) from None


def reencrypt_api_key(token: str, company_slug: str, fernet: MultiFernet | None = None) -> str:
    """Re-encrypt a stored token under the primary Fernet key (after adding a new key in front)."""
    fernet = fernet or load_fernet()
    decrypt_api_key(token, company_slug, fernet)  # clear error for an undecryptable token
    return fernet.rotate(token.encode("ascii")).decode("ascii")


def can_decrypt(token: str, fernet: MultiFernet) -> bool:
    """Whether one of the configured Fernet keys opens ``token`` (the plaintext is not kept)."""
    try:
        fernet.decrypt(token.encode("ascii"))
    except (InvalidToken, UnicodeEncodeError):
        return False
    return True


def same_api_key(first: str, second: str) -> bool:
    """Exact comparison of two plaintext keys, in constant time (no early exit that tells how much of it matched)."""
    return hmac.compare_digest(first.strip().encode("utf-8"), second.strip().encode("utf-8"))


def api_key_fingerprint(api_key: str) -> str:
    """A short, non-reversible tag that tells two keys apart in listings without revealing either.

    Ten hex digits are 40 bits: equal keys always have equal fingerprints, and two different keys
    share one with odds of about N² / 2⁴¹ among N keys (one in ten million for 500 companies).
    That is good enough to find the candidates for "is this key already in use", not to decide it:
    a match is confirmed on the decrypted keys (``same_api_key``), so a chance collision never
    refuses a key. Billingo keys are random UUIDs, so the tag cannot be brute-forced back.
    """
    return "sha256:" + hashlib.sha256(api_key.strip().encode("utf-8")).hexdigest()[:10]
