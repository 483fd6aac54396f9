"""The sync of one company, in plain functions the Dagster asset calls (testable without Dagster).

One pass over each Billingo list endpoint (``endpoints``), a pipeline of three pages: a
background thread fetches the next page while this one prepares the current page (unchanged
documents, by hash, are only marked as seen; new and changed ones are normalized) and a writer
thread writes the previous one, with its raw payloads, in one transaction. Memory holds about
three pages, whatever the company's size.

Incremental by default: after a complete full sweep, a sync asks only for documents modified since
the company's cursor (``last_modified_date``) minus an overlap. The cursor is Billingo's own clock
(``GET /utils/time``) at the start of the newest sync that fetched completely, never this
machine's. A full sweep runs for the first sync, every ``BILLINGO_FULL_SWEEP_EVERY_DAYS``, when
normalization changed, and on demand (``full=True``); only a complete full sweep marks documents
deleted in source.

One poisoned document costs one document (column limits, then a refused batch written again one
document at a time). While it runs the sync-log row proves it is alive (``SyncHeartbeat``); an
interruption (SIGINT, SIGTERM, a terminated Dagster run) finalizes the row FAILED with the reason.
"""

from __future__ import annotations

import collections
import datetime as dt
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from concurrent.futures import wait as futures_wait
from dataclasses import dataclass, field, replace
from typing import TypeVar
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from . import settings
from .billingo_client import BillingoApiError, BillingoClient, SweepResult, sweep_documents
from .credentials import CredentialError
from .endpoints import ListEndpoint, PageContext, PageOutcome
from .endpoints.documents import NORMALIZATION_REVISION, renormalize_stored_documents
from .endpoints.payments import PaymentHistoryOutcome, sync_payment_histories
from .endpoints.registry import SYNC_ENDPOINTS
from .garbage_collection import fewer_collections
from .iterables import chunked
from .warehouse.companies import Company, CompanyError
from .warehouse.engine import warehouse_error_summary
from .warehouse.payments import record_payment_histories
from .warehouse.refusals import write_isolating_refusals  # noqa: F401 - part of this module's API
from .warehouse.sync_log import (
    FULL,
    INCREMENTAL,
    SyncCounts,
    SyncLockLostError,
    SyncProgress,
    fail_sync,
    finish_sync,
    heartbeat,
    one_line,
    EndpointCounts,
    endpoint_fully_swept,
    record_endpoint,
    record_fetch,
    record_plan,
    start_sync,
    sync_history,
    utcnow,
)

log = logging.getLogger(__name__)

BUDAPEST = ZoneInfo("Europe/Budapest")
# Billingo ids are positive; the warehouse keeps them in BIGINT columns.
MAX_DOCUMENT_ID = 2**63 - 1
# Pages fetched ahead of the writer: fetching overlaps writing, memory stays a page or two.
PREFETCH_PAGES = 1
# Page writes in flight at once, each in its own transaction and connection. On PostgreSQL a
# page's write mostly waits for the server (its COPYs parsed, indexed and logged), so while one
# page's rows are being processed the next can be sent; 20,000 documents: 7.7 -> 6.8 s, a third
# writer no better. SQLite takes one writer at a time: a second would only wait for the lock.
PAGE_WRITES_IN_FLIGHT = {"postgresql": 2}
# While it waits for Billingo's next page, the sync still reports the page writes that finish.
WAIT_TICK_SECONDS = 0.2
# How often a running sync's row gets its progress between pages (status and health show it).
PROGRESS_EVERY_SECONDS = 1.0
# The attribute of a progress line's log record that holds its SyncProgress: whoever handles the
# run's log records (the CLI's progress display) reads the numbers, not the text.
PROGRESS_RECORD_ATTR = "billingo_sync_progress"
# How long a sync that stops early waits for the page already handed to its writer.
PAGE_WRITE_DRAIN_SECONDS = 10

T = TypeVar("T")

# Failures whose message is already a clear, key-free sentence for the UI and the sync log.
EXPECTED_SYNC_ERRORS = (BillingoApiError, CredentialError, CompanyError)


class SyncHeartbeat:
    """Keeps a RUNNING sync-log row provably alive while the sync runs.

    A background thread refreshes ``heartbeat_at`` every ``interval`` seconds (a page can take
    minutes when Billingo is slow or rate-limits us), and ``beat`` refreshes it with progress
    between pages, at most every ``PROGRESS_EVERY_SECONDS``. When the row is no longer RUNNING
    (taken over as dead, or released by hand) the next write of either raises
    ``SyncLockLostError``, so this sync stops within a second of pages, and always before it marks
    anything missing (a forced beat), rather than write over a newer sync.
    """

    def __init__(self, engine: Engine, sync_id: int, interval_seconds: float, logger: logging.Logger | logging.LoggerAdapter | None = None):
        self.engine = engine
        self.sync_id = sync_id
        self.interval = interval_seconds
        self.log = logger or log
        self._stop = threading.Event()
        self._lost: SyncLockLostError | None = None
        self._warned = False
        self._last_beat = float("-inf")
        self._thread = threading.Thread(target=self._run, name=f"sync-heartbeat-{sync_id}", daemon=True)

    def __enter__(self) -> SyncHeartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def beat(self, *, force: bool = False, **progress: int) -> None:
        """Record progress and prove the row is still ours; between pages at most every
        ``PROGRESS_EVERY_SECONDS`` (a page can take milliseconds: a write per page would cost a
        first load a commit per page), always when ``force``d."""
        if self._lost is not None:
            raise self._lost
        now = time.monotonic()
        if not force and now - self._last_beat < PROGRESS_EVERY_SECONDS:
            return
        heartbeat(self.engine, self.sync_id, **progress)
        self._last_beat = now

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


class ProgressLog:
    """Per-page progress lines in the run's log (``acme-kft: page 37/150 · 3,700 of 15,000
    documents · 2 retries``): at most one every ``PROGRESS_EVERY_SECONDS`` per company, and always
    the last page, so a long sync is never silent and a fast one costs the event log few lines."""

    def __init__(self, logger: logging.Logger | logging.LoggerAdapter | None):
        self.log = logger or log
        self._last_line = float("-inf")
        self._last_text: str | None = None

    def report(self, progress: SyncProgress, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_line < PROGRESS_EVERY_SECONDS:
            return
        if force and progress.text() == self._last_text:
            return  # the last page was the line just logged (a sync of one page)
        self._last_line, self._last_text = now, progress.text()
        self.log.info(progress.line(), extra={PROGRESS_RECORD_ATTR: progress})


@dataclass(frozen=True)
class SyncPlan:
    """How a sync fetches: ``FULL`` or ``INCREMENTAL`` from ``modified_since`` (aware UTC)."""

    mode: str
    reason: str
    modified_since: dt.datetime | None = None


def plan_sync(
    engine: Engine,
    company_id: int,
    *,
    billingo_now: dt.datetime | None,
    full_requested: bool = False,
    full_sweep_every: dt.timedelta | None = None,
    overlap: dt.timedelta | None = None,
) -> SyncPlan:
    """Full or incremental, and why: a pure decision over the company's sync history."""
    full_sweep_every = full_sweep_every or dt.timedelta(days=settings.full_sweep_every_days())
    overlap = overlap or dt.timedelta(minutes=settings.incremental_overlap_minutes())
    history = sync_history(engine, company_id)
    now = billingo_now or utcnow()
    if full_requested:
        return SyncPlan(FULL, "a full sweep was asked for")
    if history.last_full_sweep_cursor is None:
        return SyncPlan(FULL, "no complete full sweep yet")
    if history.last_full_sweep_revision != NORMALIZATION_REVISION:
        return SyncPlan(FULL, "normalization changed since the last full sweep")
    age = now - history.last_full_sweep_cursor
    if age >= full_sweep_every:
        return SyncPlan(FULL, f"the last full sweep is {age.total_seconds() / 86400:.1f} days old (one runs every {full_sweep_every.total_seconds() / 86400:g})")
    return SyncPlan(INCREMENTAL, "documents modified since the cursor", modified_since=history.cursor - overlap)


def billingo_wall_time(instant: dt.datetime) -> str:
    """``instant`` as Billingo's ``last_modified_date`` takes it: ``Y-m-d H:i:s``, Budapest time.

    In the autumn hour that Budapest lives twice, a wall time names two instants and Billingo may
    read the later one: an hour earlier is asked for then, so nothing in between is missed.
    """
    local = instant.astimezone(BUDAPEST)
    if local.replace(fold=0).utcoffset() != local.replace(fold=1).utcoffset():
        local = (instant - dt.timedelta(hours=1)).astimezone(BUDAPEST)
    return local.strftime("%Y-%m-%d %H:%M:%S")


def prefetched(
    pages: Iterable[T], *, depth: int = PREFETCH_PAGES, while_waiting: Callable[[], None] | None = None,
) -> Iterator[T]:
    """``pages``, produced by a background thread up to ``depth`` ahead of the consumer.
    ``while_waiting`` is called in the consumer's thread every ``WAIT_TICK_SECONDS`` that it
    waits for the next page (what it raises is raised to the consumer).

    An exception of the producer is raised in the consumer; when the consumer stops (an error,
    an interruption) the producer is told to stop at its next page and is not waited for long
    (it may be inside an HTTP request; it is a daemon thread and its client is closed).
    """
    handoff: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                handoff.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for page in pages:
                if not put(("page", page)):
                    return
            put(("end", None))
        except BaseException as exc:  # handed to the consumer, which decides
            put(("error", exc))

    producer = threading.Thread(target=produce, name="billingo-prefetch", daemon=True)
    producer.start()
    try:
        while True:
            try:
                kind, value = handoff.get(timeout=None if while_waiting is None else WAIT_TICK_SECONDS)
            except queue.Empty:
                while_waiting()
                continue
            if kind == "page":
                yield value
            elif kind == "end":
                return
            else:
                raise value
    finally:
        stop.set()
        producer.join(timeout=1)


def in_background(name: str, function: Callable[..., T], *args: object) -> Future:
    """``function(*args)`` in a daemon thread of its own; its result or exception in the future.
    A daemon, unlike an executor's worker: a process stopping (an interruption) never waits at
    exit for a write stuck on an unreachable warehouse."""
    future: Future = Future()

    def run() -> None:
        if future.set_running_or_notify_cancel():
            try:
                future.set_result(function(*args))
            except BaseException as exc:  # handed to whoever waits on the future
                future.set_exception(exc)

    threading.Thread(target=run, name=name, daemon=True).start()
    return future


@dataclass
class FetchOutcome:
    mode: str
    api_calls: int
    pages_fetched: int
    documents_fetched: int
    complete: bool
    marked_missing: int
    duration_seconds: float
    errors: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    plan_reason: str = ""  # why this mode (SyncPlan.reason): on the materialization, not a log event per company


@dataclass
class NormalizeOutcome:
    counts: SyncCounts
    restored: int
    duration_seconds: float
    errors: list[dict] = field(default_factory=list)


def _usable_document_id(document: object) -> int | None:
    document_id = document.get("id") if isinstance(document, dict) else None
    if isinstance(document_id, int) and not isinstance(document_id, bool) and 0 < document_id <= MAX_DOCUMENT_ID:
        return document_id
    return None


def sync_endpoint(
    engine: Engine,
    company: Company,
    client: BillingoClient,
    endpoint: ListEndpoint,
    sync_id: int,
    plan: SyncPlan,
    keepalive: SyncHeartbeat | None = None,
    logger: logging.Logger | logging.LoggerAdapter | None = None,
    *,
    progress_columns: bool = True,
) -> tuple[FetchOutcome, NormalizeOutcome]:
    """One pass over ``endpoint``: fetch (a page ahead), prepare and write page by page (the
    write a page behind), and after a complete full sweep mark what Billingo no longer returns.
    Each written page is progress: on the sync-log row (``keepalive``) and in ``logger`` when
    ``progress_columns`` (the row's progress columns are one sweep's: the documents'), else only
    the heartbeat. Its counts become the sync's ``sync_log_endpoints`` row."""
    started = time.monotonic()
    calls_before, pages_before = client.stats.api_calls, client.stats.pages_fetched
    sweep = SweepResult()
    filters = dict(endpoint.filters)
    # An endpoint read by subset (spendings) is read whole until one complete read of it exists
    # (its first sync, or the first after it was added to a company already syncing documents).
    incremental = plan.mode == INCREMENTAL and not endpoint.always_full and (
        endpoint.incremental is None or endpoint_fully_swept(engine, company.id, endpoint.name)
    )
    if incremental and endpoint.modified_since_filter:
        filters[endpoint.modified_since_filter] = billingo_wall_time(plan.modified_since)
    if incremental and endpoint.incremental is not None:
        filters.update(endpoint.incremental.filters)
    total = PageOutcome()
    fetch_errors: list[dict] = []
    seen_ids: set[int] = set()
    fetched = 0
    nothing_stored = endpoint.stores_nothing is not None and endpoint.stores_nothing(engine, company.id)
    pages = chunked(sweep_documents(client, sweep, path=endpoint.path, **filters), client.page_size)
    # Three stages at once: the prefetch thread fetches page N+2 while this thread prepares page
    # N+1 (hashing, normalizing) and writer threads write page N (and N-1 on PostgreSQL). The
    # other threads spend most of their time outside the GIL (in the socket, in the database).
    # Pages are written whole and in any order (each holds other documents); their outcomes are
    # counted in page order.
    writing: collections.deque[Future] = collections.deque()
    writes_in_flight = PAGE_WRITES_IN_FLIGHT.get(engine.dialect.name, 1)
    progress_log = ProgressLog(logger)

    handed_on = 0  # pages (batches of a page's size) handed to prepare, counted with `fetched`

    def progress(finished: bool = False) -> SyncProgress:
        # The fetch runs up to two pages ahead of the writes: pages and documents are both counted
        # as handed on, so a line never says "page 3/3" beside the documents of page 2.
        return SyncProgress(
            company=company.slug, pages_fetched=handed_on, pages_total=sweep.reported_last_page,
            documents_fetched=fetched, documents_total=sweep.reported_total, retries=client.stats.retries,
            finished=finished,
        )

    def written(pending: Future) -> None:
        total.add(pending.result())
        if not progress_columns:
            if keepalive is not None:
                keepalive.beat()  # the row's api_calls stay the documents'
            return
        now = progress()
        if keepalive is not None:
            keepalive.beat(api_calls=client.stats.api_calls, **now.columns())
        progress_log.report(now)

    def finished_writes() -> None:
        while writing and writing[0].done():
            written(writing.popleft())

    try:
        for batch in prefetched(pages, while_waiting=finished_writes):
            usable: list[tuple[int, dict]] = []
            for item in batch:
                item_id = _usable_document_id(item)
                if item_id is None:
                    shown = item.get("id") if isinstance(item, dict) else None
                    fetch_errors.append({"document_id": None, "message": f"{endpoint.name} item without a usable id (id={shown!r:.40}): not stored"})
                    continue
                usable.append((item_id, item))
                seen_ids.add(item_id)
            fetched += len(usable)
            handed_on += 1
            context = PageContext(company.id, sync_id, utcnow(), nothing_stored=nothing_stored)
            prepared = endpoint.prepare_page(engine, context, usable)
            finished_writes()
            while len(writing) >= writes_in_flight:
                written(writing.popleft())
            writing.append(in_background(f"sync-writer-{sync_id}", endpoint.write_page, engine, context, prepared))
        while writing:
            written(writing.popleft())
        if progress_columns:
            progress_log.report(progress(finished=True), force=True)
    except BaseException:
        if writing:
            # The pages in the writers were fetched before whatever stopped the sync, and are kept
            # as a sync that stored each page as it came would keep them; waited for only so long
            # (each is one transaction: it lands whole or not at all), the failure is reported
            # either way.
            futures_wait(writing, timeout=PAGE_WRITE_DRAIN_SECONDS)
        raise

    marked_deleted = 0
    if sweep.complete and incremental and endpoint.incremental is not None:
        # What left the subset since the last sync is re-read one by one (after the sweep, whose
        # pages are all written: none of these can be in flight twice).
        context = PageContext(company.id, sync_id, utcnow())
        found, gone = [], []
        for item_id in endpoint.incremental.left_subset(engine, context):
            try:
                found.append((item_id, client.get_item(endpoint.path, item_id)))
            except BillingoApiError as exc:
                if exc.status != 404:
                    raise
                gone.append(item_id)
        for batch in chunked(found, client.page_size):
            total.add(endpoint.write_page(engine, context, endpoint.prepare_page(engine, context, batch)))
        fetched += len(found)
        marked_deleted += endpoint.incremental.mark_missing(engine, context, gone) if gone else 0
    if sweep.complete and not incremental:
        if keepalive is not None:
            keepalive.beat(force=True)  # still ours: a sync taken over must not mark the taker's documents missing
        vanished_while_paging = sorted(seen_ids - sweep.final_pass_ids)
        marked_deleted = endpoint.mark_vanished(engine, PageContext(company.id, sync_id, utcnow()), vanished_while_paging)
    duration = time.monotonic() - started
    mode = INCREMENTAL if incremental else FULL
    fetch = FetchOutcome(
        mode=mode,
        api_calls=client.stats.api_calls - calls_before,
        pages_fetched=client.stats.pages_fetched - pages_before,
        documents_fetched=fetched,
        complete=sweep.complete,
        marked_missing=marked_deleted,
        duration_seconds=duration,
        errors=fetch_errors,
        notes=sweep.notes,
        plan_reason=plan.reason,
    )
    if progress_columns:
        record_fetch(
            engine,
            sync_id,
            api_calls=client.stats.api_calls,
            pages_fetched=fetch.pages_fetched,
            documents_fetched=fetch.documents_fetched,
            fetch_complete=fetch.complete,
            errors=fetch_errors,
            pages_total=sweep.reported_last_page,
            documents_total=sweep.reported_total,
        )
    counts = SyncCounts(
        processed=fetched,
        created=total.created,
        updated=total.updated,
        skipped=total.skipped,
        failed=len(total.errors),
        marked_deleted=marked_deleted,
        items_written=total.items_written,
    )
    record_endpoint(engine, sync_id, company.id, EndpointCounts.of(endpoint.name, fetch, counts, fetch_errors))
    # The fetch errors of an endpoint whose errors the sync-log row does not record (record_fetch)
    # count with its normalize errors.
    errors = total.errors if progress_columns else [*fetch_errors, *total.errors]
    return fetch, NormalizeOutcome(counts=counts, restored=total.restored, duration_seconds=duration, errors=errors)


class CompanySyncError(Exception):
    """A company's sync failed; the message is one key-free line, already in the sync log when it could be written."""


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


@dataclass
class CompanySyncResult:
    company: str
    sync_id: int
    status: str
    fetch: FetchOutcome | None  # the documents' sweep (its api_calls include the clock's)
    normalize: NormalizeOutcome | None
    payments: PaymentHistoryOutcome | None = None
    # Every other endpoint swept (endpoint name -> its outcomes), in sweep order.
    endpoints: dict[str, tuple[FetchOutcome, NormalizeOutcome]] = field(default_factory=dict)


def _billingo_time(client: BillingoClient, logger) -> dt.datetime | None:
    """Billingo's clock, or None when it cannot be read: the sync then runs without advancing
    the cursor (the next one starts from the previous cursor, which is only more overlap)."""
    try:
        return client.get_server_time()
    except BillingoApiError as exc:
        if exc.status is not None and exc.status != 429:
            raise  # a refused key or subscription: no page would be served either
        (logger or log).warning(f"Billingo's clock could not be read, the cursor is not advanced: {exc}")
        return None


def sync_company(
    engine: Engine,
    company: Company,
    *,
    run_id: str,
    trigger: str,
    open_client: Callable[[Company], BillingoClient] | None,
    run_in_progress: Callable[[str], bool | None] | None = None,
    logger: logging.Logger | logging.LoggerAdapter | None = None,
    full: bool = False,
) -> CompanySyncResult:
    """One company's sync with its sync-log row: RUNNING first, then COMPLETED/PARTIAL/FAILED.

    ``open_client=None`` re-normalizes what is already stored, without calling Billingo.
    ``full=True`` forces a full sweep (else ``plan_sync`` decides).
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
    entity_errors: list[dict] = []  # of the endpoints after documents: each fails alone (PARTIAL)
    swept: dict[str, tuple[FetchOutcome, NormalizeOutcome]] = {}
    try:
        with fewer_collections(), SyncHeartbeat(engine, sync_id, settings.sync_heartbeat_seconds(), logger) as beat:
            if open_client is None:
                renormalized = renormalize_stored_documents(engine, company.id)
                fetch = payments = None
                normalized = NormalizeOutcome(
                    renormalized.counts, renormalized.restored, renormalized.duration_seconds, renormalized.errors
                )
            else:
                client = open_client(company)
                with client:
                    billingo_now = _billingo_time(client, logger)
                    plan = plan_sync(engine, company.id, billingo_now=billingo_now, full_requested=full)
                    record_plan(
                        engine, sync_id, mode=plan.mode, modified_since=plan.modified_since, cursor=billingo_now,
                        normalization_revision=NORMALIZATION_REVISION,
                    )
                    # Documents first: the sync-log row's counts, progress and cursor are theirs.
                    documents, *others = SYNC_ENDPOINTS
                    fetch, normalized = sync_endpoint(engine, company, client, documents, sync_id, plan, beat, logger)
                    fetch.api_calls = client.stats.api_calls  # the clock's too, as the sync-log row has them
                    for endpoint in others:
                        swept[endpoint.name] = sync_endpoint(
                            engine, company, client, endpoint, sync_id, plan, beat, logger, progress_columns=False
                        )
                        entity_errors.extend(swept[endpoint.name][1].errors)
                    # Last: what the cap leaves is deferred to the next sync, never lost.
                    payments, normalized = _payment_histories(engine, company, client, sync_id, beat, normalized)
            status = finish_sync(engine, sync_id, normalized.counts, normalized.errors, other_errors=entity_errors)
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
    return CompanySyncResult(company.slug, sync_id, status, fetch, normalized, payments=payments, endpoints=swept)


def _payment_histories(
    engine: Engine, company: Company, client: BillingoClient, sync_id: int, beat: SyncHeartbeat, normalized: NormalizeOutcome,
) -> tuple[PaymentHistoryOutcome, NormalizeOutcome]:
    """After the sweeps: the payment histories that are due, within the per-sync cap; a history
    that could not be fetched or stored is one failed document of the sync (it stays due)."""
    payments = sync_payment_histories(
        engine, company.id, client, sync_id, cap=settings.payment_histories_per_sync(), progress=beat.beat,
    )
    record_payment_histories(engine, sync_id, payments.api_calls, payments.fetched, payments.deferred)
    if payments.errors:
        counts = replace(normalized.counts, failed=normalized.counts.failed + len(payments.errors))
        normalized = replace(normalized, counts=counts, errors=[*normalized.errors, *payments.errors])
    return payments, normalized
