"""Reading the warehouse for analysts: invoice queries with filters, and the reporting views.

Every function returns a pandas DataFrame scoped to one company (``read_view`` may read all),
with money as exact ``Decimal`` quantized to 0.01 on both SQLite and PostgreSQL, dates as
``datetime.date``, timestamps as aware UTC datetimes and nullable integers/booleans as pandas'
``Int64``/``boolean``. The views themselves are defined by migration 0002; docs/reporting.md
explains their columns.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from zoneinfo import ZoneInfo

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.types import TypeDecorator

from ..warehouse.collation import COLLATION_NAME
from ..iterables import chunked
from ..warehouse.schema import (
    ExactDecimal,
    UtcDateTime,
    billingo_document_payments,
    billingo_invoice_status_history,
    billingo_invoices,
    companies,
)

__all__ = [
    "AGING_BUCKETS",
    "CENT",
    "INVOICE_STATUSES",
    "PAYMENT_STATUSES",
    "REPORT_VIEWS",
    "SORT_KEYS",
    "InvoiceFilter",
    "ReportError",
    "aging_by_company",
    "aging_by_partner",
    "cash_flow_by_week",
    "cash_flow_forecast",
    "open_on",
    "outstanding_invoices",
    "iter_invoice_chunks",
    "is_paid",
    "parse_date",
    "partner_balances",
    "partner_days_to_pay",
    "partner_payment_behaviour",
    "query_invoices",
    "read_view",
    "sync_history",
    "to_huf",
]

CENT = Decimal("0.01")
# Billingo's PaymentStatus enum (spec 3.0.14).
PAYMENT_STATUSES = ("expired", "none", "outstanding", "paid", "partially_paid")
CANCELLED = "cancelled"
INVOICE_STATUSES = (*PAYMENT_STATUSES, CANCELLED)
SORT_KEYS = ("date", "amount", "partner")
MAX_PAGE_SIZE = 10_000
# Rows fetched per round trip when a whole result is read (an export): enough to amortize the round
# trip, few enough that 100,000 invoices never sit in the driver's buffers at once.
EXPORT_CHUNK_SIZE = 5_000

# Partner tax numbers are compared without dashes and spaces, upper case. Accepted: a Hungarian
# tax number 12345678-1-12, its 8-digit base (the taxpayer, whatever the VAT code and tax office),
# or an EU VAT number: a member state prefix (EL for Greece, XI for Northern Ireland) and 2-12
# letters or digits, at least two of them digits.
_HU_TAX_NUMBER = re.compile(r"\d{11}")
_HU_TAX_BASE = re.compile(r"\d{8}")
_HU_VAT_NUMBER = re.compile(r"HU(\d{8})")
_EU_VAT_NUMBER = re.compile(
    r"(?=(?:.*\d){2})(?:AT|BE|BG|CY|CZ|DE|DK|EE|EL|ES|FI|FR|HR|HU|IE|IT|LT|LU|LV|MT|NL|PL|PT|RO|SE|SI|SK|XI)"
    r"[0-9A-Z+*]{2,12}"
)


def is_paid(invoices: sa.ColumnCollection = billingo_invoices.c) -> sa.ColumnElement[bool]:
    """The one definition of a *paid* document in every report: Billingo says ``paid`` and the
    document is live (not cancelled, not deleted in Billingo).

    A cancelled invoice keeps the payment status it had, but the money is settled by its
    cancellation (or refunded), so counting it as paid would report income that is not there.
    ``partially_paid`` is not paid. The reporting views agree: ``report_receivables`` holds only
    live documents, and its ``payment_status = 'paid'`` is this condition on receivables.
    """
    return sa.and_(
        invoices.payment_status == "paid",
        sa.not_(invoices.cancelled),
        invoices.deleted_in_source_at.is_(None),
    )


class ReportError(ValueError):
    """A query cannot run as asked (bad filter, unknown company or view); the message says why."""


# --- filters --------------------------------------------------------------------------------------


def parse_date(text: str | dt.date | None, name: str) -> dt.date | None:
    """``YYYY-MM-DD`` text (or a date) as a date; ``name`` is the filter named in the error."""
    if text is None or isinstance(text, dt.date):
        return text
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text.strip()):
            return dt.date.fromisoformat(text.strip())
    except ValueError:
        pass
    raise ReportError(f"{name}: {text!r} is not a date (YYYY-MM-DD)")


def _normalized_tax_number(text: str) -> str:
    return re.sub(r"[\s-]", "", text).upper()


def _tax_number_condition(key: str) -> sa.ColumnElement[bool]:
    """Stored tax numbers matching the validated, normalized ``key``."""
    stored = sa.func.upper(
        sa.func.replace(sa.func.replace(billingo_invoices.c.partner_tax_number, "-", ""), " ", "")
    )
    if _HU_TAX_BASE.fullmatch(key):
        return stored.startswith(key)
    hungarian_vat = _HU_VAT_NUMBER.fullmatch(key)
    if hungarian_vat:
        # HU12345678 is the EU form of the taxpayer whose domestic number starts 12345678.
        return sa.or_(stored == key, stored.startswith(hungarian_vat.group(1)))
    return stored == key


@dataclass(frozen=True)
class InvoiceFilter:
    """What ``query_invoices`` keeps; every field is optional and they combine with AND.

    ``statuses`` are OR-ed: a payment status of the spec matches documents in that status that are
    not cancelled; ``cancelled`` matches cancelled documents whatever their payment status. Date
    ranges are inclusive and may be open on either side; ISO text (``"2026-03-01"``) is accepted
    for dates, as in a notebook. ``partner_tax_number`` accepts
    ``12345678-1-12`` (dashes optional), an 8-digit tax base (any VAT code and tax office of that
    taxpayer) or an EU VAT number. ``invoice_number`` is a case-insensitive substring.
    Construction validates everything and raises ``ReportError``.
    """

    statuses: Sequence[str] | str = ()
    invoice_date_from: dt.date | str | None = None
    invoice_date_to: dt.date | str | None = None
    due_date_from: dt.date | str | None = None
    due_date_to: dt.date | str | None = None
    paid_date_from: dt.date | str | None = None
    paid_date_to: dt.date | str | None = None
    partner_tax_number: str | None = None
    invoice_number: str | None = None

    def __post_init__(self) -> None:
        # A lone string is one status, not a sequence of one-letter ones.
        given = (self.statuses,) if isinstance(self.statuses, str) else self.statuses
        statuses = tuple(dict.fromkeys(s.strip().lower() for s in given))
        unknown = [s for s in statuses if s not in INVOICE_STATUSES]
        if unknown:
            raise ReportError(
                f"unknown payment status {unknown[0]!r}: expected one of {', '.join(INVOICE_STATUSES)}"
            )
        object.__setattr__(self, "statuses", statuses)
        for label in ("invoice_date", "due_date", "paid_date"):
            start = parse_date(getattr(self, f"{label}_from"), f"{label}_from")
            end = parse_date(getattr(self, f"{label}_to"), f"{label}_to")
            if start and end and end < start:
                raise ReportError(f"{label} range ends ({end}) before it starts ({start})")
            object.__setattr__(self, f"{label}_from", start)
            object.__setattr__(self, f"{label}_to", end)
        if self.partner_tax_number is not None:
            key = _normalized_tax_number(self.partner_tax_number)
            if not any(p.fullmatch(key) for p in (_HU_TAX_NUMBER, _HU_TAX_BASE, _EU_VAT_NUMBER)):
                raise ReportError(
                    f"malformed partner tax number {self.partner_tax_number!r}: expected 12345678-1-12, "
                    "an 8-digit tax base or an EU VAT number such as ATU12345678"
                )
        if self.invoice_number is not None and not self.invoice_number.strip():
            raise ReportError("invoice number search is empty")

    def conditions(self) -> list[sa.ColumnElement[bool]]:
        """The WHERE conditions on ``billingo_invoices`` (company scoping is the caller's)."""
        invoices = billingo_invoices.c
        conditions: list[sa.ColumnElement[bool]] = []
        if self.statuses:
            matches = []
            payment_statuses = [s for s in self.statuses if s not in (CANCELLED, "paid")]
            if "paid" in self.statuses:
                matches.append(is_paid(invoices))
            if payment_statuses:
                matches.append(sa.and_(invoices.payment_status.in_(payment_statuses), sa.not_(invoices.cancelled)))
            if CANCELLED in self.statuses:
                matches.append(invoices.cancelled)
            conditions.append(sa.or_(*matches))
        for column, start, end in (
            (invoices.invoice_date, self.invoice_date_from, self.invoice_date_to),
            (invoices.due_date, self.due_date_from, self.due_date_to),
            (invoices.paid_date, self.paid_date_from, self.paid_date_to),
        ):
            if start is not None:
                conditions.append(column >= start)
            if end is not None:
                conditions.append(column <= end)
        if self.partner_tax_number is not None:
            conditions.append(_tax_number_condition(_normalized_tax_number(self.partner_tax_number)))
        if self.invoice_number is not None:
            conditions.append(invoices.invoice_number.icontains(self.invoice_number.strip(), autoescape=True))
        return conditions


# --- invoice query --------------------------------------------------------------------------------

INVOICE_COLUMNS = (
    "document_id", "invoice_number", "document_type", "invoice_date", "due_date", "paid_date",
    "payment_status", "cancelled", "partner_name", "partner_tax_number", "currency", "net_total",
    "gross_total", "conversion_rate", "gross_total_huf", "payment_method",
)
_INVOICE_MONEY = ("net_total", "gross_total", "gross_total_huf")


def to_huf(amount: Decimal | None, conversion_rate: Decimal | None, currency: str | None) -> Decimal | None:
    """The views' conversion: amount rounded to cents, times the rate, rounded to cents (half up).

    A HUF document without a rate converts at 1; a foreign one without a rate has no HUF amount.
    """
    if amount is None:
        return None
    if conversion_rate is None:
        if currency != "HUF":
            return None
        conversion_rate = Decimal(1)
    return (amount.quantize(CENT, ROUND_HALF_UP) * conversion_rate).quantize(CENT, ROUND_HALF_UP)


def _company_id(conn: sa.Connection, company_slug: str) -> int:
    company_id = conn.execute(sa.select(companies.c.id).where(companies.c.slug == company_slug)).scalar()
    if company_id is None:
        raise ReportError(f"unknown company {company_slug!r}")
    return company_id


def _sort_order(sort: str, descending: bool) -> list[sa.ColumnElement]:
    invoices = billingo_invoices.c
    if sort not in SORT_KEYS:
        raise ReportError(f"unknown sort {sort!r}: expected one of {', '.join(SORT_KEYS)}")
    if sort == "date":
        keys: list[sa.ColumnElement] = [invoices.invoice_date]
    elif sort == "amount":
        # HUF value, so that EUR and HUF invoices rank together. A float is exact enough to order
        # by (SQLite stores the decimal as text, which would sort "9" after "10"); ties fall
        # through to the document id.
        rate = sa.func.coalesce(sa.cast(invoices.conversion_rate, sa.Float), 1.0)
        keys = [sa.cast(invoices.gross_total, sa.Float) * rate]
    else:
        # Hungarian order on both dialects; case only breaks ties, so no lower() is needed (which
        # on SQLite, and on a C-locale PostgreSQL, would not lower "Á").
        keys = [invoices.partner_name.collate(COLLATION_NAME), invoices.invoice_date]
    keys.append(invoices.document_id)
    return [(key.desc() if descending else key.asc()).nulls_last() for key in keys]


def _invoice_query(
    conn: sa.Connection, company_slug: str, filters: InvoiceFilter | None, sort: str, descending: bool
) -> tuple[sa.Select, int]:
    """The ordered SELECT of the matching invoices and how many rows it returns."""
    filters = filters or InvoiceFilter()
    order = _sort_order(sort, descending)
    invoices = billingo_invoices.c
    company_id = _company_id(conn, company_slug)
    where = [invoices.company_id == company_id, invoices.deleted_in_source_at.is_(None), *filters.conditions()]
    total_rows = conn.execute(sa.select(sa.func.count()).select_from(billingo_invoices).where(*where)).scalar_one()
    columns = [invoices[name] for name in INVOICE_COLUMNS if name != "gross_total_huf"]
    return sa.select(*columns).where(*where).order_by(*order), total_rows


def _invoice_frame(rows: list[dict]) -> pd.DataFrame:
    for row in rows:
        row["gross_total_huf"] = to_huf(row["gross_total"], row["conversion_rate"], row["currency"])
        for name in _INVOICE_MONEY:
            if row[name] is not None:
                row[name] = row[name].quantize(CENT, ROUND_HALF_UP)
    return _frame(rows, INVOICE_COLUMNS, integer_columns=("document_id",), boolean_columns=("cancelled",))


def query_invoices(
    engine: Engine,
    company_slug: str,
    filters: InvoiceFilter | None = None,
    *,
    sort: str = "date",
    descending: bool = False,
    page_size: int = 100,
    page: int = 1,
) -> pd.DataFrame:
    """One page of the company's invoices (every document type; none deleted in Billingo).

    ``sort`` is ``date`` (invoice date), ``amount`` (gross in HUF) or ``partner`` (name, then
    invoice date); the document id breaks ties, so pages never overlap. ``df.attrs`` holds
    ``total_rows``, ``page``, ``page_size`` and ``page_count`` for paging. Every matching row
    at once: ``iter_invoice_chunks``.
    """
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise ReportError(f"page size must be between 1 and {MAX_PAGE_SIZE}, got {page_size}")
    if page < 1:
        raise ReportError(f"page must be 1 or more, got {page}")
    with engine.connect() as conn:
        query, total_rows = _invoice_query(conn, company_slug, filters, sort, descending)
        query = query.limit(page_size).offset((page - 1) * page_size)
        rows = [dict(row._mapping) for row in conn.execute(query)]
    frame = _invoice_frame(rows)
    frame.attrs.update(
        total_rows=total_rows,
        page=page,
        page_size=page_size,
        page_count=max(1, math.ceil(total_rows / page_size)),
    )
    return frame


def iter_invoice_chunks(
    engine: Engine,
    company_slug: str,
    filters: InvoiceFilter | None = None,
    *,
    sort: str = "date",
    descending: bool = False,
    chunk_size: int = EXPORT_CHUNK_SIZE,
) -> Iterator[pd.DataFrame]:
    """Every matching invoice, in ``query_invoices``' order, as DataFrames of at most
    ``chunk_size`` rows; each has ``attrs["total_rows"]``, the count of the whole result.

    One query read with a server-side cursor (``yield_per``), not OFFSET pages: the result is one
    consistent snapshot (an invoice synced meanwhile cannot be skipped or repeated at a page
    boundary) and memory holds one chunk, whatever the export's size. The first chunk is
    yielded even when nothing matches, so a writer always gets the columns.
    """
    if chunk_size < 1:
        raise ReportError(f"chunk size must be 1 or more, got {chunk_size}")
    with engine.connect() as conn:
        query, total_rows = _invoice_query(conn, company_slug, filters, sort, descending)
        result = conn.execution_options(yield_per=chunk_size).execute(query)
        yielded = False
        for partition in result.partitions():
            frame = _invoice_frame([dict(row._mapping) for row in partition])
            frame.attrs["total_rows"] = total_rows
            yielded = True
            yield frame
        if not yielded:
            frame = _invoice_frame([])
            frame.attrs["total_rows"] = total_rows
            yield frame


# --- views ----------------------------------------------------------------------------------------


class FixedDecimal(TypeDecorator):
    """A view's computed amount as a Decimal with ``places`` decimals.

    PostgreSQL returns NUMERIC (already exact). SQLite returns the closest double to the exact
    cents (the views sum integer cents and divide by 100 at the end), which quantizes back to the
    exact value.
    """

    impl = sa.Numeric
    cache_ok = True

    def __init__(self, places: int = 2):
        super().__init__(asdecimal=True)
        self.quantum = Decimal(1).scaleb(-places)

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return Decimal(str(value)).quantize(self.quantum, ROUND_HALF_UP)


@dataclass(frozen=True)
class ReportView:
    """A view as SQLAlchemy sees it (typed columns, so values come back as Python types) and the
    order its rows are read in."""

    table: sa.TableClause
    order_by: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.table.name


_COLUMN_TYPES = {
    "money": FixedDecimal(2),
    "average": FixedDecimal(2),
    "rate": ExactDecimal(20, 8),
    "int": sa.BigInteger(),
    "bool": sa.Boolean(),
    "date": sa.Date(),
    "timestamp": UtcDateTime(),
    "float": sa.Float(),
    "text": sa.String(),
}


def _view(name: str, columns: str, order_by: Sequence[str]) -> ReportView:
    """``columns``: whitespace-separated ``name:kind`` pairs, kinds as in ``_COLUMN_TYPES``."""
    typed = [sa.column(col, _COLUMN_TYPES[kind]) for col, kind in (pair.split(":") for pair in columns.split())]
    return ReportView(sa.table(name, *typed), tuple(order_by))


_COMPANY = "company_id:int company_slug:text"
_PARTNER = "partner_id:int partner_name:text partner_tax_number:text"
#: (``aging_bucket`` label, column prefix in the aging views), oldest debt last.
AGING_BUCKETS = (
    ("current", "current"),
    ("1-30", "days_1_30"),
    ("31-60", "days_31_60"),
    ("61-90", "days_61_90"),
    ("90+", "days_over_90"),
)
_AGING_AMOUNTS = " ".join(
    f"{prefix}_{suffix}:money"
    for suffix in ("amount", "huf")
    for prefix in (*(bucket_prefix for _, bucket_prefix in AGING_BUCKETS), "overdue", "total")
)
_AGING_COUNTS = "invoice_count:int overdue_invoice_count:int partially_paid_count:int partially_paid_amount:money"

REPORT_VIEWS: dict[str, ReportView] = {
    view.name: view
    for view in (
        _view(
            "report_receivables",
            f"{_COMPANY} document_id:int invoice_number:text document_type:text {_PARTNER} invoice_date:date"
            " due_date:date paid_date:date payment_status:text is_open:bool is_partially_paid:bool currency:text"
            " conversion_rate:rate gross_amount:money gross_amount_huf:money gross_minor:int gross_huf_minor:int"
            " as_of_date:date days_overdue:int aging_bucket:text recorded_paid_amount:money paid_amount:money"
            " paid_amount_huf:money open_amount:money open_amount_huf:money recorded_paid_minor:int paid_minor:int"
            " paid_huf_minor:int open_minor:int open_huf_minor:int",
            ("company_slug", "invoice_date", "document_id"),
        ),
        _view(
            "report_outstanding_invoices",
            f"{_COMPANY} document_id:int invoice_number:text document_type:text {_PARTNER} invoice_date:date"
            " due_date:date payment_status:text is_partially_paid:bool currency:text conversion_rate:rate"
            " open_amount:money open_amount_huf:money as_of_date:date days_overdue:int is_overdue:bool"
            " aging_bucket:text gross_amount:money gross_amount_huf:money recorded_paid_amount:money",
            ("company_slug", "due_date", "document_id"),
        ),
        _view(
            "report_aging_by_company",
            f"{_COMPANY} currency:text as_of_date:date {_AGING_COUNTS} {_AGING_AMOUNTS}",
            ("company_slug", "currency"),
        ),
        _view(
            "report_aging_by_partner",
            f"{_COMPANY} {_PARTNER} currency:text as_of_date:date {_AGING_COUNTS} {_AGING_AMOUNTS}",
            ("company_slug", "partner_name", "partner_id", "currency"),
        ),
        _view(
            "report_cash_flow_forecast",
            f"{_COMPANY} currency:text as_of_date:date week_number:int week_start:date week_end:date"
            " invoice_count:int expected_amount:money expected_huf:money",
            ("company_slug", "currency", "week_number"),
        ),
        _view(
            "report_partner_balances",
            f"{_COMPANY} {_PARTNER} currency:text as_of_date:date invoice_count:int open_invoice_count:int"
            " overdue_invoice_count:int invoiced_amount:money paid_amount:money open_amount:money"
            " overdue_amount:money invoiced_huf:money paid_huf:money open_huf:money overdue_huf:money"
            " oldest_open_due_date:date last_invoice_date:date last_paid_date:date",
            ("company_slug", "partner_name", "partner_id", "currency"),
        ),
        _view(
            "report_partner_payment_behaviour",
            f"{_COMPANY} {_PARTNER} as_of_date:date paid_invoice_count:int paid_on_time_count:int"
            " paid_late_count:int average_days_late:average max_days_late:int average_days_to_pay:average"
            " open_invoice_count:int overdue_invoice_count:int max_days_overdue:int overdue_huf:money",
            ("company_slug", "partner_name", "partner_id"),
        ),
        _view(
            "report_partner_days_to_pay",
            f"{_COMPANY} {_PARTNER} paid_invoice_count:int average_days_to_pay:average min_days_to_pay:int"
            " max_days_to_pay:int average_days_late:average first_paid_observed_at:timestamp"
            " last_paid_observed_at:timestamp",
            ("company_slug", "partner_name", "partner_id"),
        ),
        _view(
            "report_sync_history",
            f"sync_id:int {_COMPANY} run_id:text trigger:text status:text started_at:timestamp"
            " finished_at:timestamp duration_seconds:float invoices_processed:int invoices_created:int"
            " invoices_updated:int invoices_skipped:int invoices_failed:int invoices_marked_deleted:int"
            " items_written:int api_calls:int pages_fetched:int documents_fetched:int fetch_complete:bool"
            " error_count:int error_message:text",
            ("-started_at", "-sync_id"),
        ),
    )
}


def _view_sort_column(columns, name: str) -> sa.ColumnElement:
    return columns[name].collate(COLLATION_NAME) if name == "partner_name" else columns[name]


def read_view(engine: Engine, view_name: str, company_slug: str | None = None) -> pd.DataFrame:
    """Every row of a reporting view (one company's when ``company_slug`` is given), typed."""
    view = REPORT_VIEWS.get(view_name)
    if view is None:
        raise ReportError(f"unknown view {view_name!r}: expected one of {', '.join(REPORT_VIEWS)}")
    columns = view.table.c
    order = [
        _view_sort_column(columns, key[1:]).desc() if key.startswith("-") else _view_sort_column(columns, key).asc()
        for key in view.order_by
    ]
    query = sa.select(view.table).order_by(*(key.nulls_last() for key in order))
    with engine.connect() as conn:
        if company_slug is not None:
            _company_id(conn, company_slug)
            query = query.where(columns.company_slug == company_slug)
        rows = [dict(row._mapping) for row in conn.execute(query)]
    kinds = {col.name: col.type for col in view.table.columns}
    return _frame(
        rows,
        [col.name for col in view.table.columns],
        integer_columns=[name for name, kind in kinds.items() if isinstance(kind, sa.BigInteger)],
        boolean_columns=[name for name, kind in kinds.items() if isinstance(kind, sa.Boolean)],
    )


def _frame(
    rows: list[dict], columns: Sequence[str], *, integer_columns: Iterable[str], boolean_columns: Iterable[str]
) -> pd.DataFrame:
    """A DataFrame that keeps Decimals and dates as objects and lets integers and flags be null."""
    frame = pd.DataFrame.from_records(rows, columns=list(columns))
    for name in integer_columns:
        frame[name] = frame[name].astype("Int64")
    for name in boolean_columns:
        frame[name] = frame[name].astype("boolean")
    return frame


def outstanding_invoices(engine: Engine, company_slug: str) -> pd.DataFrame:
    return read_view(engine, "report_outstanding_invoices", company_slug)


def aging_by_company(engine: Engine, company_slug: str) -> pd.DataFrame:
    return read_view(engine, "report_aging_by_company", company_slug)


def aging_by_partner(engine: Engine, company_slug: str) -> pd.DataFrame:
    return read_view(engine, "report_aging_by_partner", company_slug)


def cash_flow_forecast(engine: Engine, company_slug: str) -> pd.DataFrame:
    return read_view(engine, "report_cash_flow_forecast", company_slug)


FORECAST_COLUMNS = ("week_number", "week_start", "week_end", "invoice_count", "expected_huf")


def cash_flow_by_week(engine: Engine, company_slug: str) -> pd.DataFrame:
    """``report_cash_flow_forecast`` in HUF across currencies: one row per week 0 (overdue) to 12,
    with the week's open receivables and their exact HUF sum (documents without a HUF value, a
    foreign currency without a rate, are counted but add nothing, as in every HUF sum). No rows
    when nothing is open."""
    forecast = cash_flow_forecast(engine, company_slug)
    weeks: dict[int, dict] = {}
    for row in forecast.to_dict("records"):
        week = weeks.setdefault(
            int(row["week_number"]),
            {"week_number": int(row["week_number"]), "week_start": row["week_start"], "week_end": row["week_end"],
             "invoice_count": 0, "expected_huf": Decimal("0.00")},
        )
        week["invoice_count"] += int(row["invoice_count"])
        if not pd.isna(row["expected_huf"]):
            week["expected_huf"] += row["expected_huf"]
    return _frame([weeks[n] for n in sorted(weeks)], FORECAST_COLUMNS, integer_columns=("week_number", "invoice_count"), boolean_columns=())


def partner_balances(engine: Engine, company_slug: str) -> pd.DataFrame:
    return read_view(engine, "report_partner_balances", company_slug)


def partner_payment_behaviour(engine: Engine, company_slug: str) -> pd.DataFrame:
    return read_view(engine, "report_partner_payment_behaviour", company_slug)


def sync_history(engine: Engine, company_slug: str) -> pd.DataFrame:
    return read_view(engine, "report_sync_history", company_slug)


def partner_days_to_pay(engine: Engine, company_slug: str) -> pd.DataFrame:
    return read_view(engine, "report_partner_days_to_pay", company_slug)


OPEN_STATUSES = ("outstanding", "expired", "partially_paid")
RECEIVABLE_TYPES = ("invoice", "advance", "modification")
OPEN_ON_COLUMNS = (
    "document_id", "invoice_number", "document_type", "partner_id", "partner_name", "invoice_date", "due_date",
    "payment_status", "paid_date", "observed_at", "currency", "gross_amount", "paid_by_date", "open_amount",
    "days_overdue",
)
BUDAPEST = ZoneInfo("Europe/Budapest")


def open_on(engine: Engine, company_slug: str, on: dt.date) -> pd.DataFrame:
    """The receivables that were open at the end of ``on`` (Budapest), from the status history.

    An invoice's state on that day is its newest status-history row observed by the end of it; an
    invoice first observed later is judged by its first row. It was open when that state is
    outstanding, expired or partially paid, or paid with a paid date after ``on`` (paid later), it
    was issued by then (``invoice_date``), is a receivable (invoice, advance, modification), was not
    cancelled in that state and not deleted in Billingo by then. ``open_amount`` is the gross less
    the recorded payments dated on or before ``on``; ``payment_status``, ``paid_date`` and
    ``observed_at`` are the state's. Sorted by due date, then document id.
    """
    payments, history = billingo_document_payments, billingo_invoice_status_history
    end_of_day = dt.datetime.combine(on + dt.timedelta(days=1), dt.time(), BUDAPEST).astimezone(dt.timezone.utc)
    i = billingo_invoices
    with engine.connect() as conn:
        company_id = _company_id(conn, company_slug)
        known_by_then = (
            sa.select(history.c.document_id, sa.func.max(history.c.id).label("history_id"))
            .where(history.c.company_id == company_id, history.c.observed_at < end_of_day)
            .group_by(history.c.document_id)
        )
        first_known = (
            sa.select(history.c.document_id, sa.func.min(history.c.id).label("history_id"))
            .where(history.c.company_id == company_id)
            .group_by(history.c.document_id)
        )
        by_then, first = known_by_then.subquery(), first_known.subquery()
        state_id = sa.func.coalesce(by_then.c.history_id, first.c.history_id)
        rows = conn.execute(
            sa.select(
                i.c.document_id, i.c.invoice_number, i.c.document_type, i.c.partner_id, i.c.partner_name,
                i.c.invoice_date, i.c.due_date, history.c.payment_status, history.c.paid_date, history.c.observed_at,
                history.c.cancelled, i.c.currency, i.c.gross_total,
            )
            .select_from(
                i.join(first, first.c.document_id == i.c.document_id)
                .outerjoin(by_then, by_then.c.document_id == i.c.document_id)
                .join(history, history.c.id == state_id)
            )
            .where(
                i.c.company_id == company_id,
                i.c.document_type.in_(RECEIVABLE_TYPES),
                i.c.invoice_date <= on,
                sa.or_(i.c.deleted_in_source_at.is_(None), i.c.deleted_in_source_at >= end_of_day),
            )
        ).all()
        candidates = [
            r for r in rows
            if not r.cancelled and (
                r.payment_status in OPEN_STATUSES
                or (r.payment_status == "paid" and (r.paid_date is None or r.paid_date > on))
            )
        ]
        paid_by_date: dict[int, Decimal] = {}
        for document_ids in chunked([r.document_id for r in candidates], 1000):
            for document_id, price in conn.execute(
                sa.select(payments.c.document_id, payments.c.price).where(
                    payments.c.company_id == company_id, payments.c.document_id.in_(document_ids), payments.c.payment_date <= on,
                )
            ):
                paid_by_date[document_id] = paid_by_date.get(document_id, Decimal(0)) + price
    records = []
    for r in sorted(candidates, key=lambda r: (r.due_date is None, r.due_date or on, r.document_id)):
        gross = r.gross_total.quantize(CENT, ROUND_HALF_UP) if r.gross_total is not None else None
        paid = paid_by_date.get(r.document_id, Decimal(0)).quantize(CENT, ROUND_HALF_UP)
        records.append({
            "document_id": r.document_id, "invoice_number": r.invoice_number, "document_type": r.document_type,
            "partner_id": r.partner_id, "partner_name": r.partner_name, "invoice_date": r.invoice_date,
            "due_date": r.due_date, "payment_status": r.payment_status, "paid_date": r.paid_date,
            "observed_at": r.observed_at, "currency": r.currency, "gross_amount": gross, "paid_by_date": paid,
            "open_amount": None if gross is None else gross - paid,
            "days_overdue": max((on - r.due_date).days, 0) if r.due_date is not None else None,
        })
    return _frame(records, OPEN_ON_COLUMNS, integer_columns=("document_id", "partner_id", "days_overdue"), boolean_columns=())

