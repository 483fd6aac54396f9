"""``GET /documents/{id}/payments``: the payment histories of the documents that need one.

Not a list endpoint: one request per document, so a sync fetches only the histories that are due
(``warehouse.payments``: a partially paid document seen new or changed, a payment status or paid
date that moved), the longest-waiting first and at most ``settings.payment_histories_per_sync()``
of them; the rest stay due and are counted as deferred. Each history replaces the document's stored
payments and clears its mark in one transaction. The requests go through the sync's client, so
its retries, rate limiter and stop request apply. A 404 (the document is gone) clears the mark and
is not a failure; a history that cannot be stored, or a request that failed after its retries,
leaves the mark and is one error of the sync (a failure after retries also ends this step: the
endpoint is not answering, the rest wait for the next sync).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy.engine import Engine

from ..billingo_client import BillingoApiError, BillingoClient
from ..normalize import DocumentError, normalize_payment_history
from ..warehouse import payments as store
from ..warehouse.schema import billingo_document_payments, column_limits
from ..warehouse.sync_log import utcnow

PAYMENT_LIMITS = column_limits(billingo_document_payments)


@dataclass
class PaymentHistoryOutcome:
    api_calls: int = 0  # requests of this step, retries included
    fetched: int = 0  # histories stored
    payments_written: int = 0
    not_found: int = 0  # documents Billingo no longer has (404)
    deferred: int = 0  # still due after this step
    errors: list[dict] = field(default_factory=list)


def sync_payment_histories(
    engine: Engine,
    company_id: int,
    client: BillingoClient,
    sync_id: int,
    *,
    cap: int,
    progress: Callable[[], None] | None = None,
) -> PaymentHistoryOutcome:
    """Fetch and store up to ``cap`` due payment histories of the company. ``progress`` is
    called after each document (the sync's heartbeat: it raises when the sync lost its row)."""
    outcome = PaymentHistoryOutcome()
    calls_before = client.stats.api_calls
    with engine.connect() as conn:
        due = store.due_documents(conn, company_id, cap)
    try:
        for document_id in due:
            try:
                history = client.get_document_payments(document_id)
            except BillingoApiError as exc:
                if exc.status == 404:
                    with engine.begin() as conn:
                        store.replace_payments(conn, company_id, sync_id, document_id, (), utcnow(), not_found=True)
                    outcome.not_found += 1
                    continue
                if exc.status is not None:
                    raise  # a refused key or subscription: the whole sync fails, as for a page
                outcome.errors.append({"document_id": document_id, "message": f"payment history not fetched: {client.redact(str(exc))}"})
                break
            try:
                rows = normalize_payment_history(history, PAYMENT_LIMITS)
            except DocumentError as exc:
                outcome.errors.append({"document_id": document_id, "message": f"payment history: {exc.message}"})
                continue
            with engine.begin() as conn:
                store.replace_payments(conn, company_id, sync_id, document_id, rows, utcnow())
            outcome.fetched += 1
            outcome.payments_written += len(rows)
            if progress is not None:
                progress()
    finally:
        outcome.api_calls = client.stats.api_calls - calls_before
    with engine.connect() as conn:
        outcome.deferred = store.count_due(conn, company_id)
    return outcome
