"""Sync health per company (GREEN / YELLOW / RED, with the reasons) and the sync's key metrics.

The rules, over the companies the pipeline is meant to sync
(BILLINGO_SYNC flag on and active; a disabled company has no health to watch):

============  =====================  ==========================  ==================
indicator     GREEN                  YELLOW                      RED
============  =====================  ==========================  ==================
API key       configured                                         not configured
sync age      < 24 h                 24-48 h                     > 48 h, or never
last status   COMPLETED              PARTIAL                     FAILED
errors        none                   some                        all
============  =====================  ==========================  ==================

- *sync age* is the age of the last *successful* sync (COMPLETED or PARTIAL), measured from its
  end (when its data had landed); a company that never synced successfully is RED.
- *last status* and *errors* come from the newest finished sync (a RUNNING one is shown, not
  judged): errors are its failed documents out of its processed ones.
- RED when any RED condition holds, else YELLOW when any YELLOW one does, else GREEN. Every
  condition that holds is listed as a reason, RED ones first.

``company_health`` is the single source of the CLI table (``cli/health.py``) and of the Dagster UI
metadata (``defs/billingo/health.py``); this module holds the rules and their SQL only. The
warehouse view ``sync_health`` (migration 0003) states the same rules in SQL for analysts; a test
keeps the two equal on SQLite and PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from .warehouse.schema import companies, sync_log
from .warehouse.sync_log import COMPLETED, FAILED, PARTIAL, RUNNING, SyncProgress, utcnow

GREEN, YELLOW, RED = "GREEN", "YELLOW", "RED"
HEALTH_LEVELS = {GREEN: 0, YELLOW: 1, RED: 2}
YELLOW_AFTER_HOURS = 24
RED_AFTER_HOURS = 48
SUCCESSFUL = (COMPLETED, PARTIAL)

# Reason texts, identical to the ones the sync_health view writes.
NO_KEY = "no API key configured"
NEVER_SYNCED = "never synced successfully"
STALE_RED = "last successful sync more than 48 h ago"
LAST_FAILED = "last sync FAILED"
ALL_ERRORS = "every document failed in the last sync"
STALE_YELLOW = "last successful sync 24-48 h ago"
LAST_PARTIAL = "last sync PARTIAL"
SOME_ERRORS = "some documents failed in the last sync"

METRICS_WINDOW = dt.timedelta(days=30)


@dataclass(frozen=True)
class CompanyHealth:
    company_id: int
    company_slug: str
    company_name: str
    key_configured: bool
    health: str
    reasons: tuple[str, ...]
    last_sync_status: str | None
    last_sync_started_at: dt.datetime | None
    last_sync_finished_at: dt.datetime | None
    last_success_at: dt.datetime | None
    last_success_age_hours: float | None
    last_sync_documents: int | None
    last_sync_failed_documents: int | None
    last_sync_errors: str | None  # none | some | all (None: never finished a sync)
    last_sync_error_message: str | None
    running_since: dt.datetime | None
    running_progress: SyncProgress | None = None

    @property
    def level(self) -> int:
        return HEALTH_LEVELS[self.health]


def errors_level(status: str | None, processed: int | None, failed: int | None) -> str | None:
    if status is None:
        return None
    if not failed:
        return "none"
    return "all" if failed >= (processed or 0) else "some"


def evaluate_health(
    *, key_configured: bool, last_success_age_hours: float | None, last_sync_status: str | None, last_sync_errors: str | None
) -> tuple[str, tuple[str, ...]]:
    """The rules of this module's table: (GREEN/YELLOW/RED, every reason that holds, RED ones first)."""
    age = last_success_age_hours
    red = [
        reason
        for holds, reason in (
            (not key_configured, NO_KEY),
            (age is None, NEVER_SYNCED),
            (age is not None and age > RED_AFTER_HOURS, STALE_RED),
            (last_sync_status == FAILED, LAST_FAILED),
            (last_sync_errors == "all", ALL_ERRORS),
        )
        if holds
    ]
    yellow = [
        reason
        for holds, reason in (
            (age is not None and YELLOW_AFTER_HOURS <= age <= RED_AFTER_HOURS, STALE_YELLOW),
            (last_sync_status == PARTIAL, LAST_PARTIAL),
            (last_sync_errors == "some", SOME_ERRORS),
        )
        if holds
    ]
    health = RED if red else YELLOW if yellow else GREEN
    return health, tuple(red + yellow)


def _facts_query(slugs: Sequence[str] | None) -> sa.Select:
    # For some companies, their sync-log rows alone are ranked and grouped, not every company's
    # history (a step asks for one company after each sync).
    of_companies = (
        (sync_log.c.company_id.in_(sa.select(companies.c.id).where(companies.c.slug.in_(list(slugs)))),)
        if slugs is not None
        else ()
    )
    finished = (
        sa.select(
            sync_log.c.company_id,
            sync_log.c.status,
            sync_log.c.started_at,
            sync_log.c.finished_at,
            sync_log.c.invoices_processed,
            sync_log.c.invoices_failed,
            sync_log.c.error_message,
            sa.func.row_number()
            .over(partition_by=sync_log.c.company_id, order_by=(sync_log.c.started_at.desc(), sync_log.c.id.desc()))
            .label("recency"),
        )
        .where(sync_log.c.status != RUNNING, *of_companies)
        .subquery("finished")
    )
    last_success = (
        sa.select(sync_log.c.company_id, sa.func.max(sync_log.c.finished_at).label("finished_at"))
        .where(sync_log.c.status.in_(SUCCESSFUL), *of_companies)
        .group_by(sync_log.c.company_id)
        .subquery("last_success")
    )
    # One RUNNING row a company at most (the database enforces it): its progress as it stands.
    running = (
        sa.select(
            sync_log.c.company_id, sync_log.c.started_at, sync_log.c.pages_fetched, sync_log.c.pages_total,
            sync_log.c.documents_fetched, sync_log.c.documents_total,
        )
        .where(sync_log.c.status == RUNNING, *of_companies)
        .subquery("running")
    )
    query = (
        sa.select(
            companies.c.id,
            companies.c.slug,
            companies.c.name,
            companies.c.api_key_encrypted.is_not(None).label("key_configured"),
            finished.c.status,
            finished.c.started_at,
            finished.c.finished_at,
            finished.c.invoices_processed,
            finished.c.invoices_failed,
            finished.c.error_message,
            last_success.c.finished_at.label("last_success_at"),
            running.c.started_at.label("running_since"),
            running.c.pages_fetched.label("running_pages_fetched"),
            running.c.pages_total.label("running_pages_total"),
            running.c.documents_fetched.label("running_documents_fetched"),
            running.c.documents_total.label("running_documents_total"),
        )
        .select_from(
            companies.outerjoin(finished, sa.and_(finished.c.company_id == companies.c.id, finished.c.recency == 1))
            .outerjoin(last_success, last_success.c.company_id == companies.c.id)
            .outerjoin(running, running.c.company_id == companies.c.id)
        )
        .where(companies.c.billingo_sync_enabled.is_(True), companies.c.is_active.is_(True))
        .order_by(companies.c.slug)
    )
    if slugs is not None:
        query = query.where(companies.c.slug.in_(list(slugs)))
    return query


def _hours(delta: dt.timedelta) -> float:
    return delta.total_seconds() / 3600


def company_health(engine: Engine, *, now: dt.datetime | None = None, slugs: Sequence[str] | None = None) -> list[CompanyHealth]:
    """Health of every company with sync enabled (or of ``slugs``), ordered by slug."""
    now = now or utcnow()
    with engine.connect() as conn:
        rows = conn.execute(_facts_query(slugs)).all()
    result = []
    for row in rows:
        age = _hours(now - row.last_success_at) if row.last_success_at is not None else None
        errors = errors_level(row.status, row.invoices_processed, row.invoices_failed)
        health, reasons = evaluate_health(
            key_configured=bool(row.key_configured), last_success_age_hours=age, last_sync_status=row.status, last_sync_errors=errors
        )
        result.append(
            CompanyHealth(
                company_id=row.id,
                company_slug=row.slug,
                company_name=row.name,
                key_configured=bool(row.key_configured),
                health=health,
                reasons=reasons,
                last_sync_status=row.status,
                last_sync_started_at=row.started_at,
                last_sync_finished_at=row.finished_at,
                last_success_at=row.last_success_at,
                last_success_age_hours=age,
                last_sync_documents=row.invoices_processed,
                last_sync_failed_documents=row.invoices_failed,
                last_sync_errors=errors,
                last_sync_error_message=row.error_message,
                running_since=row.running_since,
                running_progress=None if row.running_since is None else SyncProgress(
                    company=row.slug, pages_fetched=row.running_pages_fetched or 0,
                    pages_total=row.running_pages_total, documents_fetched=row.running_documents_fetched or 0,
                    documents_total=row.running_documents_total,
                ),
            )
        )
    return result


@dataclass(frozen=True)
class SyncMetrics:
    """The sync's key metrics over a window of finished syncs (None: nothing to measure)."""

    syncs: int
    success_rate: float | None
    median_duration_seconds: float | None
    invoices_per_api_call: float | None
    error_rate: float | None


def sync_metrics(
    engine: Engine, *, company_id: int | None = None, now: dt.datetime | None = None, window: dt.timedelta = METRICS_WINDOW
) -> SyncMetrics:
    """Success rate, median duration, invoices per API call and error rate of the finished syncs
    started in the last ``window`` (of one company, or of all). The same formulas as the
    ``sync_metrics`` view, which gives them per company and day."""
    now = now or utcnow()
    query = sa.select(
        sync_log.c.status,
        sync_log.c.duration_seconds,
        sync_log.c.api_calls,
        sync_log.c.documents_fetched,
        sync_log.c.invoices_processed,
        sync_log.c.invoices_failed,
    ).where(sync_log.c.status != RUNNING, sync_log.c.started_at >= now - window)
    if company_id is not None:
        query = query.where(sync_log.c.company_id == company_id)
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    if not rows:
        return SyncMetrics(0, None, None, None, None)
    durations = [r.duration_seconds for r in rows if r.duration_seconds is not None]
    api_calls = sum(r.api_calls for r in rows)
    processed = sum(r.invoices_processed for r in rows)
    return SyncMetrics(
        syncs=len(rows),
        success_rate=sum(r.status in SUCCESSFUL for r in rows) / len(rows),
        median_duration_seconds=float(statistics.median(durations)) if durations else None,
        invoices_per_api_call=sum(r.documents_fetched for r in rows) / api_calls if api_calls else None,
        error_rate=sum(r.invoices_failed for r in rows) / processed if processed else None,
    )
