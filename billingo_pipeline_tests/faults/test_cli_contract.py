"""Exit codes and output a cron wrapper can trust, on SQLite and PostgreSQL.

`sync`: 0 every company COMPLETED, 3 some PARTIAL, 1 some FAILED or not started, 2 nothing synced
(bad input), one line per company (Dagster's log only with --verbose). `status` and `health`
refuse unknown companies with exit 2.
"""

from __future__ import annotations

import pytest

from billingo_pipeline.admin import register_company
from billingo_pipeline.cli import sync_exit_code
from billingo_pipeline.settings import SYNC_STALE_AFTER_ENV
from billingo_pipeline.simulator import generate_api_key
from billingo_pipeline.warehouse.sync_log import COMPLETED, FAILED, PARTIAL, start_sync
from billingo_pipeline_tests.faults.cli_subprocess import without_progress




def test_exit_code_rules():
    assert sync_exit_code([COMPLETED, COMPLETED]) == 0
    assert sync_exit_code([COMPLETED, PARTIAL]) == 3
    assert sync_exit_code([PARTIAL, FAILED]) == 1
    assert sync_exit_code([COMPLETED, None]) == 1  # not started: refused, or the run died first


def test_sync_exit_codes_and_one_line_per_company(rig, cli):
    second_key = generate_api_key("globex")
    rig.simulator.add_organization(second_key, name="Globex", seed="globex", document_count=5)
    globex, _ = register_company(rig.engine, "globex", "Globex", second_key, api_base_url=rig.simulator.base_url)

    both = cli("sync", "acme", "globex")
    assert both.exit_code == 0 and without_progress(both.stderr) == "" and "acme: page 1/1 · 30 of 30 documents\n" in both.stderr
    assert [line.split(" · ")[0] for line in both.stdout.splitlines()] == ["acme: COMPLETED", "globex: COMPLETED"]
    assert "30 created, 0 updated, 0 unchanged, 0 failed" in both.stdout.splitlines()[0]

    rig.simulator.corrupt_document(rig.api_key, max(rig.source()), "gross_total", "12.700,00 Ft")
    partial = cli("sync", "acme", "globex")
    assert partial.exit_code == 3, partial.output
    first = partial.stdout.splitlines()[0]
    assert first.startswith("acme: PARTIAL · 0 created, 0 updated, 0 unchanged, 1 failed, 2 API calls")  # incremental
    assert first.endswith(f"first failed document {max(rig.source())}: gross_total: '12.700,00 Ft' is not a number")

    start_sync(rig.engine, globex.id, "someone-else", "schedule")  # globex is busy elsewhere
    busy = cli("sync", "acme", "globex")
    assert busy.exit_code == 1
    lines = busy.stdout.splitlines()
    assert len(lines) == 2 and lines[1].startswith("globex: NOT STARTED")
    assert "already being synced by run someone-else" in lines[1]
    assert "Traceback" not in busy.output and "dagster" not in busy.stdout.lower().replace("dagster run", "")


def test_every_document_failing_is_failed_with_a_message_and_exit_1(rig, cli):
    for document_id in rig.source():
        rig.simulator.corrupt_document(rig.api_key, document_id, "invoice_date", "tomorrow")
    result = cli("sync", "acme")
    assert result.exit_code == 1
    assert result.stdout.startswith("acme: FAILED") and "all 30 document(s) failed; first: document " in result.stdout
    assert rig.last_log().error_message.startswith("all 30 document(s) failed")


@pytest.mark.parametrize(
    "args", [("sync", "nosuch"), ("status", "nosuch"), ("health", "nosuch"), ("unlock", "nosuch")]
)
def test_unknown_companies_are_errors(cli, args):
    result = cli(*args)
    assert result.exit_code == 2 and result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("error: unknown company") and "nosuch" in line


def test_bad_settings_are_refused_before_anything_runs(rig, cli, monkeypatch):
    monkeypatch.setenv(SYNC_STALE_AFTER_ENV, "soon")
    result = cli("sync", "acme")
    assert result.exit_code == 2 and f"{SYNC_STALE_AFTER_ENV} must be a number of seconds" in result.stderr
    assert rig.log_rows() == []
