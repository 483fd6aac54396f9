"""The sync log: one row per (company, run), written RUNNING at the start and finalized at the end."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from .schema import companies, sync_log

RUNNING, COMPLETED, PARTIAL, FAILED = "RUNNING", "COMPLETED", "PARTIAL", "FAILED"

# Keeps a pathological sync (thousands of broken documents) from bloating one JSON cell.
MAX_STORED_ERRORS = 1000
# Which step recorded an error: the fetch (document unusable as received) or normalization.
FETCH_STAGE, NORMALIZE_STAGE = "fetch", "normalize"
# A RUNNING row older than this belongs to a run that died without finalizing it (killed process,
# lost container): the next sync of the company takes it over instead of waiting forever. Far
# above any real sync (a million documents are ~10,000 calls, ~35 minutes at 300 requests/minute).
STALE_RUNNING_AFTER = dt.timedelta(hours=6)


class SyncAlreadyRunningError(Exception):
    """Another run is syncing this company right now; the message names the run."""


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


def _running_elsewhere(conn, company_id: int, run_id: str):
    return conn.execute(
        sa.select(sync_log.c.id, sync_log.c.run_id, sync_log.c.started_at, companies.c.slug)
        .join(companies, companies.c.id == sync_log.c.company_id)
        .where(sync_log.c.company_id == company_id, sync_log.c.status == RUNNING, sync_log.c.run_id != run_id)
    ).first()


def _already_running(row) -> SyncAlreadyRunningError:
    return SyncAlreadyRunningError(
        f"company '{row.slug}' is already being synced by run {row.run_id} "
        f"(started {row.started_at:%Y-%m-%d %H:%M:%S} UTC): one sync per company at a time, because "
        f"Billingo's rate limit is per API key. This sync was not started."
    )


def start_sync(
    engine: Engine, company_id: int, run_id: str, trigger: str, *, stale_after: dt.timedelta = STALE_RUNNING_AFTER
) -> int:
    """The RUNNING row of this run for this company; a re-executed step reuses (and resets) it.

    One sync per company at a time: when another run holds a RUNNING row for the company this
    raises ``SyncAlreadyRunningError`` before anything is written, unless that row is older than
    ``stale_after`` (its run died without finalizing it), which is then marked FAILED and taken over.
    The partial unique index ``ux_sync_log_company_id_running`` closes the race between two runs
    that look at the same moment: the loser's insert fails and is reported the same way.
    """
    now = utcnow()
    try:
        with engine.begin() as conn:
            holder = _running_elsewhere(conn, company_id, run_id)
            if holder is not None:
                if now - holder.started_at <= stale_after:
                    raise _already_running(holder)
                _mark_failed(
                    conn,
                    holder.id,
                    holder.started_at,
                    f"abandoned: still RUNNING after {stale_after.total_seconds() / 3600:g} h "
                    f"(its run died without finishing the sync); taken over by run {run_id}",
                    now,
                )
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
    except sa.exc.IntegrityError:
        # Another run inserted its RUNNING row between our look and our write.
        with engine.connect() as conn:
            holder = _running_elsewhere(conn, company_id, run_id)
        if holder is None:
            raise
        raise _already_running(holder) from None


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
    """Finalize the row with the normalize step's counts and errors; returns the status it set.

    Errors the fetch step already stored (documents it could not even identify) stay, and count
    as failed documents of this sync too. A re-executed normalize step replaces its own errors.
    """
    with engine.begin() as conn:
        stored, started = conn.execute(
            sa.select(sync_log.c.errors, sync_log.c.started_at).where(sync_log.c.id == sync_id)
        ).one()
        fetch_errors = [e for e in stored or [] if e.get("stage") == FETCH_STAGE]
        all_errors = fetch_errors + [{**e, "stage": NORMALIZE_STAGE} for e in errors]
        counts = replace(
            counts, failed=counts.failed + len(fetch_errors), processed=counts.processed + len(fetch_errors)
        )
        status = final_status(counts)
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


def _mark_failed(conn, sync_id: int, started_at: dt.datetime, message: str, now: dt.datetime, **extra) -> None:
    """FAILED with the reason, only if the row is still RUNNING (a finished sync keeps its status)."""
    conn.execute(
        sync_log.update()
        .where(sync_log.c.id == sync_id, sync_log.c.status == RUNNING)
        .values(
            status=FAILED,
            finished_at=now,
            duration_seconds=(now - started_at).total_seconds(),
            error_message=message[:4000],
            **extra,
        )
    )


def fail_sync(engine: Engine, sync_id: int, message: str, *, api_calls: int | None = None) -> None:
    """FAILED with ``message``; ``api_calls`` records what a fetch that broke off had already spent."""
    extra = {} if api_calls is None else {"api_calls": api_calls}
    with engine.begin() as conn:
        started = conn.execute(sa.select(sync_log.c.started_at).where(sync_log.c.id == sync_id)).scalar_one()
        _mark_failed(conn, sync_id, started, message, utcnow(), **extra)


def fail_running_syncs_of_run(engine: Engine, run_id: str, message: str) -> int:
    """Mark every RUNNING row of ``run_id`` FAILED with ``message``; returns how many there were.

    For the run-failure sensor: a run that crashed, was canceled or lost its process leaves its
    companies' rows RUNNING, which would block their next sync until the staleness rule frees them.
    """
    now = utcnow()
    with engine.begin() as conn:
        rows = conn.execute(
            sa.select(sync_log.c.id, sync_log.c.started_at).where(sync_log.c.run_id == run_id, sync_log.c.status == RUNNING)
        ).all()
        for row in rows:
            _mark_failed(conn, row.id, row.started_at, message, now)
    return len(rows)


def record_check_results(engine: Engine, sync_id: int, results: Mapping[str, dict]) -> None:
    """Store asset-check outcomes in the row's ``check_results``, one entry per check name.

    An entry replaces the previous outcome of the same check and leaves the others alone, in one
    statement, so the sync step and the freshness sensor can write the same row without losing
    each other's results.
    """
    if not results:
        return
    if not all(name.isidentifier() for name in results):  # they become JSON paths on SQLite
        raise ValueError(f"check names must be identifiers: {sorted(results)}")
    dialect = engine.dialect.name
    if dialect not in ("postgresql", "sqlite"):
        raise ValueError(f"unsupported warehouse dialect {dialect!r}: the warehouse runs on SQLite or PostgreSQL")
    with engine.begin() as conn:
        if dialect == "postgresql":
            conn.execute(
                sa.text(
                    "UPDATE sync_log SET check_results ="
                    " COALESCE(CASE WHEN jsonb_typeof(check_results) = 'object' THEN check_results END, CAST('{}' AS jsonb))"
                    " || CAST(:results AS jsonb)"
                    " WHERE id = :id"
                ),
                {"results": json.dumps(results), "id": sync_id},
            )
        else:  # sqlite
            pairs = ", ".join(f"'$.\"{name}\"', json(:v{i})" for i, name in enumerate(results))
            params = {f"v{i}": json.dumps(value) for i, value in enumerate(results.values())}
            conn.execute(
                sa.text(
                    "UPDATE sync_log SET check_results = json_set("
                    "CASE WHEN json_type(check_results) = 'object' THEN check_results ELSE '{}' END, "
                    f"{pairs}) WHERE id = :id"
                ),
                {**params, "id": sync_id},
            )


def sync_rows(engine: Engine, *, company_slug: str | None = None, run_id: str | None = None, limit: int = 50) -> list[dict]:
    """Newest first, with the company slug, for the CLI, the demo summary and failure alerts (``run_id``)."""
    query = (
        sa.select(companies.c.slug.label("company"), sync_log)
        .join(companies, companies.c.id == sync_log.c.company_id)
        .order_by(sync_log.c.started_at.desc(), sync_log.c.id.desc())
        .limit(limit)
    )
    if company_slug:
        query = query.where(companies.c.slug == company_slug)
    if run_id:
        query = query.where(sync_log.c.run_id == run_id)
    with engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(query)]
