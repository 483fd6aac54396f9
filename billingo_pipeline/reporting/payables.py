"""Payables: the company's incoming bills (``billingo_spendings``) that are not paid yet, their due
list and aging, as pandas DataFrames scoped to one company.

A bill is *open* while Billingo shows no ``paid_at`` and a complete sweep still returns it
(``deleted_in_source_at`` is null). Ages count from ``as_of`` (default: today, UTC), given
explicitly so figures are reproducible. Money is exact ``Decimal`` quantized to 0.01, summed in
Python from the stored decimals, so both databases give the same figures. The HUF value is
Billingo's own ``total_gross_local``; when it is missing, the gross at the bill's conversion rate
(``queries.to_huf``). docs/reporting.md lists the columns.
"""

from __future__ import annotations

import datetime as dt
from decimal import ROUND_HALF_UP, Decimal

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from ..warehouse.schema import billingo_spendings
from .queries import AGING_BUCKETS, CENT, ReportError, _company_id, _frame, to_huf

__all__ = ["PAYABLE_COLUMNS", "PAYABLES_AGING_COLUMNS", "payables_aging", "payables_due", "payables_outstanding"]

PAYABLE_COLUMNS = (
    "spending_id", "invoice_number", "partner_id", "partner_name", "partner_tax_number", "partner_iban",
    "category", "payment_method", "invoice_date", "due_date", "currency", "conversion_rate", "gross_amount",
    "gross_amount_huf", "as_of_date", "days_overdue", "is_overdue", "aging_bucket",
)
_BUCKET_PREFIXES = tuple(prefix for _, prefix in AGING_BUCKETS)
PAYABLES_AGING_COLUMNS = (
    "currency", "as_of_date", "bill_count", "overdue_bill_count",
    *(f"{prefix}_{suffix}" for suffix in ("amount", "huf") for prefix in (*_BUCKET_PREFIXES, "overdue", "total")),
)
DEFAULT_DUE_WITHIN_DAYS = 30


def aging_bucket(days_overdue: int | None) -> str:
    """The receivables' buckets: current (not yet due, or no due date), 1-30, 31-60, 61-90, 90+."""
    if not days_overdue or days_overdue <= 0:
        return "current"
    for label, bound in (("1-30", 30), ("31-60", 60), ("61-90", 90)):
        if days_overdue <= bound:
            return label
    return "90+"


def _money(value: Decimal | None) -> Decimal | None:
    return None if value is None else value.quantize(CENT, ROUND_HALF_UP)


def _open_bills(engine: Engine, company_slug: str, as_of: dt.date, due_by: dt.date | None = None) -> list[dict]:
    s = billingo_spendings.c
    with engine.connect() as conn:
        company_id = _company_id(conn, company_slug)
        query = (
            sa.select(billingo_spendings)
            .where(s.company_id == company_id, s.paid_at.is_(None), s.deleted_in_source_at.is_(None))
            .order_by(s.due_date.is_(None), s.due_date, s.spending_id)
        )
        if due_by is not None:
            query = query.where(s.due_date <= due_by)
        rows = conn.execute(query).all()
    bills = []
    for row in rows:
        days = (as_of - row.due_date).days if row.due_date is not None else None
        huf = row.gross_total_local if row.gross_total_local is not None else to_huf(row.gross_total, row.conversion_rate, row.currency)
        bills.append({
            "spending_id": row.spending_id, "invoice_number": row.invoice_number, "partner_id": row.partner_id,
            "partner_name": row.partner_name, "partner_tax_number": row.partner_tax_number, "partner_iban": row.partner_iban,
            "category": row.category, "payment_method": row.payment_method, "invoice_date": row.invoice_date,
            "due_date": row.due_date, "currency": row.currency, "conversion_rate": row.conversion_rate,
            "gross_amount": _money(row.gross_total), "gross_amount_huf": _money(huf), "as_of_date": as_of,
            "days_overdue": max(days, 0) if days is not None else None, "is_overdue": days is not None and days > 0,
            "aging_bucket": aging_bucket(days),
        })
    return bills


def _as_of(as_of: dt.date | None) -> dt.date:
    return as_of or dt.datetime.now(dt.timezone.utc).date()


def _bill_frame(bills: list[dict]) -> pd.DataFrame:
    return _frame(bills, PAYABLE_COLUMNS, integer_columns=("spending_id", "partner_id", "days_overdue"), boolean_columns=("is_overdue",))


def payables_outstanding(engine: Engine, company_slug: str, *, as_of: dt.date | None = None) -> pd.DataFrame:
    """Every open bill, earliest due first, with its days overdue and aging bucket."""
    return _bill_frame(_open_bills(engine, company_slug, _as_of(as_of)))


def payables_due(
    engine: Engine, company_slug: str, *, as_of: dt.date | None = None, within_days: int = DEFAULT_DUE_WITHIN_DAYS
) -> pd.DataFrame:
    """The due list: open bills due by ``as_of`` + ``within_days`` (the overdue ones included),
    earliest due first: what to pay next."""
    if within_days < 0:
        raise ReportError(f"within_days must be 0 or more, got {within_days}")
    day = _as_of(as_of)
    return _bill_frame(_open_bills(engine, company_slug, day, due_by=day + dt.timedelta(days=within_days)))


def payables_aging(engine: Engine, company_slug: str, *, as_of: dt.date | None = None) -> pd.DataFrame:
    """Open bills per currency: how many, how many overdue, and the open gross (and its HUF value)
    per aging bucket, overdue and in total. A bill without a HUF value adds nothing to the HUF sums."""
    day = _as_of(as_of)
    by_currency: dict[str | None, dict] = {}
    labels = dict(AGING_BUCKETS)
    for bill in _open_bills(engine, company_slug, day):
        row = by_currency.setdefault(bill["currency"], {
            "currency": bill["currency"], "as_of_date": day, "bill_count": 0, "overdue_bill_count": 0,
            **{column: Decimal("0.00") for column in PAYABLES_AGING_COLUMNS[4:]},
        })
        row["bill_count"] += 1
        row["overdue_bill_count"] += bill["is_overdue"]
        prefix = labels[bill["aging_bucket"]]
        for suffix, value in (("amount", bill["gross_amount"]), ("huf", bill["gross_amount_huf"])):
            if value is None:
                continue
            row[f"{prefix}_{suffix}"] += value
            row[f"total_{suffix}"] += value
            if bill["is_overdue"]:
                row[f"overdue_{suffix}"] += value
    rows = [by_currency[c] for c in sorted(by_currency, key=lambda c: (c is None, c or ""))]
    return _frame(rows, PAYABLES_AGING_COLUMNS, integer_columns=("bill_count", "overdue_bill_count"), boolean_columns=())
