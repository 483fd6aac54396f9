"""Keys across companies: one Billingo key per company, one Fernet key for all, rotation of it.

Through the CLI against the simulator, on SQLite and PostgreSQL. Every output is also checked for
key material: no API key, no Fernet key, no stored token.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet

from billingo_pipeline.credentials import api_key_fingerprint, decrypt_api_key, load_fernet
from billingo_pipeline.settings import FERNET_KEY_ENV
from billingo_pipeline.simulator import generate_api_key
from billingo_pipeline.warehouse import companies as company_store
from billingo_pipeline.warehouse.schema import companies
from .conftest import cli_error_line, in_process_cli


@pytest.fixture
def secrets() -> list[str]:
    """Everything that must never appear in output; tests add what they create."""
    return []


@pytest.fixture
def cli(warehouse_url, simulator, fernet_key, secrets, monkeypatch):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    secrets.append(fernet_key)
    return in_process_cli(monkeypatch, warehouse_url, simulator.base_url, never_in_output=secrets)


@pytest.fixture
def organization_key(simulator, secrets):
    def make(seed: int) -> str:
        key = generate_api_key(f"keys:{seed}")
        simulator.add_organization(key, name=f"Org {seed}", seed=seed, document_count=0, tax_code=f"1000000{seed}-2-42")
        secrets.append(key)
        return key

    return make


def _tokens(engine) -> dict[str, str | None]:
    with engine.connect() as conn:
        return dict(conn.execute(sa.select(companies.c.slug, companies.c.api_key_encrypted)).all())


def test_the_same_api_key_for_a_second_company_is_refused_naming_the_first(cli, engine, organization_key):
    key = organization_key(1)
    assert cli("company", "add", "acme", "--name", "Acme", input=key + "\n").exit_code == 0

    refused = cli("company", "add", "globex", "--name", "Globex", input=f"  {key}\n")
    line = cli_error_line(refused, exit_code=1)
    assert "already the key of company 'acme'" in line and "rate limit" in line and "--allow-shared-key" in line
    assert set(_tokens(engine)) == {"acme"}

    allowed = cli("company", "add", "globex", "--name", "Globex", "--allow-shared-key", input=key + "\n")
    assert allowed.exit_code == 0, allowed.output
    with engine.connect() as conn:
        fingerprints = set(conn.execute(sa.select(companies.c.api_key_fingerprint)).scalars())
    assert fingerprints == {api_key_fingerprint(key)}


def test_rotate_key_to_another_companys_key_is_refused_but_its_own_key_again_is_not(cli, engine, organization_key):
    acme_key, globex_key = organization_key(1), organization_key(2)
    cli("company", "add", "acme", "--name", "Acme", input=acme_key + "\n")
    cli("company", "add", "globex", "--name", "Globex", input=globex_key + "\n")
    before = _tokens(engine)

    line = cli_error_line(cli("company", "rotate-key", "globex", input=acme_key + "\n"), exit_code=1)
    assert "already the key of company 'acme'" in line
    assert _tokens(engine) == before

    assert cli("company", "rotate-key", "acme", input=acme_key + "\n").exit_code == 0
    shared = cli("company", "rotate-key", "globex", "--allow-shared-key", input=acme_key + "\n")
    assert shared.exit_code == 0, shared.output
    assert decrypt_api_key(_tokens(engine)["globex"], "globex") == acme_key


def test_a_fingerprint_collision_alone_does_not_refuse_a_key(cli, engine, organization_key):
    """Ten hex digits can collide; the decrypted keys decide, so a collision costs nothing."""
    acme_key, globex_key = organization_key(1), organization_key(2)
    cli("company", "add", "acme", "--name", "Acme", input=acme_key + "\n")
    with engine.begin() as conn:  # as if acme's key happened to share globex's 40-bit fingerprint
        conn.execute(companies.update().values(api_key_fingerprint=api_key_fingerprint(globex_key)))
    added = cli("company", "add", "globex", "--name", "Globex", input=globex_key + "\n")
    assert added.exit_code == 0, added.output


def test_add_with_a_fernet_key_that_cannot_open_the_stored_keys_is_refused(cli, engine, organization_key, fernet_key, monkeypatch, secrets):
    cli("company", "add", "acme", "--name", "Acme", input=organization_key(1) + "\n")
    cli("company", "add", "globex", "--name", "Globex", input=organization_key(2) + "\n")
    before = _tokens(engine)
    other = Fernet.generate_key().decode()
    secrets.append(other)
    monkeypatch.setenv(FERNET_KEY_ENV, other)

    line = cli_error_line(cli("company", "add", "initech", "--name", "Initech", input=organization_key(3) + "\n"), exit_code=1)
    assert f"{FERNET_KEY_ENV} cannot decrypt the stored API keys of 2 of 2 other companies ('acme', 'globex')" in line
    assert _tokens(engine) == before

    line = cli_error_line(cli("company", "rotate-key", "acme", input=organization_key(4) + "\n"), exit_code=1)
    assert "1 of 1 other companies ('globex')" in line
    assert _tokens(engine) == before

    # Mid-rotation ("new,old") opens every stored key: adding is fine, and the new one is under "new".
    monkeypatch.setenv(FERNET_KEY_ENV, f"{other},{fernet_key}")
    initech_key = organization_key(5)
    assert cli("company", "add", "initech", "--name", "Initech", input=initech_key + "\n").exit_code == 0
    assert Fernet(other).decrypt(_tokens(engine)["initech"].encode()).decode() == initech_key


def test_rotate_key_replaces_an_unreadable_key_of_its_own_company(cli, engine, organization_key, monkeypatch):
    """The company being re-keyed is left out of the Fernet check: a lost key is why one re-keys."""
    cli("company", "add", "acme", "--name", "Acme", input=organization_key(1) + "\n")
    with engine.begin() as conn:
        conn.execute(companies.update().values(api_key_encrypted=Fernet(Fernet.generate_key()).encrypt(b"lost").decode()))
    new_key = organization_key(2)
    assert cli("company", "rotate-key", "acme", input=new_key + "\n").exit_code == 0
    assert decrypt_api_key(_tokens(engine)["acme"], "acme") == new_key


def test_rotate_fernet_key_reencrypts_every_company_with_the_first_key(cli, engine, organization_key, fernet_key, monkeypatch, secrets):
    keys = {slug: organization_key(seed) for seed, slug in enumerate(("acme", "globex", "initech"), start=1)}
    for slug, key in keys.items():
        assert cli("company", "add", slug, "--name", slug.title(), input=key + "\n").exit_code == 0
    company_store.add_company(engine, "keyless", "Keyless")
    before = _tokens(engine)
    new = Fernet.generate_key().decode()
    secrets.append(new)
    monkeypatch.setenv(FERNET_KEY_ENV, f"{new},{fernet_key}")

    result = cli("rotate-fernet-key")
    assert result.exit_code == 0, result.output
    assert "re-encrypted the API keys of 3 companies" in result.output and "(1 without a key)" in result.output
    for token in before.values():
        if token:
            assert token not in result.output

    monkeypatch.setenv(FERNET_KEY_ENV, new)  # the old key retired: everything still opens
    after = _tokens(engine)
    assert after["keyless"] is None
    for slug, key in keys.items():
        assert after[slug] != before[slug]
        assert decrypt_api_key(after[slug], slug, load_fernet()) == key
    assert cli("company", "test-key", "globex").exit_code == 0


def test_rotate_fernet_key_failing_half_way_changes_nothing(cli, engine, organization_key, fernet_key, monkeypatch, secrets):
    """'acme' is re-encrypted before 'globex' (slug order) is found unreadable: the transaction
    rolls back, so acme's token is still the old one."""
    for seed, slug in enumerate(("acme", "globex", "initech"), start=1):
        cli("company", "add", slug, "--name", slug.title(), input=organization_key(seed) + "\n")
    stray = Fernet.generate_key().decode()
    secrets.append(stray)
    with engine.begin() as conn:
        conn.execute(
            companies.update()
            .where(companies.c.slug == "globex")
            .values(api_key_encrypted=Fernet(stray).encrypt(organization_key(9).encode()).decode())
        )
    before = _tokens(engine)
    secrets.extend(token for token in before.values() if token)
    new = Fernet.generate_key().decode()
    secrets.append(new)
    monkeypatch.setenv(FERNET_KEY_ENV, f"{new},{fernet_key}")

    line = cli_error_line(cli("rotate-fernet-key"), exit_code=1)
    assert line.startswith("error: nothing re-encrypted: ") and "company 'globex'" in line and "cannot be decrypted" in line
    assert _tokens(engine) == before


@pytest.mark.parametrize("value", ["", "not-a-fernet-key"])
def test_rotate_fernet_key_without_a_usable_fernet_key_is_one_line(cli, engine, organization_key, monkeypatch, value):
    cli("company", "add", "acme", "--name", "Acme", input=organization_key(1) + "\n")
    before = _tokens(engine)
    monkeypatch.setenv(FERNET_KEY_ENV, value)
    line = cli_error_line(cli("rotate-fernet-key"), exit_code=1)
    assert FERNET_KEY_ENV in line and (value == "" or value not in line)
    assert _tokens(engine) == before
