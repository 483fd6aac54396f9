"""A long sync shows how far it is: progress lines in the run's event log, the RUNNING sync-log row
as `status` and `health` read it while the sync is paused mid-way, and the CLI's plain progress
lines on stderr (stdout stays one line per company)."""

from __future__ import annotations

import re
import threading

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from billingo_pipeline.cli import main
from billingo_pipeline.resources import BillingoResource
from billingo_pipeline.runner import run_company_syncs
from billingo_pipeline.sync import sync_company
from billingo_pipeline.warehouse.companies import get_company
from billingo_pipeline.warehouse.schema import sync_log
from billingo_pipeline.warehouse.sync_log import COMPLETED, RUNNING, SyncProgress
from billingo_pipeline_tests.conftest import add_simulated_company, write_dagster_home
from billingo_pipeline_tests.faults.cli_subprocess import wait_until

SLUG = "acme-kft"
DOCUMENTS = 50
PAGE_SIZE = 10  # five pages
FAST_RETRIES = {"backoff_seconds": 0.001, "max_backoff_seconds": 0.01}
# Generous bound on how long a paused sync may take to reach its pause: a failure, never a timing.
REACH_PAUSE_SECONDS = 60


@pytest.fixture(autouse=True)
def _not_a_terminal(monkeypatch):
    # What counts as a terminal must come from the test, not from the shell that runs it.
    for name in ("TTY_COMPATIBLE", "FORCE_COLOR", "COLUMNS"):
        monkeypatch.delenv(name, raising=False)


def _progress_lines(instance, run_id: str) -> list[str]:
    return [
        entry.user_message
        for entry in instance.all_logs(run_id)
        if not entry.is_dagster_event and entry.user_message.startswith(f"{SLUG}: page ")
    ]


def test_the_run_log_holds_per_page_progress_with_totals_and_retries(engine, warehouse_url, simulator, fernet_key, instance):
    add_simulated_company(engine, simulator, SLUG, seed="progress", documents=DOCUMENTS)
    simulator.inject_fault("server_error", after_requests=2)  # one page answered 500 once, then retried
    [result] = run_company_syncs(
        [SLUG], warehouse_url=warehouse_url, instance=instance, trigger="test",
        billingo=BillingoResource(base_url=simulator.base_url, page_size=PAGE_SIZE, **FAST_RETRIES),
    )
    assert result.sync_status == COMPLETED, result.error
    lines = _progress_lines(instance, result.run_id)
    # At most a line a second, plus the last page: a five-page sync of milliseconds has 2 to 6.
    assert 2 <= len(lines) <= 6, lines
    assert lines[-1] == f"{SLUG}: page 5/5 · 50 of 50 documents · 1 retry"
    assert all(" of 50 documents" in line and "/5 · " in line for line in lines)
    with engine.connect() as conn:
        row = conn.execute(sa.select(sync_log)).one()
    assert (row.pages_fetched, row.pages_total, row.documents_fetched, row.documents_total) == (5, 5, 50, 50)


def test_status_and_health_show_how_far_a_running_sync_is(engine, warehouse_url, simulator, fernet_key, monkeypatch):
    add_simulated_company(engine, simulator, SLUG, seed="paused", documents=DOCUMENTS)
    paused, release = threading.Event(), threading.Event()

    def pause_before_page_3(request):
        if request.path.endswith("/documents") and request.query.get("page") == "3":
            paused.set()
            release.wait(REACH_PAUSE_SECONDS)

    simulator.on_request(pause_before_page_3)
    company = get_company(engine, SLUG)
    billingo = BillingoResource(base_url=simulator.base_url, page_size=PAGE_SIZE, **FAST_RETRIES)
    outcome: dict = {}

    def sync() -> None:
        outcome["result"] = sync_company(engine, company, run_id="run-paused", trigger="test", open_client=billingo.client_for)

    syncing = threading.Thread(target=sync, daemon=True)
    syncing.start()
    try:
        assert paused.wait(REACH_PAUSE_SECONDS)
        # Pages 1 and 2 are fetched (page 3 waits here); the beat after page 1 is written records
        # both (the fetch runs a page ahead) and the writer then waits for page 3.
        wanted = SyncProgress(SLUG, pages_fetched=2, pages_total=5, documents_fetched=20, documents_total=50)
        wait_until(lambda: _running_progress(engine) == wanted, timeout=REACH_PAUSE_SECONDS, what="pages 1-2 on the row")

        monkeypatch.setenv("BILLINGO_WAREHOUSE_URL", warehouse_url)
        status = CliRunner().invoke(main, ["status"], catch_exceptions=False)
        assert status.exit_code == 0, status.output
        header, row_line, progress_line = status.stdout.splitlines()
        assert row_line.split()[:2] == [SLUG, RUNNING]
        assert progress_line.strip() == "page 2/5 · 20 of 50 documents"

        health = CliRunner().invoke(main, ["health"], catch_exceptions=False)
        assert health.exit_code == 1, health.output  # RED: never synced successfully yet
        assert "running now" in health.stdout.splitlines()[0]
        assert "page 2/5 · 20 of 50 documents" in health.stdout.splitlines()[1]
    finally:
        release.set()
        syncing.join(REACH_PAUSE_SECONDS)
    assert outcome["result"].status == COMPLETED
    finished = CliRunner().invoke(main, ["health"], catch_exceptions=False)
    assert finished.exit_code == 0 and "running now" not in finished.stdout


def _running_progress(engine) -> SyncProgress:
    with engine.connect() as conn:
        row = conn.execute(sa.select(sync_log).where(sync_log.c.status == RUNNING)).one()._mapping
    return SyncProgress.of_row({**row, "company": SLUG})


@pytest.fixture
def cli_sync(engine, warehouse_url, simulator, fernet_key, tmp_path, monkeypatch):
    """`billingo-pipeline sync acme-kft beta-bt` in process: three pages of 100 (the CLI asks for
    Billingo's largest page) and one page; stdout must be exactly one COMPLETED line each."""
    add_simulated_company(engine, simulator, SLUG, seed="cli-progress", documents=250)
    add_simulated_company(engine, simulator, "beta-bt", seed="cli-progress-b", documents=5)
    monkeypatch.setenv("BILLINGO_WAREHOUSE_URL", warehouse_url)
    monkeypatch.setenv("BILLINGO_API_BASE_URL", simulator.base_url)
    monkeypatch.setenv("DAGSTER_HOME", str(write_dagster_home(tmp_path / "dagster_home", in_process=True)))

    def sync():
        synced = CliRunner().invoke(main, ["sync", SLUG, "beta-bt"], catch_exceptions=False)
        assert synced.exit_code == 0, synced.output
        stdout = synced.stdout.splitlines()
        assert sorted(line.split(":")[0] for line in stdout) == ["acme-kft", "beta-bt"]
        assert all(": COMPLETED · " in line for line in stdout) and "page" not in synced.stdout
        return synced

    return sync


def test_the_cli_prints_plain_progress_lines_on_stderr_and_one_line_per_company_on_stdout(cli_sync):
    synced = cli_sync()
    progress = [line for line in synced.stderr.splitlines() if ": page " in line]
    assert [line for line in progress if line.startswith(f"{SLUG}: ")][-1] == f"{SLUG}: page 3/3 · 250 of 250 documents"
    assert "beta-bt: page 1/1 · 5 of 5 documents" in progress
    assert "\x1b[" not in synced.stderr  # plain lines: not a terminal


def test_the_cli_draws_progress_bars_on_stderr_in_a_terminal(cli_sync, monkeypatch):
    monkeypatch.setenv("TTY_COMPATIBLE", "1")  # rich's switch: stdout and stderr are terminals
    monkeypatch.setenv("COLUMNS", "100")
    synced = cli_sync()
    assert "━" in synced.stderr and "\x1b[" in synced.stderr  # bars, drawn
    assert f"{SLUG}: page" not in synced.stderr  # not the plain lines
    drawn = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", synced.stderr)
    assert "3/3 pages · 250 of 250 documents" in drawn and "1/1 pages · 5 of 5 documents" in drawn
