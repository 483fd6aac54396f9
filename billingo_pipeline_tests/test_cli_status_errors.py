"""`billingo-pipeline status` under a PARTIAL sync: which documents failed and why."""

from __future__ import annotations

import sqlalchemy as sa

from billingo_pipeline.warehouse.schema import companies
from billingo_pipeline.warehouse.sync_log import SyncCounts, finish_sync, start_sync
from billingo_pipeline_tests.test_cli import acme_key, cli  # noqa: F401 - fixtures


def _company_id(engine, slug: str) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(companies.c.id).where(companies.c.slug == slug)).scalar_one()


def test_status_lists_a_partial_syncs_failed_documents(cli, engine, acme_key):  # noqa: F811
    cli("company", "add", "acme", "--name", "Acme", input=acme_key + "\n")
    sync_id = start_sync(engine, _company_id(engine, "acme"), "run-partial", "manual")
    errors = [{"document_id": 100 + n, "message": f"unknown currency 'X{n}'"} for n in range(7)]
    status = finish_sync(engine, sync_id, SyncCounts(processed=20, created=13, failed=7), errors)
    assert status == "PARTIAL"

    shown = cli("status", "acme")
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    company_line = next(i for i, line in enumerate(lines) if "PARTIAL" in line)
    assert lines[company_line + 1 : company_line + 7] == [
        *(f"    document {100 + n}: unknown currency 'X{n}'" for n in range(5)),
        "    2 more",
    ]


def test_status_shows_no_document_lines_for_a_completed_sync(cli, engine, acme_key):  # noqa: F811
    cli("company", "add", "acme", "--name", "Acme", input=acme_key + "\n")
    assert cli("sync", "acme").exit_code == 0
    shown = cli("status")
    assert shown.exit_code == 0 and "COMPLETED" in shown.output
    assert "document " not in shown.output and " more" not in shown.output
