"""`make demo`'s summary. The demo itself, run twice in a checkout as the README runs it, is tested
with the CLI that reads its state: faults/test_cli_setup.py."""

import datetime as dt
from decimal import Decimal


from billingo_pipeline.warehouse import companies as company_store
from billingo_pipeline.warehouse.schema import billingo_document_payments, billingo_invoices
from billingo_pipeline.warehouse.sync_log import utcnow


def test_summary_counts_only_open_receivables_as_open(engine):
    """Drafts, proformas, cancellations and status `none` are not money owed (as in the views)."""
    from billingo_pipeline.demo import _summary

    company = company_store.add_company(engine, "acme", "Acme", api_key_encrypted="token", api_key_fingerprint="fp")
    now = utcnow()

    def document(document_id: int, document_type: str, status: str, *, cancelled: bool = False) -> dict:
        return {"company_id": company.id, "document_id": document_id, "invoice_number": f"X-{document_id}",
                "document_type": document_type, "cancelled": cancelled, "currency": "HUF",
                "gross_total": Decimal("1000"), "conversion_rate": Decimal("1"), "payment_status": status,
                "source_hash": "h" * 64, "first_seen_at": now, "last_changed_at": now}

    with engine.begin() as conn:
        conn.execute(billingo_invoices.insert(), [
            document(1, "invoice", "outstanding"),
            document(2, "advance", "partially_paid"),
            document(3, "invoice", "expired", cancelled=True),
            document(4, "cancellation", "none"),
            document(5, "draft", "none"),
            document(6, "proforma", "outstanding"),
            document(7, "invoice", "paid"),
        ])
        # The advance's recorded part payment: 400 of its 1000 is paid, 600 still open.
        conn.execute(billingo_document_payments.insert(), [{
            "company_id": company.id, "document_id": 2, "position": 1, "payment_date": dt.date(2026, 11, 2),
            "price": Decimal("400"), "payment_method": "cash", "fetched_at": now,
        }])
    [row] = _summary(engine).to_dict("records")
    assert row == {"company": "acme", "invoices": 7, "line items": 0, "paid": 1, "open": 2, "part-paid": 1, "cancelled": 1,
                   "non-HUF": 0, "payments": 1, "open HUF": Decimal("1600.00"), "partners": 0, "spendings": 0,
                   "unpaid spendings": 0}
