"""The sync log: one row per (company, run), written RUNNING at the start and finalized at the end."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from .schema import companies, sync_log

RUNNING, COMPLETED, PARTIAL, FAILED = "RUNNING", "COMPLETED", "PARTIAL", "FAILED"
STATUSES = (RUNNING, COMPLETED, PARTIAL, FAILED)

# Keeps a pathological sync (thousands of broken documents) from bloating one JSON cell.
MAX_STORED_ERRORS = 1000
# Which step recorded an error: the fetch (document unusable as received) or normalization.
FETCH_STAGE, NORMALIZE_STAGE = "fetch", "normalize"


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@dataclass(frozen=True)
class SyncCounts:
    processed: int = 0
    created: int = 0
    updated: int = 0
    skipped: int = 0
    failed: int = 0
    marked_deleted: int = 0
    items_written: int = 0


def final_status(counts: SyncCounts) -> str:
    """COMPLETED when nothing failed, FAILED when everything did, PARTIAL in between."""
    if counts.failed == 0:
        return COMPLETED
    if counts.failed >= counts.processed:
        return FAILED
    return PARTIAL


def start_sync(engine: Engine, company_id: int, run_id: str, trigger: str) -> int:
    """The RUNNING row of this run for this company; a re-executed step reuses (and resets) it."""
    now = utcnow()
    with engine.begin() as conn:
        existing = conn.execute(
            sa.select(sync_log.c.id).where(sync_log.c.company_id == company_id, sync_log.c.run_id == run_id)
        ).scalar()
        if existing is not None:
            conn.execute(
                sync_log.update()
                .where(sync_log.c.id == existing)
                .values(status=RUNNING, finished_at=None, duration_seconds=None, error_message=None, errors=[])
            )
            return existing
        return conn.execute(
            sync_log.insert()
            .values(company_id=company_id, run_id=run_id, trigger=trigger, status=RUNNING, started_at=now, errors=[])
            .returning(sync_log.c.id)
        ).scalar_one()


def record_fetch(
    engine: Engine,
    sync_id: int,
    *,
    api_calls: int,
    pages_fetched: int,
    documents_fetched: int,
    fetch_complete: bool,
    errors: Sequence[dict] = (),
) -> None:
    with engine.begin() as conn:
        conn.execute(
            sync_log.update()
            .where(sync_log.c.id == sync_id)
            .values(
                api_calls=api_calls,
                pages_fetched=pages_fetched,
                documents_fetched=documents_fetched,
                fetch_complete=fetch_complete,
                errors=[{**e, "stage": FETCH_STAGE} for e in errors][:MAX_STORED_ERRORS],
            )
        )


def finish_sync(engine: Engine, sync_id: int, counts: SyncCounts, errors: Sequence[dict] = ()) -> str:
    """Finalize the row with the normalize step's counts and errors; returns the status given.

    Errors the fetch step already stored (documents it could not even identify) stay, and count
    as failed documents of this sync too. A re-executed normalize step replaces its own errors.
    """
    with engine.begin() as conn:
        stored = conn.execute(sa.select(sync_log.c.errors).where(sync_log.c.id == sync_id)).scalar_one() or []
        fetch_errors = [e for e in stored if e.get("stage") == FETCH_STAGE]
        all_errors = fetch_errors + [{**e, "stage": NORMALIZE_STAGE} for e in errors]
        counts = SyncCounts(
            **{
                **counts.__dict__,
                "failed": counts.failed + len(fetch_errors),
                "processed": counts.processed + len(fetch_errors),
            }
        )
        status = final_status(counts)
        started = conn.execute(sa.select(sync_log.c.started_at).where(sync_log.c.id == sync_id)).scalar_one()
        now = utcnow()
        conn.execute(
            sync_log.update()
            .where(sync_log.c.id == sync_id)
            .values(
                status=status,
                finished_at=now,
                duration_seconds=(now - started).total_seconds(),
                invoices_processed=counts.processed,
                invoices_created=counts.created,
                invoices_updated=counts.updated,
                invoices_skipped=counts.skipped,
                invoices_failed=counts.failed,
                invoices_marked_deleted=counts.marked_deleted,
                items_written=counts.items_written,
                errors=all_errors[:MAX_STORED_ERRORS],
            )
        )
    return status


def fail_sync(engine: Engine, sync_id: int, message: str) -> None:
    now = utcnow()
    with engine.begin() as conn:
        started = conn.execute(sa.select(sync_log.c.started_at).where(sync_log.c.id == sync_id)).scalar_one()
        conn.execute(
            sync_log.update()
            .where(sync_log.c.id == sync_id)
            .values(
                status=FAILED,
                finished_at=now,
                duration_seconds=(now - started).total_seconds(),
                error_message=message[:4000],
            )
        )


def sync_rows(engine: Engine, *, company_slug: str | None = None, limit: int = 50) -> list[dict]:
    """Newest first, with the company slug, for the CLI and the demo summary."""
    query = (
        sa.select(companies.c.slug.label("company"), sync_log)
        .join(companies, companies.c.id == sync_log.c.company_id)
        .order_by(sync_log.c.started_at.desc(), sync_log.c.id.desc())
        .limit(limit)
    )
    if company_slug:
        query = query.where(companies.c.slug == company_slug)
    with engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(query)]
