"""After `make demo`, the CLI in the checkout sees the demo's state with nothing exported; a missing
SQLite warehouse is an error, never an empty file; a sync without a Dagster home says where its
run went (on stderr: stdout stays one line per company)."""

from __future__ import annotations

import csv
import io
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from billingo_pipeline.cli import main
from billingo_pipeline.settings import API_BASE_URL_ENV, WAREHOUSE_URL_ENV
from billingo_pipeline_tests.faults.cli_subprocess import without_progress

BIN = Path(sys.executable).parent
DEMO_COMPANIES = {"acme-kft", "duna-trade", "balaton-bistro"}
NO_DAGSTER_HOME_NOTE = (
    "note: DAGSTER_HOME is not set, so this sync runs on a temporary Dagster instance and its run will not "
    "appear in the Dagster UI; set DAGSTER_HOME (`make demo` writes it to .env) to keep it.\n"
)


def _clean_env(home: Path, **extra: str) -> dict[str, str]:
    """No BILLINGO_* or DAGSTER_HOME: what a new shell in the checkout has."""
    return {"PATH": str(BIN), "HOME": str(home), **extra}


def _run(args: list[str], cwd: Path, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        args, cwd=cwd, env=_clean_env(cwd, **extra), capture_output=True, text=True, timeout=300,
        stdin=subprocess.DEVNULL,
    )


def _demo(checkout: Path) -> subprocess.CompletedProcess:
    completed = _run([sys.executable, "-m", "billingo_pipeline.demo"], checkout)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return completed


def _cli(checkout: Path, *args: str, **extra: str) -> subprocess.CompletedProcess:
    return _run([str(BIN / "billingo-pipeline"), *args], checkout, **extra)


def _log_lines(output: str) -> dict[str, list[str]]:
    table = output.split("Sync log (this demo run):")[1].split("\n\n")[0].splitlines()[1:]
    rows = [line.split() for line in table if line.strip()]
    # Skip the header and the "  slug: document …" error lines under the table.
    return {row[0]: row for row in rows if row[0] != "company" and not row[0].endswith(":")}


def _modes(output: str) -> dict[str, str]:
    lines = output.split("Sync modes:\n")[1].split("\n\n")[0].splitlines()
    return dict(line.strip().split(": ", 1) for line in lines)


def _first_column(stdout: str) -> set[str]:
    return {line.split()[0] for line in stdout.splitlines() if line.strip()}


@pytest.mark.slow  # starts a CLI process
def test_the_demo_syncs_resyncs_incrementally_and_the_cli_in_the_checkout_sees_its_companies(tmp_path):
    """SQLite by nature: the demo is the embedded set-up. The first run sweeps every company in
    full; the second (a fresh simulator with the same history, stamped older than the cursor minus
    the overlap) fetches only what was modified since: the broken document, edited as the
    simulator starts, which fails again (PARTIAL). A third run finds a .env it did not write and
    leaves it alone."""
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    demo = _demo(checkout)
    first = demo.stdout
    rows = _log_lines(first)
    assert set(rows) == {"acme-kft", "duna-trade", "balaton-bistro"}
    assert rows["balaton-bistro"][1] == "PARTIAL" and rows["acme-kft"][1] == rows["duna-trade"][1] == "COMPLETED"
    assert "balaton-bistro: document" in first and "is not a number" in first
    # columns: company status date time seconds processed created updated skipped failed fetched api_calls
    # api calls: Billingo's clock, then one list page per 100 documents.
    assert rows["acme-kft"][5:12] == ["240", "240", "0", "0", "0", "240", "4"]
    assert rows["duna-trade"][5:12] == ["130", "130", "0", "0", "0", "130", "3"]
    assert rows["balaton-bistro"][5:12] == ["60", "59", "0", "0", "1", "60", "2"]
    assert _modes(first) == {"acme-kft": "full: 240 fetched", "duna-trade": "full: 130 fetched",
                             "balaton-bistro": "full: 60 fetched"}

    env_file = checkout / ".env"
    assert f"wrote {env_file} (" in demo.stdout
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    key = (checkout / ".demo" / "fernet.key").read_text().strip()
    assert key in env_file.read_text() and key not in demo.stdout + demo.stderr

    health = _cli(checkout, "health")
    assert health.returncode == 0, health.stderr
    assert DEMO_COMPANIES <= _first_column(health.stdout)
    assert "3 companies: 2 GREEN, 1 YELLOW, 0 RED" in health.stdout

    status = _cli(checkout, "status")
    assert status.returncode == 0, status.stderr
    assert {"company", *DEMO_COMPANIES} <= _first_column(status.stdout)
    assert "    document 30000030: gross_total:" in status.stdout  # the demo's PARTIAL company says why

    invoices = _cli(checkout, "invoices", "--company", "acme-kft", "--format", "csv")
    assert invoices.returncode == 0, invoices.stderr
    rows = list(csv.DictReader(io.StringIO(invoices.stdout)))
    # acme-kft's documents are numbered 1000xxxx by the simulator (duna-trade 2000xxxx, ...).
    assert rows and all(row["document_id"].startswith("1000") for row in rows)
    assert not (checkout / "billingo_warehouse.db").exists()

    # A variable set in the environment wins over the .env: this one names a file that is not there.
    elsewhere = checkout / "elsewhere.db"
    overridden = _cli(checkout, "status", **{WAREHOUSE_URL_ENV: f"sqlite:///{elsewhere}"})
    assert overridden.returncode == 2 and f"no warehouse at {elsewhere}" in overridden.stderr
    assert not elsewhere.exists()

    # The next demo run rewrites its own .env (same settings); the CLI still sees the companies.
    before = env_file.read_text()
    second = _demo(checkout).stdout
    assert env_file.read_text() == before and stat.S_IMODE(env_file.stat().st_mode) == 0o600
    rows = _log_lines(second)
    assert rows["acme-kft"][1] == rows["duna-trade"][1] == "COMPLETED" and rows["balaton-bistro"][1] == "PARTIAL"
    # The clock, then one (empty or one-document) page.
    assert rows["acme-kft"][5:12] == ["0", "0", "0", "0", "0", "0", "2"]
    assert rows["duna-trade"][5:12] == ["0", "0", "0", "0", "0", "0", "2"]
    assert rows["balaton-bistro"][5:12] == ["1", "0", "0", "0", "1", "1", "2"]
    assert "balaton-bistro: document" in second and "is not a number" in second
    modes = _modes(second)
    assert {slug: text.split(" UTC: ")[1] for slug, text in modes.items()} == {
        "acme-kft": "0 fetched", "duna-trade": "0 fetched", "balaton-bistro": "1 fetched"}
    assert all(text.startswith("incremental since ") for text in modes.values()), modes
    assert first.split("Warehouse summary:")[1].split("State kept")[0] == second.split("Warehouse summary:")[1].split("State kept")[0]
    assert (checkout / ".demo" / "dagster_home").is_dir() and (checkout / ".demo" / "warehouse.db").is_file()

    # A .env the demo did not write is left as it is, and the demo says so.
    own = f"{API_BASE_URL_ENV}=https://example.invalid/v3\n"
    env_file.write_text(own)
    third = _demo(checkout)
    assert env_file.read_text() == own
    assert f"note: {env_file} exists and was not written by the demo, so it was left as it is" in third.stdout
    assert "move that file away and run `make demo` again" in third.stdout
    assert key not in third.stdout + third.stderr
    # The CLI reads that .env (it names no warehouse), so it falls back to the default file: missing.
    health = _cli(checkout, "health")
    assert health.returncode == 2 and "no warehouse at" in health.stderr
    assert not (checkout / "billingo_warehouse.db").exists()


@pytest.mark.parametrize(
    "args",
    [
        ("health",),
        ("status",),
        ("invoices", "--company", "acme-kft"),
        ("report", "aging-by-partner", "--company", "acme-kft"),
        ("company", "list"),
        ("sync", "acme-kft"),
        ("unlock", "acme-kft"),
    ],
)
def test_a_missing_sqlite_warehouse_is_exit_2_and_no_file(tmp_path, args):
    missing = tmp_path / "nowhere" / "warehouse.db"
    result = CliRunner().invoke(main, ["--warehouse-url", f"sqlite:///{missing}", *args])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"error: no warehouse at {missing} (the SQLite file does not exist). Run `make demo`")
    assert "`billingo-pipeline company add SLUG --name NAME`" in result.stderr
    assert result.stdout == ""
    assert not missing.exists() and not missing.parent.exists()


def test_company_add_creates_a_missing_sqlite_warehouse(tmp_path, fernet_key):
    created = tmp_path / "new" / "warehouse.db"
    url = f"sqlite:///{created}"
    add = CliRunner().invoke(main, ["--warehouse-url", url, "company", "add", "acme", "--name", "ACME Kft.",
                                    "--api-key", "k" * 40, "--no-verify"])
    assert add.exit_code == 0, add.output
    assert created.is_file()
    listed = CliRunner().invoke(main, ["--warehouse-url", url, "company", "list"])
    assert listed.exit_code == 0 and _first_column(listed.stdout) == {"slug", "acme"}


def test_a_sync_without_dagster_home_says_where_its_run_went(rig, monkeypatch):
    monkeypatch.setenv(WAREHOUSE_URL_ENV, rig.warehouse_url)
    monkeypatch.setenv(API_BASE_URL_ENV, rig.simulator.base_url)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    result = CliRunner().invoke(main, ["sync", "acme"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert [line.split(" · ")[0] for line in result.stdout.splitlines()] == ["acme: COMPLETED"]
    assert without_progress(result.stderr) == NO_DAGSTER_HOME_NOTE


def test_a_sync_with_dagster_home_prints_no_note(cli):
    result = cli("sync", "acme")
    assert result.exit_code == 0 and without_progress(result.stderr) == ""
