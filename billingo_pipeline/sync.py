"""The sync of one company, in plain functions the Dagster asset calls (testable without Dagster).

1. ``fetch_raw_documents``: sweep ``GET /documents`` page by page and upsert each page's payloads
   into the raw table as it arrives (memory holds one page). A complete sweep marks documents
   Billingo no longer returns as missing.
2. ``normalize_raw_documents``: compare every raw document's hash with the hash its invoice was
   built from; normalize only new or changed ones (pure functions), write invoices and items in
   bulk, one transaction per batch; record per-document errors without stopping.

One poisoned document costs one document: values a column cannot hold are document errors
before anything is written (``normalize.ColumnLimit``), and a batch the database still refuses is
written again one document at a time, so only the documents it refuses fail.

While it runs, the sync-log row proves it is alive (``SyncHeartbeat``); an interruption (SIGINT,
SIGTERM, a terminated Dagster run) finalizes the row FAILED with the reason before it propagates.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from . import settings
from .billingo_client import BillingoApiError, BillingoClient, SweepResult, sweep_documents
from .credentials import CredentialError
from .normalize import DocumentError, change_hash, normalize_document
from .warehouse import documents as store
from .warehouse.companies import Company, CompanyError
from .warehouse.engine import warehouse_error_summary
from .warehouse.schema import WAREHOUSE_ROW_LIMITS
from .warehouse.sync_log import (
    SyncCounts,
    SyncLockLostError,
    fail_sync,
    finish_sync,
    heartbeat,
    one_line,
    record_fetch,
    start_sync,
    utcnow,
)

log = logging.getLogger(__name__)

# Bump when normalization changes meaning: every invoice is then rebuilt once from its raw payload,
# even though Billingo's content did not change.
NORMALIZATION_REVISION = 1
NORMALIZE_BATCH_SIZE = 500
# Billingo ids are positive; the warehouse keeps them in BIGINT columns.
MAX_DOCUMENT_ID = 2**63 - 1

T = TypeVar("T")

# Failures whose message is already a clear, key-free sentence for the UI and the sync log.
EXPECTED_SYNC_ERRORS = (BillingoApiError, CredentialError, CompanyError)
# What the database says about one row it cannot take (a value, a constraint): worth writing the
# batch again one document at a time. A lost connection is not: it fails the sync.
ROW_REFUSALS = (sa.exc.DataError, sa.exc.IntegrityError)


def chunked(values: Iterable[T], size: int) -> Iterator[list[T]]:
    batch: list[T] = []
    for value in values:
        batch.append(value)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def invoice_source_hash(raw_content_hash: str) -> str:
    """What an invoice row remembers it was built from: the raw hash under this normalization."""
    return hashlib.sha256(f"{NORMALIZATION_REVISION}:{raw_content_hash}".encode()).hexdigest()


def _is_row_refusal(exc: BaseException) -> bool:
    # A StatementError that is not a DBAPIError failed while binding one row's value in Python.
    return isinstance(exc, ROW_REFUSALS) or (
        isinstance(exc, sa.exc.StatementError) and not isinstance(exc, sa.exc.DBAPIError)
    )


def write_isolating_refusals(
    engine: Engine,
    batch: Sequence[T],
    write: Callable[[Connection, Sequence[T]], None],
    document_id_of: Callable[[T], int],
) -> dict[int, str]:
    """Write ``batch`` in one transaction; if the database refuses a row, write each element in
    its own transaction instead. Returns ``{document_id: reason}`` of the ones refused (the
    reason is one line without SQL or values); a lost connection still raises."""
    try:
        with engine.begin() as conn:
            write(conn, batch)
        return {}
    except Exception as exc:
        if not _is_row_refusal(exc):
            raise
    refused: dict[int, str] = {}
    for element in batch:
        try:
            with engine.begin() as conn:
                write(conn, [element])
        except Exception as exc:
            if not _is_row_refusal(exc):
                raise
            refused[document_id_of(element)] = f"the warehouse refused it ({warehouse_error_summary(exc)})"
    return refused


class SyncHeartbeat:
    """Keeps a RUNNING sync-log row provably alive while the sync runs.

    A background thread refreshes ``heartbeat_at`` every ``interval`` seconds (a page can take
    minutes when Billingo is slow or rate-limits us), and ``beat`` refreshes it with progress at
    every page. When the row is no longer RUNNING (taken over as dead, or released by hand) the
    next ``beat`` raises ``SyncLockLostError``, so this sync stops before it writes over a newer one.
    """

    def __init__(self, engine: Engine, sync_id: int, interval_seconds: float, logger: logging.Logger | logging.LoggerAdapter | None = None):
        self.engine = engine
        self.sync_id = sync_id
        self.interval = interval_seconds
        self.log = logger or log
        self._stop = threading.Event()
        self._lost: SyncLockLostError | None = None
        self._warned = False
        self._thread = threading.Thread(target=self._run, name=f"sync-heartbeat-{sync_id}", daemon=True)

    def __enter__(self) -> SyncHeartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def beat(self, **progress: int) -> None:
        if self._lost is not None:
            raise self._lost
        heartbeat(self.engine, self.sync_id, **progress)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                heartbeat(self.engine, self.sync_id)
            except SyncLockLostError as exc:
                self._lost = exc
                return
            except Exception as exc:  # the sync itself will meet the same outage and report it
                if not self._warned:
                    self._warned = True
                    self.log.warning(f"sync-log heartbeat not written: {warehouse_error_summary(exc)}")


@dataclass
class FetchOutcome:
    api_calls: int
    pages_fetched: int
    documents_fetched: int
    complete: bool
    marked_missing: int
    duration_seconds: float
    errors: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _usable_document_id(document: object) -> int | None:
    document_id = document.get("id") if isinstance(document, dict) else None
    if isinstance(document_id, int) and not isinstance(document_id, bool) and 0 < document_id <= MAX_DOCUMENT_ID:
        return document_id
    return None


def fetch_raw_documents(
    engine: Engine, company: Company, client: BillingoClient, sync_id: int, keepalive: SyncHeartbeat | None = None
) -> FetchOutcome:
    started = time.monotonic()
    sweep = SweepResult()
    errors: list[dict] = []
    fetched = 0

    def write(conn: Connection, batch: Sequence[tuple[int, dict, str]]) -> None:
        store.upsert_raw_documents(conn, company.id, sync_id, batch, utcnow())

    def store_batch(batch: list[tuple[int, dict, str]]) -> int:
        refused = write_isolating_refusals(engine, batch, write, lambda element: element[0])
        errors.extend({"document_id": document_id, "message": f"raw payload not stored: {reason}"} for document_id, reason in refused.items())
        if keepalive is not None:
            keepalive.beat(
                api_calls=client.stats.api_calls, pages_fetched=client.stats.pages_fetched, documents_fetched=fetched
            )
        return len(batch) - len(refused)

    pending: list[tuple[int, dict, str]] = []
    seen_ids: set[int] = set()
    for document in sweep_documents(client, sweep):
        document_id = _usable_document_id(document)
        if document_id is None:
            shown = document.get("id") if isinstance(document, dict) else None
            errors.append({"document_id": None, "message": f"document without a usable id (id={shown!r:.40}): not stored"})
            continue
        pending.append((document_id, document, change_hash(document)))
        seen_ids.add(document_id)
        fetched += 1
        if len(pending) >= client.page_size:
            store_batch(pending)
            pending = []
    if pending:
        store_batch(pending)

    marked_missing = 0
    if sweep.complete:
        # Documents an earlier pass of this sweep returned but the complete final pass did not
        # (drafts deleted while we paged) are gone too, although this sync stored them.
        vanished_while_paging = sorted(seen_ids - sweep.final_pass_ids)
        if keepalive is not None:
            keepalive.beat()  # still ours: a sync taken over must not mark the taker's documents missing
        with engine.begin() as conn:
            now = utcnow()
            marked_missing = store.mark_unseen_raw_documents(conn, company.id, sync_id, now)
            for ids in chunked(vanished_while_paging, NORMALIZE_BATCH_SIZE):
                marked_missing += store.mark_raw_documents_missing(conn, company.id, ids, now)
    outcome = FetchOutcome(
        api_calls=client.stats.api_calls,
        pages_fetched=client.stats.pages_fetched,
        documents_fetched=fetched,
        complete=sweep.complete,
        marked_missing=marked_missing,
        duration_seconds=time.monotonic() - started,
        errors=errors,
        notes=sweep.notes,
    )
    record_fetch(
        engine,
        sync_id,
        api_calls=outcome.api_calls,
        pages_fetched=outcome.pages_fetched,
        documents_fetched=outcome.documents_fetched,
        fetch_complete=outcome.complete,
        errors=errors,
    )
    return outcome


@dataclass
class NormalizeOutcome:
    counts: SyncCounts
    restored: int
    duration_seconds: float
    errors: list[dict] = field(default_factory=list)


@dataclass(frozen=True)
class _NormalizedRows:
    document_id: int
    invoice: dict
    items: list[dict]


def normalize_raw_documents(
    engine: Engine, company_id: int, *, batch_size: int = NORMALIZE_BATCH_SIZE, keepalive: SyncHeartbeat | None = None
) -> NormalizeOutcome:
    started = time.monotonic()
    with engine.connect() as conn:
        states = store.raw_document_states(conn, company_id)

    present = [s for s in states if s.missing_since is None]
    changed = [s for s in present if s.source_hash != invoice_source_hash(s.content_hash)]
    is_new = {s.document_id: s.source_hash is None for s in changed}
    newly_missing = [s.document_id for s in states if s.missing_since is not None and s.source_hash is not None and s.deleted_in_source_at is None]
    seen_again = {s.document_id for s in present if s.deleted_in_source_at is not None}

    def write(conn: Connection, documents: Sequence[_NormalizedRows]) -> None:
        store.write_invoices_with_items(
            conn, company_id, [d.invoice for d in documents], [i for d in documents for i in d.items], utcnow()
        )

    # A document back and changed is restored by its own upsert (which clears the mark), the
    # others by the update below: count both.
    created = updated = items_written = restored = 0
    errors: list[dict] = []
    for batch_ids in chunked((s.document_id for s in changed), batch_size):
        with engine.connect() as conn:
            payloads = store.raw_payloads(conn, company_id, batch_ids)
        documents: list[_NormalizedRows] = []
        for row in payloads:
            try:
                normalized = normalize_document(row.payload, WAREHOUSE_ROW_LIMITS)
            except DocumentError as exc:
                errors.append({"document_id": row.document_id, "message": exc.message})
                continue
            if normalized.document_id != row.document_id:
                errors.append({"document_id": row.document_id, "message": "payload id differs from the stored id"})
                continue
            documents.append(
                _NormalizedRows(
                    normalized.document_id,
                    {**normalized.invoice, "source_hash": invoice_source_hash(row.content_hash)},
                    [{**item, "document_id": normalized.document_id} for item in normalized.items],
                )
            )
        refused = write_isolating_refusals(engine, documents, write, lambda d: d.document_id)
        for document in documents:
            if document.document_id in refused:
                errors.append({"document_id": document.document_id, "message": refused[document.document_id]})
                continue
            if is_new[document.document_id]:
                created += 1
            else:
                updated += 1
            restored += document.document_id in seen_again
            items_written += len(document.items)
        if keepalive is not None:
            keepalive.beat()

    marked_deleted = 0
    with engine.begin() as conn:
        now = utcnow()
        for ids in chunked(newly_missing, batch_size):
            marked_deleted += store.set_deleted_in_source(conn, company_id, ids, now, now)
        for ids in chunked(sorted(seen_again), batch_size):
            restored += store.set_deleted_in_source(conn, company_id, ids, None, now)

    counts = SyncCounts(
        processed=len(present),
        created=created,
        updated=updated,
        skipped=len(present) - len(changed),
        failed=len(errors),
        marked_deleted=marked_deleted,
        items_written=items_written,
    )
    return NormalizeOutcome(counts=counts, restored=restored, duration_seconds=time.monotonic() - started, errors=errors)


class CompanySyncError(Exception):
    """A company's sync failed; the message is one key-free line, already in the sync log when it could be written."""


@dataclass
class CompanySyncResult:
    company: str
    sync_id: int
    status: str
    fetch: FetchOutcome | None
    normalize: NormalizeOutcome | None


def interruption_reason(exc: BaseException) -> str:
    """Plain words for an interruption (a BaseException that is not an Exception)."""
    if isinstance(exc, SystemExit):
        return "interrupted: the process is exiting"
    # KeyboardInterrupt, or dagster's DagsterExecutionInterruptedError, which is what a SIGINT
    # (and a run terminated from the UI) becomes inside a Dagster step.
    return "interrupted (Ctrl-C, SIGTERM, or the Dagster run was terminated)"


def failure_message(exc: BaseException) -> str:
    """The one line a failed sync records and shows: never SQL, parameters or payload text."""
    if not isinstance(exc, Exception):
        return f"{interruption_reason(exc)} before the sync finished; the next sync carries on"
    if isinstance(exc, EXPECTED_SYNC_ERRORS):
        return one_line(str(exc))
    if isinstance(exc, sa.exc.SQLAlchemyError):
        return f"the warehouse failed during the sync: {warehouse_error_summary(exc)}"
    return one_line(f"{type(exc).__name__}: {exc}")


def sync_company(
    engine: Engine,
    company: Company,
    *,
    run_id: str,
    trigger: str,
    open_client: Callable[[Company], BillingoClient] | None,
    run_in_progress: Callable[[str], bool | None] | None = None,
    logger: logging.Logger | logging.LoggerAdapter | None = None,
) -> CompanySyncResult:
    """One company's sync with its sync-log row: RUNNING first, then COMPLETED/PARTIAL/FAILED.

    ``open_client=None`` re-normalizes what is already stored, without calling Billingo.
    ``run_in_progress(run_id)`` tells whether another row's Dagster run is still going (None:
    unknown), so a row left by a dead run is taken over at once (``sync_log.start_sync``).
    Whatever ends the sync (an error, SIGINT, SIGTERM, a terminated run, the warehouse going
    away) the row is finalized FAILED with the reason when the warehouse can still be written;
    when it cannot, the heartbeat stops and the next sync takes the row over.
    """
    if open_client is not None:
        company.require_syncable()
    stale_after = dt.timedelta(seconds=settings.sync_stale_after_seconds())
    sync_id = start_sync(engine, company.id, run_id, trigger, stale_after=stale_after, run_in_progress=run_in_progress)
    client: BillingoClient | None = None
    try:
        with SyncHeartbeat(engine, sync_id, settings.sync_heartbeat_seconds(), logger) as beat:
            fetch = None
            if open_client is not None:
                client = open_client(company)
                with client:
                    fetch = fetch_raw_documents(engine, company, client, sync_id, beat)
            normalized = normalize_raw_documents(engine, company.id, keepalive=beat)
            status = finish_sync(engine, sync_id, normalized.counts, normalized.errors)
    except SyncLockLostError as exc:
        # The row is someone else's now: leave it as they wrote it.
        raise CompanySyncError(str(exc)) from None
    except BaseException as exc:
        message = failure_message(exc)
        message = client.redact(message) if client is not None else message
        try:
            # A fetch that broke off has still spent requests of the company's rate limit.
            fail_sync(engine, sync_id, message, api_calls=client.stats.api_calls if client is not None else None)
        except Exception as recording:
            why = warehouse_error_summary(recording)
            same = isinstance(exc, sa.exc.SQLAlchemyError) and why == warehouse_error_summary(exc)
            message += (
                "; the sync-log row could not be marked FAILED " + ("either" if same else f"({why})")
                + ": the next sync takes it over"
            )
        if not isinstance(exc, Exception):
            raise  # an interruption goes on stopping the process
        raise CompanySyncError(message) from None
    return CompanySyncResult(company.slug, sync_id, status, fetch, normalized)
