"""``GET /documents``: issued documents (invoices, proformas, receipts, ...) with their items.

A page is prepared (what is stored of its documents is read, each is hashed, the new and changed
ones normalized) and then written in one transaction: for every document that is new or changed
(by its change hash, blind to Billingo's fake ``paid_date``), the raw payload, the invoice and
its items; the unchanged ones are only marked as seen. Normalization is the pure ``normalize.normalize_document``,
checked against what the warehouse columns can hold, so one poisoned document fails alone.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy.engine import Connection, Engine

from ..iterables import chunked
from ..normalize import DocumentError, normalize_document
from ..warehouse import documents as store
from ..warehouse import payments as payment_store
from ..warehouse.refusals import write_isolating_refusals
from ..warehouse.schema import WAREHOUSE_ROW_LIMITS
from ..warehouse.sync_log import SyncCounts, utcnow
from . import ListEndpoint, PageContext, PageOutcome

# Bump when normalization changes meaning: every invoice is then rebuilt once from its raw payload
# (the next sync is a full sweep), even though Billingo's content did not change.
NORMALIZATION_REVISION = 1
NORMALIZE_BATCH_SIZE = 500


def invoice_source_hash(raw_content_hash: str) -> str:
    """What an invoice row remembers it was built from: the raw hash under this normalization."""
    return hashlib.sha256(f"{NORMALIZATION_REVISION}:{raw_content_hash}".encode()).hexdigest()


@dataclass
class _Document:
    """One new or changed document of a page, ready to write."""

    document_id: int
    raw: store.RawDocument | None  # None when only the invoice and items are rebuilt
    invoice: dict | None  # None: normalization failed, only the raw payload is stored
    items: list[dict] = field(default_factory=list)


def _unchanged(state, content_hash: str) -> bool:
    return (
        state is not None
        and state.content_hash == content_hash
        and state.source_hash == invoice_source_hash(content_hash)
        and state.missing_since is None
        and state.deleted_in_source_at is None
    )


@dataclass
class PreparedDocumentPage:
    """A page decided and normalized (``prepare_document_page``), ready for its writes."""

    unchanged: list[int]  # only marked as seen
    to_write: list[_Document]  # new or changed, with their raw payload
    kinds: dict[int, str]  # document id -> "created" / "updated" / "unchanged" (rewritten to clear a mark)
    restoring: set[int]  # marked deleted in source before, returned again
    first_seen: set[int]  # no raw row stored yet
    errors: list[dict]  # documents whose normalization failed (their raw payload is still written)
    # Written with their invoice: its status-history row when the tracked state changed, and
    # whether its payment history is now due.
    status_rows: dict[int, dict] = field(default_factory=dict)
    payments_due: set[int] = field(default_factory=set)


def prepare_document_page(engine: Engine, page: PageContext, documents: Sequence[tuple[int, dict]]) -> PreparedDocumentPage:
    """What to do with each document of the page, by its change hash against what is stored;
    normalization of the new and changed ones. Reads the warehouse, writes nothing."""
    states = {}
    if not page.nothing_stored:
        with engine.connect() as conn:
            states = store.document_states(conn, page.company_id, [document_id for document_id, _ in documents])
    prepared = PreparedDocumentPage([], [], {}, set(), set(), [])
    for document_id, payload in documents:
        raw = store.raw_document(document_id, payload)
        content_hash = raw.content_hash
        state = states.get(document_id)
        if _unchanged(state, content_hash):
            prepared.unchanged.append(document_id)
            continue
        document = _Document(document_id, raw, None)
        if state is None:
            prepared.first_seen.add(document_id)
        try:
            normalized = normalize_document(payload, WAREHOUSE_ROW_LIMITS)
        except DocumentError as exc:
            prepared.errors.append({"document_id": document_id, "message": exc.message})
        else:
            document.invoice = {**normalized.invoice, "source_hash": invoice_source_hash(content_hash)}
            document.items = [{**item, "document_id": document_id} for item in normalized.items]
            kind = "created" if state is None or state.source_hash is None else "updated"
            if state is not None and state.content_hash == content_hash and state.source_hash == invoice_source_hash(content_hash):
                # Rewritten only to clear a missing/deleted mark: Billingo did not change it, so
                # it counts as unchanged (and restored), never as updated.
                kind = "unchanged"
            prepared.kinds[document_id] = kind
            before = (
                payment_store.TrackedState(state.payment_status, state.paid_date, bool(state.cancelled))
                if state is not None and state.source_hash is not None else None
            )
            after = payment_store.tracked_state(document.invoice)
            if payment_store.status_change(before, after):
                prepared.status_rows[document_id] = {
                    "document_id": document_id, **after._asdict(),
                    "previous_payment_status": before.payment_status if before is not None else None,
                }
            if payment_store.payments_due(before, after):
                prepared.payments_due.add(document_id)
            if state is not None and state.deleted_in_source_at is not None:
                prepared.restoring.add(document_id)
        prepared.to_write.append(document)
    return prepared


def write_document_page(engine: Engine, page: PageContext, prepared: PreparedDocumentPage) -> PageOutcome:
    """The page's writes: every new or changed document's raw payload, invoice and items in one
    transaction (one the database refuses is written alone, ``write_isolating_refusals``), and
    the unchanged ones marked as seen."""
    outcome = PageOutcome(errors=list(prepared.errors))

    def write(conn: Connection, batch: Sequence[_Document], assume_new: bool) -> None:
        # A first load's pages hold only documents the warehouse has never seen: the writers
        # then insert instead of upserting (and still upsert if one was stored after all).
        store.upsert_raw_documents(
            conn, page.company_id, page.sync_id, [d.raw for d in batch], page.now,
            new=assume_new and all(d.document_id in prepared.first_seen for d in batch),
        )
        with_invoice = [d for d in batch if d.invoice is not None]
        new_invoices = assume_new and all(prepared.kinds[d.document_id] == "created" for d in with_invoice)
        store.write_invoices_with_items(
            conn, page.company_id, [d.invoice for d in with_invoice], [i for d in with_invoice for i in d.items], page.now,
            new=new_invoices,
        )
        # The status history and the payments-due marks in the invoices' own transaction: no
        # reader sees an invoice's new status without the history row that records the change.
        payment_store.insert_status_history(
            conn, page.company_id, page.sync_id,
            [prepared.status_rows[d.document_id] for d in with_invoice if d.document_id in prepared.status_rows], page.now,
        )
        payment_store.mark_payments_due(
            conn, page.company_id, page.sync_id,
            [d.document_id for d in with_invoice if d.document_id in prepared.payments_due], page.now,
            new=new_invoices,
        )

    if prepared.unchanged:
        with engine.begin() as conn:
            store.touch_raw_documents(conn, page.company_id, page.sync_id, prepared.unchanged, page.now)
    refused = write_isolating_refusals(engine, prepared.to_write, write, lambda d: d.document_id)
    if refused:
        # Billingo still has them: what was stored of them before must not look vanished to the
        # full sweep's end (it marks every raw row this sync did not see).
        with engine.begin() as conn:
            store.touch_raw_documents(conn, page.company_id, page.sync_id, sorted(refused), page.now)
    for document in prepared.to_write:
        if document.document_id in refused:
            outcome.errors.append({"document_id": document.document_id, "message": f"not stored: {refused[document.document_id]}"})
        elif document.invoice is not None:
            kind = prepared.kinds[document.document_id]
            if kind == "created":
                outcome.created += 1
            elif kind == "unchanged":
                outcome.skipped += 1
            else:
                outcome.updated += 1
            outcome.restored += document.document_id in prepared.restoring
            outcome.items_written += len(document.items)
    outcome.skipped += len(prepared.unchanged)
    return outcome


def mark_vanished_documents(engine: Engine, page: PageContext, vanished_while_paging: Sequence[int]) -> int:
    """After a complete full sweep: every stored document this sync did not see, and those an
    earlier pass saw but the complete final pass did not (drafts deleted while we paged), are
    missing in Billingo; their invoices become deleted in source. Returns how many invoices."""
    with engine.begin() as conn:
        store.mark_unseen_raw_documents(conn, page.company_id, page.sync_id, page.now)
        for ids in chunked(vanished_while_paging, NORMALIZE_BATCH_SIZE):
            store.mark_raw_documents_missing(conn, page.company_id, ids, page.now)
        return store.mark_invoices_of_missing_documents(conn, page.company_id, page.now)


def stores_no_documents(engine: Engine, company_id: int) -> bool:
    with engine.connect() as conn:
        return store.stores_no_raw_documents(conn, company_id)


DOCUMENTS = ListEndpoint(
    name="documents",
    path="/documents",
    modified_since_filter="last_modified_date",
    prepare_page=prepare_document_page,
    write_page=write_document_page,
    mark_vanished=mark_vanished_documents,
    stores_nothing=stores_no_documents,
)


@dataclass
class RenormalizeOutcome:
    counts: SyncCounts
    restored: int
    duration_seconds: float
    errors: list[dict] = field(default_factory=list)


def renormalize_stored_documents(engine: Engine, company_id: int, *, batch_size: int = NORMALIZE_BATCH_SIZE) -> RenormalizeOutcome:
    """Rebuild invoices and items from the stored raw payloads, without calling Billingo: for the
    invoices/items assets materialized alone. Only documents whose invoice is stale are rebuilt."""
    started = time.monotonic()
    with engine.connect() as conn:
        states = store.raw_document_states(conn, company_id)
    present = [s for s in states if s.missing_since is None]
    stale = [s for s in present if s.source_hash != invoice_source_hash(s.content_hash)]
    is_new = {s.document_id: s.source_hash is None for s in stale}

    def write(conn: Connection, batch: Sequence[_Document], assume_new: bool) -> None:
        store.write_invoices_with_items(
            conn, company_id, [d.invoice for d in batch], [i for d in batch for i in d.items], utcnow()
        )

    created = updated = items_written = 0
    errors: list[dict] = []
    for batch_ids in chunked((s.document_id for s in stale), batch_size):
        with engine.connect() as conn:
            payloads = store.raw_payloads(conn, company_id, batch_ids)
        batch: list[_Document] = []
        for row in payloads:
            try:
                normalized = normalize_document(row.payload, WAREHOUSE_ROW_LIMITS)
            except DocumentError as exc:
                errors.append({"document_id": row.document_id, "message": exc.message})
                continue
            batch.append(_Document(
                row.document_id, None,
                {**normalized.invoice, "source_hash": invoice_source_hash(row.content_hash)},
                [{**item, "document_id": row.document_id} for item in normalized.items],
            ))
        refused = write_isolating_refusals(engine, batch, write, lambda d: d.document_id)
        for document in batch:
            if document.document_id in refused:
                errors.append({"document_id": document.document_id, "message": f"not stored: {refused[document.document_id]}"})
                continue
            created += is_new[document.document_id]
            updated += not is_new[document.document_id]
            items_written += len(document.items)
    counts = SyncCounts(
        processed=len(present), created=created, updated=updated, skipped=len(present) - len(stale),
        failed=len(errors), items_written=items_written,
    )
    return RenormalizeOutcome(counts, 0, time.monotonic() - started, errors)
