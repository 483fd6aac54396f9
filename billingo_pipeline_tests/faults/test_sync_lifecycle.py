"""An interrupted or dead sync never locks its company, and a live one is never taken over.

A RUNNING sync-log row proves it is alive by its heartbeat. The next sync takes a row over at
once when its Dagster run has ended or its process on this host is gone, else when its heartbeat
is older than the bound; a fresh heartbeat is never taken over, however old the sync. SIGINT and
SIGTERM finalize the row with the reason; after SIGKILL the next sync recovers by itself. All on
SQLite and PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import signal
import socket
import subprocess
import sys

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from billingo_pipeline.cli import main
from billingo_pipeline.settings import WAREHOUSE_URL_ENV

from billingo_pipeline.sync import SyncHeartbeat
from billingo_pipeline.warehouse.schema import sync_log
from billingo_pipeline.warehouse.sync_log import (
    COMPLETED,
    FAILED,
    RUNNING,
    SyncAlreadyRunningError,
    SyncLockLostError,
    start_sync,
    utcnow,
)
from billingo_pipeline_tests.faults.cli_subprocess import cli_environment, start_cli, wait_until

INTERRUPTED = "interrupted (Ctrl-C, SIGTERM, or the Dagster run was terminated) before the sync finished"


def _set(rig, sync_id: int, **values) -> None:
    if not values:
        return
    with rig.engine.begin() as conn:
        conn.execute(sync_log.update().where(sync_log.c.id == sync_id).values(**values))


def _row(rig, run_id: str):
    with rig.engine.connect() as conn:
        return conn.execute(sa.select(sync_log).where(sync_log.c.run_id == run_id)).one()


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_live_sync_is_never_taken_over_however_old(rig):
    held = start_sync(rig.engine, rig.company_id, "run-a", "schedule")
    _set(rig, held, started_at=utcnow() - dt.timedelta(days=3), holder="another-host:1")
    with pytest.raises(SyncAlreadyRunningError, match=r"already being synced by run run-a .*last heartbeat 0 s ago"):
        start_sync(rig.engine, rig.company_id, "run-b", "manual", run_in_progress=lambda run_id: None)
    assert _row(rig, "run-a").status == RUNNING


@pytest.mark.parametrize(
    ("make_dead", "reason"),
    [
        (lambda: ({"heartbeat_at": utcnow() - dt.timedelta(minutes=6)}, None), "abandoned: no heartbeat for 6 min (more than 5 min)"),
        (lambda: ({}, False), "abandoned: its Dagster run run-a is no longer in progress"),
        (lambda: ({"holder": f"{socket.gethostname()}:{_dead_pid()}"}, None), "abandoned: its process "),
    ],
    ids=["stale-heartbeat", "run-ended", "process-gone"],
)
def test_a_dead_sync_is_taken_over_at_once_with_the_reason(rig, make_dead, reason):
    held = start_sync(rig.engine, rig.company_id, "run-a", "schedule")
    values, run_state = make_dead()
    _set(rig, held, **values)
    taken = start_sync(rig.engine, rig.company_id, "run-b", "manual", run_in_progress=lambda run_id: run_state)
    old = _row(rig, "run-a")
    assert old.status == FAILED and old.error_message.startswith(reason) and old.error_message.endswith("taken over by run run-b")
    assert old.finished_at is not None
    assert _row(rig, "run-b").id == taken and _row(rig, "run-b").status == RUNNING


def test_the_heartbeat_is_refreshed_by_a_timer_and_a_lost_lock_stops_the_sync(rig):
    held = start_sync(rig.engine, rig.company_id, "run-a", "schedule")
    _set(rig, held, heartbeat_at=utcnow() - dt.timedelta(minutes=1))
    with SyncHeartbeat(rig.engine, held, interval_seconds=0.02) as beat:
        wait_until(lambda: utcnow() - _row(rig, "run-a").heartbeat_at < dt.timedelta(seconds=30), what="a timer heartbeat")
        beat.beat(documents_fetched=7, force=True)
        assert _row(rig, "run-a").documents_fetched == 7
        _set(rig, held, status=FAILED, error_message="released by hand")  # someone took it over
        with pytest.raises(SyncLockLostError, match="no longer RUNNING"):
            beat.beat(force=True)
    assert _row(rig, "run-a").error_message == "released by hand"  # left as the taker wrote it


def test_a_sync_taken_over_while_it_pages_stops_without_writing_over_the_taker(rig):
    def take_over(request):
        if request.path.endswith("/documents") and request.query.get("page") == "2":
            with rig.engine.begin() as conn:
                conn.execute(sync_log.update().where(sync_log.c.status == RUNNING).values(status=FAILED, error_message="taken"))

    rig.simulator.on_request(take_over)
    outcome = rig.sync(run_id="run-lost")
    assert not outcome.success and "no longer RUNNING" in outcome.error
    row = _row(rig, "run-lost")
    assert (row.status, row.error_message) == (FAILED, "taken")
    rig.simulator.on_request(lambda request: None)


def test_progress_shows_on_the_running_row_page_by_page(rig):
    """While page 3 is being asked for, the RUNNING row already counts the two pages written."""
    seen: list[tuple[str, int, int]] = []

    def progress():
        with rig.engine.connect() as conn:
            return tuple(conn.execute(sa.select(sync_log.c.status, sync_log.c.pages_fetched, sync_log.c.documents_fetched)).one())

    def look(request):
        if request.path.endswith("/documents") and request.query.get("page") == "3":
            wait_until(lambda: progress()[2] == 20, timeout=30, what="pages 1 and 2 on the sync-log row")
            seen.append(progress())

    rig.simulator.on_request(look)
    assert rig.sync().status == COMPLETED
    [(status, pages, documents)] = seen
    assert (status, documents) == (RUNNING, 20) and pages >= 2  # the fetcher may be a page ahead
    assert (rig.last_log().pages_fetched, rig.last_log().documents_fetched) == (3, 30)


def test_unlock_refuses_a_live_sync_and_releases_a_dead_one(rig, monkeypatch):
    monkeypatch.setenv(WAREHOUSE_URL_ENV, rig.warehouse_url)

    def unlock(slug):
        return CliRunner().invoke(main, ["unlock", slug], catch_exceptions=False)

    nothing = unlock(rig.slug)
    assert nothing.exit_code == 0 and "no sync is running; nothing to release" in nothing.stdout
    assert unlock("nosuch").exit_code == 2

    held = start_sync(rig.engine, rig.company_id, "run-a", "schedule")
    _set(rig, held, holder="another-host:1")
    refused = unlock(rig.slug)
    assert refused.exit_code == 1 and refused.stderr.count("\n") == 1
    assert "is being synced by run run-a and is alive (last heartbeat" in refused.stderr
    assert _row(rig, "run-a").status == RUNNING

    _set(rig, held, heartbeat_at=utcnow() - dt.timedelta(minutes=10))
    released = unlock(rig.slug)
    assert released.exit_code == 0 and "released the sync of run run-a" in released.stdout
    row = _row(rig, "run-a")
    assert row.status == FAILED and row.error_message.startswith("abandoned: released by hand (last heartbeat 10 min ago)")
    rig.assert_recovers()


# Three pages of 100 at the CLI's page size, each answered slowly: the signal lands while the sync
# still has pages to ask for (a sync interrupted after its last request finishes and completes).
@pytest.mark.slow  # starts a CLI process
@pytest.mark.parametrize("rig", [250], indirect=True)
@pytest.mark.parametrize("sent", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupted_cli_sync_finalizes_its_row_and_the_next_sync_recovers(rig, tmp_path, sent):
    env = cli_environment(rig.warehouse_url, rig.simulator.base_url, tmp_path / "dagster_home")
    rig.simulator.inject_fault("slow", times=5, delay_seconds=1)
    process = start_cli(env, "sync", rig.slug)
    wait_until(lambda: bool(rig.log_rows()), what="the sync to start")
    process.send_signal(sent)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    [line] = stdout.splitlines()
    assert line.startswith(f"{rig.slug}: FAILED") and INTERRUPTED in line
    assert "Traceback" not in stderr and "interrupted:" in stderr
    row = rig.last_log()
    assert row.status == FAILED and row.error_message.startswith(INTERRUPTED) and row.finished_at is not None
    rig.simulator.clear_faults()  # the slow answers were there for the signal; the next sync recovers at speed
    rig.assert_recovers()


@pytest.mark.slow  # starts a CLI process
@pytest.mark.parametrize("rig", [250], indirect=True)
def test_a_killed_cli_sync_is_taken_over_by_the_next_sync_at_once(rig, tmp_path):
    env = cli_environment(rig.warehouse_url, rig.simulator.base_url, tmp_path / "dagster_home")
    rig.simulator.inject_fault("slow", times=5, delay_seconds=1)
    process = start_cli(env, "sync", rig.slug)
    wait_until(lambda: bool(rig.log_rows()), what="the sync to start")
    process.kill()
    process.wait(timeout=30)
    [killed] = rig.log_rows()
    assert killed.status == RUNNING  # nothing can finalize after SIGKILL
    rig.simulator.clear_faults()
    rig.assert_recovers()
    killed = _row(rig, killed.run_id)
    assert killed.status == FAILED and killed.error_message.startswith(f"abandoned: its process {socket.gethostname()}:{process.pid} is gone")
