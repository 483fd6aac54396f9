"""Sync health (the GREEN/YELLOW/RED rules of health.py), the sync_health and sync_metrics views, the CLI.

Warehouse tests run on SQLite and on the real PostgreSQL.
"""

from __future__ import annotations

import datetime as dt

import dagster as dg
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from billingo_pipeline.cli import Context
from billingo_pipeline.cli.health import health_command
from billingo_pipeline.defs.billingo.health import health_report_metadata
from billingo_pipeline.health import (
    ALL_ERRORS,
    GREEN,
    LAST_FAILED,
    LAST_PARTIAL,
    NEVER_SYNCED,
    NO_KEY,
    RED,
    SOME_ERRORS,
    STALE_RED,
    STALE_YELLOW,
    YELLOW,
    company_health,
    errors_level,
    evaluate_health,
    sync_metrics,
)
from billingo_pipeline.warehouse import companies as company_store
from billingo_pipeline.warehouse.schema import sync_log
from billingo_pipeline.warehouse.sync_log import COMPLETED, FAILED, PARTIAL, RUNNING, utcnow


@pytest.mark.parametrize(
    "key, age, status, errors, health, reasons",
    [
        (True, 1.0, COMPLETED, "none", GREEN, ()),
        (True, 23.99, COMPLETED, "none", GREEN, ()),
        (False, 1.0, COMPLETED, "none", RED, (NO_KEY,)),
        (True, None, None, None, RED, (NEVER_SYNCED,)),
        (True, None, FAILED, "none", RED, (NEVER_SYNCED, LAST_FAILED)),
        (True, 48.01, COMPLETED, "none", RED, (STALE_RED,)),
        (True, 48.0, COMPLETED, "none", YELLOW, (STALE_YELLOW,)),
        (True, 24.0, COMPLETED, "none", YELLOW, (STALE_YELLOW,)),
        (True, 2.0, FAILED, "none", RED, (LAST_FAILED,)),
        (True, 2.0, FAILED, "all", RED, (LAST_FAILED, ALL_ERRORS)),
        (True, 2.0, PARTIAL, "some", YELLOW, (LAST_PARTIAL, SOME_ERRORS)),
        (True, 2.0, COMPLETED, "some", YELLOW, (SOME_ERRORS,)),
        (True, 2.0, COMPLETED, "all", RED, (ALL_ERRORS,)),
        (False, 30.0, PARTIAL, "some", RED, (NO_KEY, STALE_YELLOW, LAST_PARTIAL, SOME_ERRORS)),
        (False, None, None, None, RED, (NO_KEY, NEVER_SYNCED)),
    ],
)
def test_health_rules(key, age, status, errors, health, reasons):
    assert evaluate_health(key_configured=key, last_success_age_hours=age, last_sync_status=status, last_sync_errors=errors) == (health, reasons)


@pytest.mark.parametrize(
    "status, processed, failed, level",
    [(None, None, None, None), (COMPLETED, 10, 0, "none"), (COMPLETED, 0, 0, "none"), (PARTIAL, 10, 3, "some"),
     (FAILED, 10, 10, "all"), (FAILED, 0, 0, "none")],
)
def test_errors_level(status, processed, failed, level):
    assert errors_level(status, processed, failed) == level


def _company(engine, slug, *, key=True, enabled=True, active=True):
    return company_store.add_company(
        engine, slug, slug.title(), api_key_encrypted="token" if key else None, api_key_fingerprint="fp" if key else None,
        billingo_sync_enabled=enabled, is_active=active,
    ).id


def _sync(engine, company_id, status, *, started, duration=None, processed=0, failed=0, api_calls=0, fetched=0):
    finished = None if status == RUNNING else started + dt.timedelta(seconds=duration or 60)
    with engine.begin() as conn:
        conn.execute(
            sync_log.insert().values(
                company_id=company_id, run_id=f"run-{company_id}-{started.timestamp()}", trigger="test", status=status,
                started_at=started, finished_at=finished,
                duration_seconds=None if status == RUNNING else float(duration or 60),
                invoices_processed=processed, invoices_failed=failed, api_calls=api_calls, documents_fetched=fetched,
                errors=[],
            )
        )


# (slug, expected health, expected reasons): every rule, and combinations.
EXPECTED = {
    "all-good": (GREEN, ()),
    "no-key": (RED, (NO_KEY,)),
    "never": (RED, (NEVER_SYNCED,)),
    "only-failed": (RED, (NEVER_SYNCED, LAST_FAILED)),
    "stale": (RED, (STALE_RED,)),
    "aging": (YELLOW, (STALE_YELLOW,)),
    "partial": (YELLOW, (LAST_PARTIAL, SOME_ERRORS)),
    "failed-after-success": (RED, (LAST_FAILED,)),
    "all-errors": (RED, (LAST_FAILED, ALL_ERRORS)),
    "running": (GREEN, ()),
}


def _portfolio(engine) -> dt.datetime:
    now = utcnow()
    hours = lambda h: now - dt.timedelta(hours=h)  # noqa: E731
    ids = {slug: _company(engine, slug, key=slug != "no-key") for slug in EXPECTED}
    _company(engine, "disabled", enabled=False)
    _company(engine, "inactive", active=False)
    _sync(engine, ids["all-good"], COMPLETED, started=hours(60), processed=10)
    _sync(engine, ids["all-good"], COMPLETED, started=hours(1.5), processed=10)
    _sync(engine, ids["no-key"], COMPLETED, started=hours(1.5), processed=10)
    _sync(engine, ids["only-failed"], FAILED, started=hours(2))
    _sync(engine, ids["stale"], COMPLETED, started=hours(51), processed=10)
    _sync(engine, ids["aging"], COMPLETED, started=hours(31), processed=10)
    _sync(engine, ids["partial"], PARTIAL, started=hours(3), processed=100, failed=3)
    _sync(engine, ids["failed-after-success"], COMPLETED, started=hours(6), processed=10)
    _sync(engine, ids["failed-after-success"], FAILED, started=hours(2))
    _sync(engine, ids["all-errors"], COMPLETED, started=hours(6), processed=10)
    _sync(engine, ids["all-errors"], FAILED, started=hours(2), processed=10, failed=10)
    _sync(engine, ids["running"], COMPLETED, started=hours(3), processed=10)
    _sync(engine, ids["running"], RUNNING, started=hours(0.1))
    return now


def _as_utc(value):
    if value is None or isinstance(value, dt.datetime):
        return value.astimezone(dt.timezone.utc) if value is not None else None
    return dt.datetime.fromisoformat(value).replace(tzinfo=dt.timezone.utc)  # SQLite: naive UTC text


def test_company_health_and_the_sync_health_view_agree_on_every_rule(engine):
    _portfolio(engine)
    by_function = {h.company_slug: h for h in company_health(engine)}
    with engine.connect() as conn:
        by_view = {row.company_slug: row for row in conn.execute(sa.text("SELECT * FROM sync_health"))}

    assert set(by_function) == set(by_view) == set(EXPECTED)  # disabled and inactive companies have no health
    for slug, (health, reasons) in EXPECTED.items():
        function, view = by_function[slug], by_view[slug]
        assert (function.health, function.reasons) == (health, reasons), slug
        assert (view.health, tuple(view.reasons.split("; ")) if view.reasons else ()) == (health, reasons), slug
        assert bool(view.key_configured) is function.key_configured
        assert (view.last_sync_status, view.last_sync_errors) == (function.last_sync_status, function.last_sync_errors)
        assert (view.last_sync_documents, view.last_sync_failed_documents) == (
            function.last_sync_documents, function.last_sync_failed_documents)
        assert _as_utc(view.last_success_at) == function.last_success_at
        assert _as_utc(view.running_since) == function.running_since
        if function.last_success_age_hours is None:
            assert view.last_success_age_hours is None
        else:
            assert abs(float(view.last_success_age_hours) - function.last_success_age_hours) < 0.01
    assert by_function["running"].running_since is not None and by_function["all-good"].running_since is None
    assert 30 < by_function["aging"].last_success_age_hours < 31


def test_health_report_metadata_for_the_ui(engine):
    _portfolio(engine)
    rows = company_health(engine)
    metadata = health_report_metadata(rows, sync_metrics(engine))
    assert (metadata["green"].value, metadata["yellow"].value, metadata["red"].value) == (2, 2, 6)
    assert metadata["health_level/stale"].value == 2 and metadata["health_level/aging"].value == 1
    # The newest finished sync's duration, per company; none for a company that never finished one.
    for h in rows:
        key = f"sync_duration_seconds/{h.company_slug}"
        if h.last_sync_finished_at is None:
            assert key not in metadata
        else:
            assert metadata[key].value == round((h.last_sync_finished_at - h.last_sync_started_at).total_seconds(), 3)
    assert sum(key.startswith("sync_duration_seconds/") for key in metadata) >= 5
    table = metadata["health"].value
    assert "| stale | RED | yes | COMPLETED |" in table and STALE_RED in table
    assert "COMPLETED (running now)" in table
    assert isinstance(metadata["success_rate_30d"], dg.FloatMetadataValue)


def test_health_command_prints_a_table_and_exits_1_when_a_company_is_red(engine, warehouse_url):
    runner = CliRunner()
    empty = runner.invoke(health_command, [], obj=Context(warehouse_url, "http://unused"))
    assert empty.exit_code == 0 and "no company has Billingo sync enabled" in empty.output

    good = _company(engine, "acme")
    _sync(engine, good, COMPLETED, started=utcnow() - dt.timedelta(hours=2), processed=10)
    ok = runner.invoke(health_command, [], obj=Context(warehouse_url, "http://unused"))
    assert ok.exit_code == 0, ok.output
    assert "acme" in ok.output and "GREEN" in ok.output and "1 companies: 1 GREEN, 0 YELLOW, 0 RED" in ok.output

    _company(engine, "globex", key=False)
    red = runner.invoke(health_command, [], obj=Context(warehouse_url, "http://unused"))
    assert red.exit_code == 1
    assert "globex" in red.output and f"{NO_KEY}; {NEVER_SYNCED}" in red.output
    only_acme = runner.invoke(health_command, ["acme"], obj=Context(warehouse_url, "http://unused"))
    assert only_acme.exit_code == 0 and "globex" not in only_acme.output
    unknown = runner.invoke(health_command, ["acme", "nope"], obj=Context(warehouse_url, "http://unused"))
    assert unknown.exit_code == 2 and "unknown company: nope" in unknown.output


def test_health_command_reports_an_unreadable_warehouse(tmp_path):
    result = CliRunner().invoke(health_command, [], obj=Context("postgresql+psycopg://nobody@127.0.0.1:1/none", "x"))
    assert result.exit_code == 2 and "cannot read the warehouse" in result.output


@pytest.mark.parametrize(
    "url",
    [
        "not a url, pw=hunter2-secret",
        # An unescaped "@" in the password: SQLAlchemy's own error would quote "hunter2@host:5432".
        "postgresql+psycopg://u:pa@hunter2@host:5432/db",
        "postgresql+psycopg://u:pa@hunter2:x@host:5432/db",
    ],
)
def test_health_command_reports_an_unparseable_warehouse_url_without_echoing_it(url):
    # Exit 1 means "a company is RED": a URL SQLAlchemy cannot parse must not end there with a traceback.
    result = CliRunner().invoke(health_command, [], obj=Context(url, "x"))
    assert result.exit_code == 2 and "cannot read the warehouse" in result.output, result.output
    assert "hunter2" not in result.output


def test_sync_metrics_view_figures_are_exact(engine):
    acme, globex = _company(engine, "acme"), _company(engine, "globex")
    day = dt.datetime(2026, 11, 20, 8, tzinfo=dt.timezone.utc)
    for minutes, status, duration, calls, fetched, processed, failed in [
        (0, COMPLETED, 10, 2, 100, 100, 0),
        (60, COMPLETED, 20, 2, 150, 150, 0),
        (120, PARTIAL, 30, 2, 50, 50, 3),
        (180, FAILED, 50, 0, 0, 0, 0),
    ]:
        _sync(engine, acme, status, started=day + dt.timedelta(minutes=minutes), duration=duration, api_calls=calls,
              fetched=fetched, processed=processed, failed=failed)
    _sync(engine, acme, COMPLETED, started=day + dt.timedelta(days=1), duration=7, api_calls=1, fetched=30, processed=30)
    _sync(engine, acme, RUNNING, started=day + dt.timedelta(days=1, hours=1))  # not finished: not measured
    for minutes, duration in [(0, 1), (10, 2), (20, 100)]:
        _sync(engine, globex, COMPLETED, started=day + dt.timedelta(minutes=minutes), duration=duration, api_calls=1,
              fetched=40, processed=40, failed=1)

    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT * FROM sync_metrics ORDER BY company_slug, sync_date")).all()
    got = [
        (r.company_slug, str(r.sync_date), r.syncs, r.successful_syncs, r.failed_syncs, r.success_rate,
         r.median_duration_seconds, r.api_calls, r.documents_fetched, r.invoices_per_api_call,
         r.documents_processed, r.documents_failed, r.error_rate)
        for r in rows
    ]
    assert got == [
        ("acme", "2026-11-20", 4, 3, 1, 0.75, 25.0, 6, 300, 50.0, 300, 3, 0.01),
        ("acme", "2026-11-21", 1, 1, 0, 1.0, 7.0, 1, 30, 30.0, 30, 0, 0.0),
        ("globex", "2026-11-20", 3, 3, 0, 1.0, 2.0, 3, 120, 40.0, 120, 3, 0.025),
    ]

    # The same formulas over a window, for the UI's per-company metadata.
    metrics = sync_metrics(engine, company_id=acme, now=day + dt.timedelta(days=2), window=dt.timedelta(days=30))
    assert (metrics.syncs, metrics.success_rate, metrics.median_duration_seconds, metrics.invoices_per_api_call,
            metrics.error_rate) == (5, 0.8, 20.0, 330 / 7, 3 / 330)
    assert sync_metrics(engine, company_id=globex, now=day + dt.timedelta(days=40)).syncs == 0
