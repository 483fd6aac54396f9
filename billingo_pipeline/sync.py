"""The sync of one company, in plain functions the Dagster asset calls (testable without Dagster).

1. ``fetch_raw_documents``: sweep ``GET /documents`` page by page and upsert each page's payloads
   into the raw table as it arrives (memory holds one page). A complete sweep marks documents
   Billingo no longer returns as missing.
2. ``normalize_raw_documents``: compare every raw document's hash with the hash its invoice was
   built from; normalize only new or changed ones (pure functions), write invoices and items in
   bulk, one transaction per batch; record per-document errors without stopping.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

from sqlalchemy.engine import Engine

from .billingo_client import BillingoApiError, BillingoClient, SweepResult, sweep_documents
from .credentials import CredentialError
from .normalize import DocumentError, change_hash, normalize_document
from .warehouse import documents as store
from .warehouse.companies import Company, CompanyError
from .warehouse.sync_log import SyncCounts, fail_sync, finish_sync, record_fetch, start_sync, utcnow

# Bump when normalization changes meaning: every invoice is then rebuilt once from its raw payload,
# even though Billingo's content did not change.
NORMALIZATION_REVISION = 1
NORMALIZE_BATCH_SIZE = 500

T = TypeVar("T")

# Failures whose message is already a clear, key-free sentence for the UI and the sync log.
EXPECTED_SYNC_ERRORS = (BillingoApiError, CredentialError, CompanyError)


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


def fetch_raw_documents(engine: Engine, company: Company, client: BillingoClient, sync_id: int) -> FetchOutcome:
    started = time.monotonic()
    sweep = SweepResult()
    errors: list[dict] = []
    fetched = 0

    def store_batch(batch: list[tuple[int, dict, str]]) -> None:
        with engine.begin() as conn:
            store.upsert_raw_documents(conn, company.id, sync_id, batch, utcnow())

    pending: list[tuple[int, dict, str]] = []
    for document in sweep_documents(client, sweep):
        document_id = document.get("id") if isinstance(document, dict) else None
        if not isinstance(document_id, int) or isinstance(document_id, bool) or document_id <= 0:
            errors.append({"document_id": None, "message": f"document without a usable id (id={document_id!r}): not stored"})
            continue
        pending.append((document_id, document, change_hash(document)))
        fetched += 1
        if len(pending) >= client.page_size:
            store_batch(pending)
            pending = []
    if pending:
        store_batch(pending)

    marked_missing = 0
    if sweep.complete:
        with engine.begin() as conn:
            marked_missing = store.mark_unseen_raw_documents(conn, company.id, sync_id, utcnow())
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


def normalize_raw_documents(engine: Engine, company_id: int, *, batch_size: int = NORMALIZE_BATCH_SIZE) -> NormalizeOutcome:
    started = time.monotonic()
    with engine.connect() as conn:
        states = store.raw_document_states(conn, company_id)

    present = [s for s in states if s.missing_since is None]
    changed = [s for s in present if s.source_hash != invoice_source_hash(s.content_hash)]
    is_new = {s.document_id: s.source_hash is None for s in changed}
    newly_missing = [s.document_id for s in states if s.missing_since is not None and s.source_hash is not None and s.deleted_in_source_at is None]
    seen_again = {s.document_id for s in present if s.deleted_in_source_at is not None}

    # A document back and changed is restored by its own upsert (which clears the mark), the
    # others by the update below: count both.
    created = updated = items_written = restored = 0
    errors: list[dict] = []
    for batch_ids in chunked((s.document_id for s in changed), batch_size):
        with engine.connect() as conn:
            payloads = store.raw_payloads(conn, company_id, batch_ids)
        invoice_rows: list[dict] = []
        item_rows: list[dict] = []
        for row in payloads:
            try:
                normalized = normalize_document(row.payload)
            except DocumentError as exc:
                errors.append({"document_id": row.document_id, "message": exc.message})
                continue
            if normalized.document_id != row.document_id:
                errors.append({"document_id": row.document_id, "message": "payload id differs from the stored id"})
                continue
            invoice_rows.append({**normalized.invoice, "source_hash": invoice_source_hash(row.content_hash)})
            item_rows.extend({**item, "document_id": normalized.document_id} for item in normalized.items)
            if is_new[row.document_id]:
                created += 1
            else:
                updated += 1
            restored += row.document_id in seen_again
        with engine.begin() as conn:
            store.write_invoices_with_items(conn, company_id, invoice_rows, item_rows, utcnow())
        items_written += len(item_rows)

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
    """A company's sync failed; the message is key-free and already in the sync log."""


@dataclass
class CompanySyncResult:
    company: str
    sync_id: int
    status: str
    fetch: FetchOutcome | None
    normalize: NormalizeOutcome | None


def sync_company(
    engine: Engine,
    company: Company,
    *,
    run_id: str,
    trigger: str,
    open_client: Callable[[Company], BillingoClient] | None,
) -> CompanySyncResult:
    """One company's sync with its sync-log row: RUNNING first, then COMPLETED/PARTIAL/FAILED.

    ``open_client=None`` re-normalizes what is already stored, without calling Billingo.
    """
    if open_client is not None:
        company.require_syncable()
    sync_id = start_sync(engine, company.id, run_id, trigger)
    client: BillingoClient | None = None
    try:
        fetch = None
        if open_client is not None:
            client = open_client(company)
            with client:
                fetch = fetch_raw_documents(engine, company, client, sync_id)
        normalized = normalize_raw_documents(engine, company.id)
        status = finish_sync(engine, sync_id, normalized.counts, normalized.errors)
    except Exception as exc:
        message = str(exc) if isinstance(exc, EXPECTED_SYNC_ERRORS) else f"{type(exc).__name__}: {exc}"
        message = client.redact(message) if client is not None else message
        # A fetch that broke off has still spent requests of the company's rate limit.
        fail_sync(engine, sync_id, message, api_calls=client.stats.api_calls if client is not None else None)
        raise CompanySyncError(message) from None
    return CompanySyncResult(company.slug, sync_id, status, fetch, normalized)
