"""Fernet encryption of per-company API keys."""

import pytest
from cryptography.fernet import Fernet

from billingo_pipeline.credentials import (
    CredentialError,
    api_key_fingerprint,
    decrypt_api_key,
    encrypt_api_key,
    load_fernet,
    reencrypt_api_key,
)
from billingo_pipeline.settings import FERNET_KEY_ENV

API_KEY = "3f1c9a52-7d1e-11ee-b962-0242ac120002"


def test_round_trip_and_ciphertext_hides_key(fernet_key):
    token = encrypt_api_key(API_KEY)
    assert API_KEY not in token
    assert decrypt_api_key(token, "acme") == API_KEY


def test_missing_fernet_key_is_a_clear_error(monkeypatch):
    monkeypatch.delenv(FERNET_KEY_ENV, raising=False)
    with pytest.raises(CredentialError, match=f"{FERNET_KEY_ENV} is not set"):
        load_fernet()


def test_malformed_fernet_key_error_does_not_echo_it(monkeypatch):
    monkeypatch.setenv(FERNET_KEY_ENV, "not-a-real-key-but-secret")
    with pytest.raises(CredentialError) as excinfo:
        load_fernet()
    assert "not-a-real-key-but-secret" not in str(excinfo.value)
    assert "entry #1 is not a valid Fernet key" in str(excinfo.value)


def test_wrong_fernet_key_names_company_not_key(fernet_key, monkeypatch):
    token = encrypt_api_key(API_KEY)
    other = Fernet.generate_key().decode()
    monkeypatch.setenv(FERNET_KEY_ENV, other)
    with pytest.raises(CredentialError) as excinfo:
        decrypt_api_key(token, "acme")
    message = str(excinfo.value)
    assert "'acme'" in message and "cannot be decrypted" in message
    assert API_KEY not in message and other not in message and token not in message


def test_rotation_with_multiple_keys(fernet_key, monkeypatch):
    old_token = encrypt_api_key(API_KEY)
    new_key = Fernet.generate_key().decode()
    monkeypatch.setenv(FERNET_KEY_ENV, f"{new_key},{fernet_key}")
    rotated = reencrypt_api_key(old_token, "acme")
    monkeypatch.setenv(FERNET_KEY_ENV, new_key)  # the old key is retired
    assert decrypt_api_key(rotated, "acme") == API_KEY
    with pytest.raises(CredentialError):
        decrypt_api_key(old_token, "acme")


def test_empty_key_and_missing_token_are_refused(fernet_key):
    with pytest.raises(CredentialError, match="empty"):
        encrypt_api_key("   ")
    with pytest.raises(CredentialError, match="no Billingo API key configured"):
        decrypt_api_key("", "acme")


def test_key_is_stored_without_surrounding_whitespace_and_never_with_a_line_break(fernet_key):
    assert decrypt_api_key(encrypt_api_key(f"  {API_KEY}\r\n"), "acme") == API_KEY
    with pytest.raises(CredentialError, match="line break") as excinfo:
        encrypt_api_key(f"{API_KEY}\nsecond line")
    assert API_KEY not in str(excinfo.value)


def test_fingerprint_is_stable_short_and_not_the_key():
    fingerprint = api_key_fingerprint(API_KEY)
    assert fingerprint == api_key_fingerprint(f"  {API_KEY} ")
    assert fingerprint != api_key_fingerprint(API_KEY + "x")
    assert fingerprint.startswith("sha256:") and len(fingerprint) == len("sha256:") + 10
    assert API_KEY[:8] not in fingerprint
