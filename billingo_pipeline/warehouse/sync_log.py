"""The sync log: one row per (company, run), written RUNNING at the start and finalized at the end."""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from .schema import companies, sync_log, sync_log_endpoints

RUNNING, COMPLETED, PARTIAL, FAILED = "RUNNING", "COMPLETED", "PARTIAL", "FAILED"
FULL, INCREMENTAL = "full", "incremental"

# Keeps a pathological sync (thousands of broken documents) from bloating one JSON cell.
MAX_STORED_ERRORS = 1000
# Which step recorded an error: the fetch (document unusable as received) or normalization.
FETCH_STAGE, NORMALIZE_STAGE = "fetch", "normalize"
# A RUNNING row proves it is alive by its heartbeat (refreshed every page and on a timer, see
# sync.SyncHeartbeat). One whose heartbeat is older than this belongs to a process that died
# without finalizing it (SIGKILL, a lost container, the warehouse gone at the end): the next sync
# takes it over. A live sync is never taken over, however long it has been running.
DEFAULT_STALE_AFTER = dt.timedelta(minutes=5)
HOLDER_MAX_LENGTH = 255


class SyncAlreadyRunningError(Exception):
    """Another run is syncing this company right now; the message names the run."""


class SyncLockLostError(Exception):
    """This sync's RUNNING row was finalized by someone else (taken over or released by hand)."""


def process_holder() -> str:
    """``host:pid`` of this process, as a RUNNING row records who holds it."""
    return f"{socket.gethostname()}:{os.getpid()}"[:HOLDER_MAX_LENGTH]


def holder_process_gone(holder: str | None) -> bool:
    """True only when ``holder`` names a process on this host that no longer exists.

    Another host's process cannot be seen from here, and a reused pid looks alive: both answer
    False, so this can only free a lock early, never take a live one.
    """
    host, _, pid = (holder or "").rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError):
        return False
    return False


@dataclass(frozen=True)
class RunningSync:
    """The RUNNING row of a company, as the next sync or ``unlock`` sees it."""

    id: int
    company: str
    run_id: str
    started_at: dt.datetime
    heartbeat_at: dt.datetime | None
    holder: str | None

    def heartbeat_age(self, now: dt.datetime) -> dt.timedelta:
        # Rows written before heartbeats existed only have their start time.
        return now - (self.heartbeat_at or self.started_at)

    def abandoned_because(
        self,
        now: dt.datetime,
        stale_after: dt.timedelta,
        run_in_progress: Callable[[str], bool | None] | None = None,
    ) -> str | None:
        """Why this RUNNING row is dead, or None while it may be alive.

        Dead: no heartbeat for ``stale_after``; or its Dagster run is known and no longer in
        progress (``run_in_progress`` answers False; None means "not known here"); or its
        process on this host is gone. A fresh heartbeat alone never makes a row dead.
        """
        age = self.heartbeat_age(now)
        if age > stale_after:
            return f"no heartbeat for {_seconds(age)} (more than {_seconds(stale_after)})"
        if run_in_progress is not None and run_in_progress(self.run_id) is False:
            return f"its Dagster run {self.run_id} is no longer in progress"
        if holder_process_gone(self.holder):
            return f"its process {self.holder} is gone"
        return None


def _seconds(delta: dt.timedelta) -> str:
    seconds = delta.total_seconds()
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@dataclass(frozen=True)
class SyncProgress:
    """How far one company's sync is: what the run log, the CLI's progress and a RUNNING row say.

    ``pages_total`` and ``documents_total`` are what Billingo's newest page reported (``last_page``,
    ``total``), None when it did not say; ``pages_fetched`` counts every pass of a sweep."""

    company: str
    pages_fetched: int
    pages_total: int | None
    documents_fetched: int
    documents_total: int | None
    retries: int = 0
    finished: bool = False  # the last page of the sync has been written

    @classmethod
    def of_row(cls, row: Mapping) -> SyncProgress:
        """The progress a sync-log row records (``sync_rows``' dicts, with ``company``)."""
        return cls(
            company=row["company"], pages_fetched=row["pages_fetched"] or 0, pages_total=row.get("pages_total"),
            documents_fetched=row["documents_fetched"] or 0, documents_total=row.get("documents_total"),
        )

    def columns(self) -> dict[str, int | None]:
        """The sync-log columns that hold it (``heartbeat(**progress.columns())``)."""
        return {
            "pages_fetched": self.pages_fetched, "pages_total": self.pages_total,
            "documents_fetched": self.documents_fetched, "documents_total": self.documents_total,
        }

    def text(self) -> str:
        """``page 37/150 · 3,700 of 15,000 documents · 2 retries``: a total only while it is known
        and not passed (a second pass of a sweep, documents created during the sync)."""
        known_pages = self.pages_total is not None and self.pages_fetched <= self.pages_total
        pages = f"page {self.pages_fetched:,}" + (f"/{self.pages_total:,}" if known_pages else "")
        known_documents = self.documents_total is not None and self.documents_fetched <= self.documents_total
        documents = f"{self.documents_fetched:,}" + (f" of {self.documents_total:,}" if known_documents else "") + " documents"
        parts = [pages, documents]
        if self.retries:
            parts.append(f"{self.retries} {'retry' if self.retries == 1 else 'retries'}")
        return " · ".join(parts)

    def line(self) -> str:
        return f"{self.company}: {self.text()}"


@dataclass(frozen=True)
class SyncCounts:
    processed: int = 0
    created: int = 0
    updated: int = 0
    skipped: int = 0
    failed: int = 0
    marked_deleted: int = 0
    items_written: int = 0


@dataclass(frozen=True)
class EndpointCounts:
    """One endpoint's part of a sync: a ``sync_log_endpoints`` row."""

    endpoint: str
    mode: str | None
    fetched: int = 0
    created: int = 0
    updated: int = 0
    skipped: int = 0
    failed: int = 0
    marked_missing: int = 0
    api_calls: int = 0
    pages_fetched: int = 0
    fetch_complete: bool | None = None
    duration_seconds: float | None = None

    @classmethod
    def of(cls, endpoint: str, fetch, counts: SyncCounts, fetch_errors: Sequence[dict] = ()) -> EndpointCounts:
        """From a sweep's ``sync.FetchOutcome`` and its counts; items without a usable id failed too."""
        return cls(
            endpoint=endpoint, mode=fetch.mode, fetched=fetch.documents_fetched + len(fetch_errors),
            created=counts.created, updated=counts.updated, skipped=counts.skipped,
            failed=counts.failed + len(fetch_errors), marked_missing=counts.marked_deleted,
            api_calls=fetch.api_calls, pages_fetched=fetch.pages_fetched, fetch_complete=fetch.complete,
            duration_seconds=round(fetch.duration_seconds, 3),
        )


def record_endpoint(engine: Engine, sync_id: int, company_id: int, counts: EndpointCounts) -> None:
    """The endpoint's row of this sync, replacing the one a re-executed step wrote before."""
    values = {name: getattr(counts, name) for name in EndpointCounts.__dataclass_fields__}
    with engine.begin() as conn:
        conn.execute(
            sync_log_endpoints.delete().where(
                sync_log_endpoints.c.sync_id == sync_id, sync_log_endpoints.c.endpoint == counts.endpoint
            )
        )
        conn.execute(sync_log_endpoints.insert().values(sync_id=sync_id, company_id=company_id, **values))


def endpoint_fully_swept(engine: Engine, company_id: int, endpoint: str) -> bool:
    """Whether a sync that ended COMPLETED or PARTIAL has read all of ``endpoint`` for the company
    (a complete full sweep): before that, an incremental read of it has no base to add to."""
    e = sync_log_endpoints
    with engine.connect() as conn:
        return conn.execute(
            sa.select(e.c.id)
            .join(sync_log, sync_log.c.id == e.c.sync_id)
            .where(
                e.c.company_id == company_id, e.c.endpoint == endpoint, e.c.mode == FULL, e.c.fetch_complete.is_(True),
                sync_log.c.status.in_((COMPLETED, PARTIAL)),
            )
            .limit(1)
        ).first() is not None


def endpoint_rows(engine: Engine, sync_ids: Sequence[int]) -> dict[int, list[dict]]:
    """The per-endpoint counts of these syncs, in the order they were swept."""
    if not sync_ids:
        return {}
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(sync_log_endpoints)
            .where(sync_log_endpoints.c.sync_id.in_(list(sync_ids)))
            .order_by(sync_log_endpoints.c.sync_id, sync_log_endpoints.c.id)
        ).all()
    found: dict[int, list[dict]] = {}
    for row in rows:
        found.setdefault(row.sync_id, []).append(dict(row._mapping))
    return found


def error_subject(error: Mapping) -> str:
    """What a stored error is about: ``document 123``, ``spending 7000001``."""
    if error.get("endpoint") and error.get("endpoint") != "documents":
        return f"{error.get('entity') or error['endpoint']} {error.get('entity_id')}"
    return f"document {error.get('document_id')}"


def final_status(counts: SyncCounts, mode: str | None = FULL) -> str:
    """COMPLETED when nothing failed, PARTIAL when some documents did, FAILED when a full sweep
    (or a re-normalization) failed every document. An incremental sync sees only what changed:
    its one failed document of one fetched leaves the rest of the warehouse sound, so PARTIAL."""
    if counts.failed == 0:
        return COMPLETED
    if counts.failed >= counts.processed and mode != INCREMENTAL:
        return FAILED
    return PARTIAL


def _running_row(conn, company_id: int, *, other_than_run: str | None = None) -> RunningSync | None:
    query = (
        sa.select(
            sync_log.c.id, companies.c.slug, sync_log.c.run_id, sync_log.c.started_at,
            sync_log.c.heartbeat_at, sync_log.c.holder,
        )
        .join(companies, companies.c.id == sync_log.c.company_id)
        .where(sync_log.c.company_id == company_id, sync_log.c.status == RUNNING)
    )
    if other_than_run is not None:
        query = query.where(sync_log.c.run_id != other_than_run)
    row = conn.execute(query).first()
    return None if row is None else RunningSync(row.id, row.slug, row.run_id, row.started_at, row.heartbeat_at, row.holder)


def _already_running(row: RunningSync, now: dt.datetime) -> SyncAlreadyRunningError:
    return SyncAlreadyRunningError(
        f"company '{row.company}' is already being synced by run {row.run_id} "
        f"(started {row.started_at:%Y-%m-%d %H:%M:%S} UTC, last heartbeat {_seconds(row.heartbeat_age(now))} ago): "
        f"one sync per company at a time, because Billingo's rate limit is per API key. This sync was not started."
    )


def start_sync(
    engine: Engine,
    company_id: int,
    run_id: str,
    trigger: str,
    *,
    stale_after: dt.timedelta = DEFAULT_STALE_AFTER,
    run_in_progress: Callable[[str], bool | None] | None = None,
) -> int:
    """The RUNNING row of this run for this company; a re-executed step reuses (and resets) it.

    One sync per company at a time: when another run holds a RUNNING row for the company this
    raises ``SyncAlreadyRunningError`` before anything is written, unless that row is dead
    (``RunningSync.abandoned_because``), which is then marked FAILED "abandoned" and taken over.
    The partial unique index ``ux_sync_log_company_id_running`` closes the race between two runs
    that look at the same moment: the loser's insert fails and is reported the same way.
    """
    now = utcnow()
    fresh = {"status": RUNNING, "heartbeat_at": now, "holder": process_holder()}
    try:
        with engine.begin() as conn:
            holder = _running_row(conn, company_id, other_than_run=run_id)
            if holder is not None:
                reason = holder.abandoned_because(now, stale_after, run_in_progress)
                if reason is None:
                    raise _already_running(holder, now)
                _mark_failed(conn, holder.id, holder.started_at, f"abandoned: {reason}; taken over by run {run_id}", now)
            existing = conn.execute(
                sa.select(sync_log.c.id).where(sync_log.c.company_id == company_id, sync_log.c.run_id == run_id)
            ).scalar()
            if existing is not None:
                conn.execute(sync_log_endpoints.delete().where(sync_log_endpoints.c.sync_id == existing))
                conn.execute(
                    sync_log.update()
                    .where(sync_log.c.id == existing)
                    .values(**fresh, finished_at=None, duration_seconds=None, error_message=None, errors=[])
                )
                return existing
            return conn.execute(
                sync_log.insert()
                .values(company_id=company_id, run_id=run_id, trigger=trigger, started_at=now, errors=[], **fresh)
                .returning(sync_log.c.id)
            ).scalar_one()
    except sa.exc.IntegrityError:
        # Another run inserted its RUNNING row between our look and our write.
        with engine.connect() as conn:
            holder = _running_row(conn, company_id, other_than_run=run_id)
        if holder is None:
            raise
        raise _already_running(holder, utcnow()) from None


def heartbeat(engine: Engine, sync_id: int, **progress: int | None) -> None:
    """Refresh the row's heartbeat (and any progress columns given, ``SyncProgress.columns()``).

    Raises ``SyncLockLostError`` when the row is no longer RUNNING: someone took it over or
    released it, and this sync must stop writing.
    """
    with engine.begin() as conn:
        changed = conn.execute(
            sync_log.update()
            .where(sync_log.c.id == sync_id, sync_log.c.status == RUNNING)
            .values(heartbeat_at=utcnow(), **progress)
        ).rowcount
    if not changed:
        raise SyncLockLostError(
            f"sync-log row {sync_id} is no longer RUNNING (taken over or released by another process): this sync stopped"
        )


class UnlockRefusedError(Exception):
    """The company's RUNNING sync is alive (fresh heartbeat): it is not released."""


def release_running_sync(
    engine: Engine, company_id: int, *, stale_after: dt.timedelta = DEFAULT_STALE_AFTER, who: str = "by hand"
) -> RunningSync | None:
    """Mark the company's RUNNING row FAILED "released"; None when there is none.

    Refused (``UnlockRefusedError``) while its heartbeat is fresh: a live sync must not be
    released under its feet, whatever its age.
    """
    now = utcnow()
    with engine.begin() as conn:
        row = _running_row(conn, company_id)
        if row is None:
            return None
        age = row.heartbeat_age(now)
        if age <= stale_after and not holder_process_gone(row.holder):
            raise UnlockRefusedError(
                f"company '{row.company}' is being synced by run {row.run_id} and is alive "
                f"(last heartbeat {_seconds(age)} ago, within {_seconds(stale_after)}): not released. "
                f"Stop that run instead, or wait until its heartbeat is {_seconds(stale_after)} old."
            )
        _mark_failed(conn, row.id, row.started_at, f"abandoned: released {who} (last heartbeat {_seconds(age)} ago)", now)
    return row


def record_plan(
    engine: Engine,
    sync_id: int,
    *,
    mode: str,
    modified_since: dt.datetime | None,
    cursor: dt.datetime | None,
    normalization_revision: int,
) -> None:
    """How this sync fetches (``FULL`` or ``INCREMENTAL``), from which instant, and the Billingo
    clock reading that becomes the next sync's cursor once this one has fetched completely."""
    with engine.begin() as conn:
        conn.execute(
            sync_log.update()
            .where(sync_log.c.id == sync_id)
            .values(mode=mode, modified_since=modified_since, cursor=cursor, normalization_revision=normalization_revision)
        )


@dataclass(frozen=True)
class SyncHistory:
    """What the next sync of a company needs to know of the earlier ones."""

    last_full_sweep_cursor: dt.datetime | None  # Billingo's clock at the start of the newest complete full sweep
    last_full_sweep_revision: int | None
    cursor: dt.datetime | None  # of the newest sync (either mode) that fetched completely


def sync_history(engine: Engine, company_id: int) -> SyncHistory:
    """Only syncs that ended COMPLETED or PARTIAL with every page fetched count: a failed or
    interrupted sync never moves a cursor."""
    fetched = sa.and_(
        sync_log.c.company_id == company_id,
        sync_log.c.status.in_((COMPLETED, PARTIAL)),
        sync_log.c.fetch_complete.is_(True),
        sync_log.c.cursor.is_not(None),
    )
    newest = sync_log.c.cursor.desc(), sync_log.c.id.desc()
    with engine.connect() as conn:
        full = conn.execute(
            sa.select(sync_log.c.cursor, sync_log.c.normalization_revision)
            .where(fetched, sync_log.c.mode == FULL)
            .order_by(*newest)
            .limit(1)
        ).first()
        cursor = conn.execute(sa.select(sync_log.c.cursor).where(fetched).order_by(*newest).limit(1)).scalar()
    return SyncHistory(
        last_full_sweep_cursor=full.cursor if full else None,
        last_full_sweep_revision=full.normalization_revision if full else None,
        cursor=cursor,
    )


def record_fetch(
    engine: Engine,
    sync_id: int,
    *,
    api_calls: int,
    pages_fetched: int,
    documents_fetched: int,
    fetch_complete: bool,
    errors: Sequence[dict] = (),
    pages_total: int | None = None,
    documents_total: int | None = None,
) -> None:
    with engine.begin() as conn:
        conn.execute(
            sync_log.update()
            .where(sync_log.c.id == sync_id)
            .values(
                api_calls=api_calls,
                pages_fetched=pages_fetched,
                documents_fetched=documents_fetched,
                pages_total=pages_total,
                documents_total=documents_total,
                fetch_complete=fetch_complete,
                errors=[{**e, "stage": FETCH_STAGE} for e in errors][:MAX_STORED_ERRORS],
            )
        )


def finish_sync(
    engine: Engine, sync_id: int, counts: SyncCounts, errors: Sequence[dict] = (), *, other_errors: Sequence[dict] = ()
) -> str:
    """Finalize the row with the normalize step's counts and errors; returns the status it set.

    Errors the fetch step already stored (documents it could not even identify) stay, and count
    as failed documents of this sync too. A re-executed normalize step replaces its own errors.
    ``other_errors`` are of the endpoints after documents (partners, spendings, ...): stored with
    the others, they make a sync that would be COMPLETED PARTIAL.
    """
    with engine.begin() as conn:
        stored, started, mode = conn.execute(
            sa.select(sync_log.c.errors, sync_log.c.started_at, sync_log.c.mode).where(sync_log.c.id == sync_id)
        ).one()
        fetch_errors = [e for e in stored or [] if e.get("stage") == FETCH_STAGE]
        all_errors = fetch_errors + [{**e, "stage": NORMALIZE_STAGE} for e in (*errors, *other_errors)]
        counts = replace(
            counts, failed=counts.failed + len(fetch_errors), processed=counts.processed + len(fetch_errors)
        )
        status = final_status(counts, mode)
        if status == COMPLETED and other_errors:
            status = PARTIAL
        now = utcnow()
        error_message = None
        if status == FAILED:
            first = all_errors[0] if all_errors else {}
            error_message = one_line(
                f"all {counts.failed} document(s) failed; first: document {first.get('document_id')}: {first.get('message')}"
                if all_errors else "the sync failed"
            )
        changed = conn.execute(
            sync_log.update()
            .where(sync_log.c.id == sync_id, sync_log.c.status == RUNNING)
            .values(
                status=status,
                finished_at=now,
                heartbeat_at=now,
                duration_seconds=(now - started).total_seconds(),
                invoices_processed=counts.processed,
                invoices_created=counts.created,
                invoices_updated=counts.updated,
                invoices_skipped=counts.skipped,
                invoices_failed=counts.failed,
                invoices_marked_deleted=counts.marked_deleted,
                items_written=counts.items_written,
                error_message=error_message,
                errors=all_errors[:MAX_STORED_ERRORS],
            )
        ).rowcount
        if not changed:
            raise SyncLockLostError(f"sync-log row {sync_id} was finalized by another process before this sync finished")
    return status


MAX_MESSAGE_LENGTH = 1000


def one_line(message: str) -> str:
    """A stored or printed error is one line: whitespace folded, and bounded in length."""
    text = " ".join(str(message).split())
    return text if len(text) <= MAX_MESSAGE_LENGTH else text[: MAX_MESSAGE_LENGTH - 3] + "..."


def _mark_failed(conn, sync_id: int, started_at: dt.datetime, message: str, now: dt.datetime, **extra) -> None:
    """FAILED with the reason, only if the row is still RUNNING (a finished sync keeps its status)."""
    conn.execute(
        sync_log.update()
        .where(sync_log.c.id == sync_id, sync_log.c.status == RUNNING)
        .values(
            status=FAILED,
            finished_at=now,
            duration_seconds=(now - started_at).total_seconds(),
            error_message=one_line(message),
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
