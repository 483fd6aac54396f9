"""The `billingo-pipeline` CLI against the simulator and both warehouse dialects."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet

from billingo_pipeline.credentials import api_key_fingerprint
from billingo_pipeline.partitions import COMPANY_PARTITIONS_NAME
from billingo_pipeline.settings import FERNET_KEY_ENV
from billingo_pipeline.simulator import generate_api_key
from billingo_pipeline.warehouse.schema import companies, sync_log
from .conftest import cli_error_line, in_process_cli, invoke_cli


@pytest.fixture
def cli(warehouse_url, simulator, fernet_key, dagster_home, monkeypatch):
    return in_process_cli(monkeypatch, warehouse_url, simulator.base_url)


@pytest.fixture
def acme_key(simulator):
    key = generate_api_key(101)
    simulator.add_organization(key, name="Acme Kft.", seed=101, document_count=12, tax_code="12345678-2-42")
    return key


def _company_rows(engine):
    with engine.connect() as conn:
        return conn.execute(sa.select(companies)).all()


def test_add_list_and_test_key_never_show_the_key(cli, engine, acme_key):
    added = cli("company", "add", "acme", "--name", "Acme Kft.", input=acme_key + "\n")
    assert added.exit_code == 0, added.output
    assert "key verified (organization tax code 12345678-2-42)" in added.output
    assert "partition 'acme' added" in added.output
    [row] = _company_rows(engine)
    assert row.api_key_encrypted and acme_key not in row.api_key_encrypted
    assert acme_key not in " ".join(str(v) for v in row)

    listed = cli("company", "list")
    assert listed.exit_code == 0 and "configured" in listed.output and row.api_key_fingerprint in listed.output
    tested = cli("company", "test-key", "acme")
    assert tested.exit_code == 0 and "key OK" in tested.output
    for result in (added, listed, tested):
        assert acme_key not in result.output


def test_add_partition_lands_in_the_dagster_instance(cli, acme_key):
    import dagster as dg

    cli("company", "add", "acme", "--name", "Acme", input=acme_key + "\n")
    with dg.DagsterInstance.get() as instance:
        assert instance.get_dynamic_partitions(COMPANY_PARTITIONS_NAME) == ["acme"]


def test_invalid_key_is_one_line_and_stores_nothing(cli, engine, acme_key):
    result = cli("company", "add", "acme", "--name", "Acme", input="wrong-key\n")
    assert result.exit_code == 1
    line = cli_error_line(result)
    assert "HTTP 401" in line and "'acme'" in line and "wrong-key" not in line
    assert _company_rows(engine) == []


def test_missing_or_wrong_fernet_key(cli, engine, acme_key, monkeypatch):
    monkeypatch.delenv(FERNET_KEY_ENV)
    result = cli("company", "add", "acme", "--name", "Acme", input=acme_key + "\n")
    assert result.exit_code == 1 and f"{FERNET_KEY_ENV} is not set" in cli_error_line(result)
    assert _company_rows(engine) == []

    monkeypatch.setenv(FERNET_KEY_ENV, Fernet.generate_key().decode())
    assert cli("company", "add", "acme", "--name", "Acme", input=acme_key + "\n").exit_code == 0
    monkeypatch.setenv(FERNET_KEY_ENV, Fernet.generate_key().decode())
    result = cli("company", "test-key", "acme")
    assert result.exit_code == 1 and "cannot be decrypted" in cli_error_line(result)


@pytest.mark.parametrize(
    "args",
    [("company", "update", "nope", "--name", "x"), ("company", "disable", "nope"), ("company", "test-key", "nope"), ("sync", "nope")],
)
def test_unknown_company_is_one_line(cli, args):
    result = cli(*args)
    assert result.exit_code == 2 and "unknown company 'nope'" in cli_error_line(result)


def test_bad_slug_and_duplicate(cli, acme_key):
    assert "invalid company slug" in cli_error_line(cli("company", "add", "Not OK", "--name", "x", input="k\n"))
    assert cli("company", "add", "acme", "--name", "Acme", input=acme_key + "\n").exit_code == 0
    assert "already exists" in cli_error_line(cli("company", "add", "acme", "--name", "Acme", input=acme_key + "\n"))


def test_key_is_cleaned_before_the_live_check_and_a_broken_one_never_echoed(cli, engine, acme_key, monkeypatch):
    monkeypatch.setenv("BILLINGO_API_KEY", f" {acme_key}\r")  # `$(cat key.txt)` keeps a CRLF file's \r
    added = cli("company", "add", "acme", "--name", "Acme")
    assert added.exit_code == 0, added.output
    [row] = _company_rows(engine)
    assert row.api_key_fingerprint == api_key_fingerprint(acme_key)
    assert cli("company", "test-key", "acme").exit_code == 0

    monkeypatch.setenv("BILLINGO_API_KEY", f"{acme_key}\nsecond line")
    refused = cli("company", "rotate-key", "acme")
    assert refused.exit_code == 1 and "line break" in cli_error_line(refused)
    assert acme_key not in refused.output
    assert _company_rows(engine)[0].api_key_encrypted == row.api_key_encrypted


@pytest.mark.parametrize(
    "url",
    [
        "not a url",
        # An unescaped '@' in the password: SQLAlchemy's or the driver's error quotes the rest of it.
        "postgresql+psycopg://billingo:s3@x:cr3t@127.0.0.1:5432/warehouse",
        "postgresql+psycopg://billingo:s3@cr3t@127.0.0.1:5432/warehouse",
    ],
)
def test_unparseable_warehouse_url_is_one_line_that_does_not_quote_it(url):
    result = invoke_cli(url, "company", "list")
    assert result.exit_code == 1 and "not a valid SQLAlchemy URL" in cli_error_line(result)
    assert "cr3t" not in result.output


def test_rotate_key_validates_first_and_keeps_the_old_key_on_failure(cli, engine, simulator, acme_key):
    cli("company", "add", "acme", "--name", "Acme", input=acme_key + "\n")
    [before] = _company_rows(engine)
    refused = cli("company", "rotate-key", "acme", input="bogus\n")
    assert refused.exit_code == 1 and "HTTP 401" in cli_error_line(refused)
    assert _company_rows(engine)[0].api_key_encrypted == before.api_key_encrypted

    new_key = generate_api_key(102)
    simulator.add_organization(new_key, name="Acme Kft.", seed=102, document_count=3)
    rotated = cli("company", "rotate-key", "acme", input=new_key + "\n")
    assert rotated.exit_code == 0, rotated.output
    [after] = _company_rows(engine)
    assert after.api_key_encrypted != before.api_key_encrypted
    assert after.api_key_fingerprint != before.api_key_fingerprint
    assert cli("company", "test-key", "acme").exit_code == 0


def test_sync_status_and_disable(cli, engine, acme_key):
    cli("company", "add", "acme", "--name", "Acme", input=acme_key + "\n")
    synced = cli("sync", "acme")
    assert synced.exit_code == 0, synced.output
    assert synced.stdout.startswith("acme: COMPLETED")
    status = cli("status")
    assert status.exit_code == 0 and "COMPLETED" in status.output and "acme" in status.output
    with engine.connect() as conn:
        assert conn.execute(sa.select(sync_log.c.invoices_created)).scalar_one() == 12

    assert cli("company", "disable", "acme").exit_code == 0
    refused = cli("sync", "acme")
    assert refused.exit_code == 2 and "BILLINGO_SYNC feature flag off" in cli_error_line(refused)  # nothing synced
    assert "no companies" not in cli("company", "list").output
    nothing = cli("sync", "--all")
    assert nothing.exit_code == 2 and "name one or more companies" in cli_error_line(nothing)


def test_commands_that_run_no_dagster_start_without_importing_it():
    """`status`, `health`, `invoices`, `report`, `company ...` answer in a fraction of a sync's
    start-up: Dagster (about a second to import) is imported by `sync` and partition set-up only."""
    import subprocess
    import sys

    probe = "import sys, billingo_pipeline.cli; print(sorted({m.split('.')[0] for m in sys.modules} & {'dagster', 'dagster_shared'}))"
    completed = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "[]"
