"""Payment histories, their "due" marks and the invoices' payment-status history: one company at a time.

The status history is append-only: a row per observed change of an invoice's payment status,
paid date or cancelled flag (``status_changes`` decides, the page writer inserts them in the
invoice's own transaction). A document whose payment history should be fetched gets a due mark
in the same transaction; the mark is cleared only by the fetch that stores the history
(``replace_payments``), so a sync stopped by its cap, an error or an interruption loses nothing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from . import bulk
from .schema import billingo_document_payments as payments
from .schema import billingo_invoice_status_history as history
from .schema import billingo_payment_history_state as state
from .schema import sync_log

# What makes a status-history row: a change of any of these (first observation included).
TRACKED_FIELDS = ("payment_status", "paid_date", "cancelled")
# A payment history is worth fetching for a document in this state even when nothing else changed.
PART_PAID = "partially_paid"


class TrackedState(NamedTuple):
    payment_status: str | None
    paid_date: dt.date | None
    cancelled: bool


def tracked_state(invoice: Mapping) -> TrackedState:
    return TrackedState(invoice.get("payment_status"), invoice.get("paid_date"), bool(invoice.get("cancelled")))


def status_change(before: TrackedState | None, after: TrackedState) -> bool:
    """Whether ``after`` is a new observation for the history: the first one, or any tracked field moved.

    ``paid_date`` is compared as normalized (only kept for paid and partially paid documents),
    so the date Billingo shows for unpaid ones is never a change."""
    return before is None or before != after


def payments_due(before: TrackedState | None, after: TrackedState) -> bool:
    """Whether this observation makes the document's payment history due: a first-seen or
    changed partially paid document, or a payment status or paid date that moved."""
    if before is None:
        return after.payment_status == PART_PAID
    if before == after:
        return False
    return (
        after.payment_status == PART_PAID
        or before.payment_status != after.payment_status
        or before.paid_date != after.paid_date
    )


def insert_status_history(conn: Connection, company_id: int, sync_id: int | None, rows: Sequence[dict], now: dt.datetime) -> None:
    """Append observations ``{document_id, payment_status, paid_date, cancelled, previous_payment_status}``."""
    if rows:
        bulk.insert_many(conn, history, [{**row, "company_id": company_id, "sync_id": sync_id, "observed_at": now} for row in rows])


def mark_payments_due(
    conn: Connection, company_id: int, sync_id: int, document_ids: Sequence[int], now: dt.datetime, *, new: bool = False,
) -> None:
    """Mark these documents' payment histories due (an existing mark keeps its earlier time).
    ``new``: they are invoices just inserted, so none has a state row yet, as far as the caller read."""
    if not document_ids:
        return
    inserted_new = bulk.upsert_many(
        conn,
        state,
        [{"company_id": company_id, "document_id": d, "due_since": now, "due_sync_id": sync_id, "not_found": False} for d in document_ids],
        conflict_columns=("company_id", "document_id"),
        update_columns=("due_sync_id",),
        new_keys=new,
    )
    if inserted_new:
        return  # inserted as they are: every row has its due_since
    conn.execute(
        state.update()
        .where(state.c.company_id == company_id, state.c.document_id.in_(list(document_ids)), state.c.due_since.is_(None))
        .values(due_since=now)
    )


def due_documents(conn: Connection, company_id: int, limit: int) -> list[int]:
    """The documents whose payment history is due, the longest-waiting first."""
    return list(conn.execute(
        sa.select(state.c.document_id)
        .where(state.c.company_id == company_id, state.c.due_since.is_not(None))
        .order_by(state.c.due_since, state.c.document_id)
        .limit(limit)
    ).scalars())


def count_due(conn: Connection, company_id: int) -> int:
    return conn.execute(
        sa.select(sa.func.count()).select_from(state).where(state.c.company_id == company_id, state.c.due_since.is_not(None))
    ).scalar_one()


def replace_payments(
    conn: Connection, company_id: int, sync_id: int, document_id: int, rows: Iterable[dict], now: dt.datetime,
    *, not_found: bool = False,
) -> None:
    """The document's payment history as just fetched (``rows``: normalized payments in Billingo's
    order), replacing what was stored, and its due mark cleared; inside the caller's transaction.
    ``not_found``: Billingo no longer has the document; its stored payments are kept."""
    if not not_found:
        conn.execute(payments.delete().where(payments.c.company_id == company_id, payments.c.document_id == document_id))
        values = [
            {**row, "company_id": company_id, "document_id": document_id, "position": position, "fetched_at": now, "sync_id": sync_id}
            for position, row in enumerate(rows, start=1)
        ]
        if values:
            bulk.insert_many(conn, payments, values)
    changes = {"due_since": None, "due_sync_id": None, "not_found": not_found}
    if not not_found:
        changes.update(fetched_at=now, fetched_sync_id=sync_id)
    conn.execute(state.update().where(state.c.company_id == company_id, state.c.document_id == document_id).values(**changes))


def record_payment_histories(engine: Engine, sync_id: int, calls: int, fetched: int, deferred: int) -> None:
    """The sync-log row's payment-history figures."""
    with engine.begin() as conn:
        conn.execute(
            sync_log.update().where(sync_log.c.id == sync_id).values(
                payment_history_calls=calls, payment_histories_fetched=fetched, payment_histories_deferred=deferred,
            )
        )
