"""reporting views: receivables, outstanding, aging, cash-flow forecast, partners, sync history

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25

Analysts read these views directly; docs/reporting.md explains every column. The SQL is written
once and only the few dialect-specific expressions (``_Dialect``) differ between SQLite and
PostgreSQL, so both warehouses answer the same question with the same figures.

Which documents count as receivables (``report_receivables``)
- ``document_type`` is ``invoice``, ``advance`` (advance invoice) or ``modification`` (a
  correcting invoice; its gross may be negative and then lowers the balance). Drafts, proformas,
  offers, order forms, waybills, delivery certificates, dossiers and receipts (paid at the till)
  create no claim; ``cancellation`` and ``receipt_cancellation`` documents only undo another one.
- The document is not ``cancelled`` (a cancelled original is settled by its cancellation, so
  neither of the two counts) and not ``deleted_in_source_at``.
- A receivable is *open* when ``payment_status`` is ``outstanding``, ``expired`` or
  ``partially_paid``. Billingo's documents do not say how much of a partially paid invoice was
  paid, so its whole gross counts as open and ``is_partially_paid`` flags it. ``paid`` is settled;
  ``none`` (no payment tracked) and unknown statuses are neither open nor paid.

Money
- Amounts are rounded to cents (half away from zero) per document; HUF amounts are the rounded
  document-currency gross times the document's ``conversion_rate``, rounded to cents again.
- Sums are taken over integer minor units (``*_minor`` columns) and divided by 100 at the end. On
  PostgreSQL that is exact NUMERIC. On SQLite money is stored as decimal text, and turning text
  into a float would round (``12.345`` becomes ``12.3449999...``), so the text is cut into integer
  digits instead (``_sqlite_scaled_integer``); only the final ``/ 100.0`` yields a float, which is
  the closest double to the exact cents (the Python layer turns it back into an exact Decimal).

"As of" is the database's current date: ``CURRENT_DATE`` on PostgreSQL (the session time zone),
``date('now')`` on SQLite (UTC).
"""
from __future__ import annotations

from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

RECEIVABLE_TYPES = ("invoice", "advance", "modification")
OPEN_PAYMENT_STATUSES = ("outstanding", "expired", "partially_paid")
FORECAST_WEEKS = 12

# Dependent views first: the order in which downgrade drops them.
VIEW_NAMES = (
    "report_sync_history",
    "report_partner_payment_behaviour",
    "report_partner_balances",
    "report_cash_flow_forecast",
    "report_aging_by_partner",
    "report_aging_by_company",
    "report_outstanding_invoices",
    "report_receivables",
)


def _sql_list(values: tuple[str, ...]) -> str:
    return ", ".join(f"'{value}'" for value in values)


class _Dialect:
    """The expressions that differ between PostgreSQL and SQLite; everything else is shared SQL."""

    def __init__(self, name: str):
        self.sqlite = name == "sqlite"

    @property
    def today(self) -> str:
        return "date('now')" if self.sqlite else "CURRENT_DATE"

    def money(self, minor_units: str) -> str:
        """Integer cents as an amount with two decimals."""
        return f"({minor_units}) / 100.0" if self.sqlite else f"({minor_units}) * 0.01"

    def days_between(self, later: str, earlier: str) -> str:
        if self.sqlite:
            return f"CAST(julianday({later}) - julianday({earlier}) AS INTEGER)"
        return f"({later} - {earlier})"

    def add_days(self, date: str, days: str) -> str:
        return f"date({date}, ({days}) || ' days')" if self.sqlite else f"({date} + ({days}))"

    def greatest(self, first: str, second: str) -> str:
        return f"MAX({first}, {second})" if self.sqlite else f"GREATEST({first}, {second})"

    def null_safe_equal(self, left: str, right: str) -> str:
        return f"{left} IS {right}" if self.sqlite else f"{left} IS NOT DISTINCT FROM {right}"

    def average_2dp(self, values: str) -> str:
        """AVG rounded half away from zero to 2 decimals, exactly (SQLite's ROUND works on floats)."""
        if not self.sqlite:
            return f"ROUND(AVG(CAST({values} AS NUMERIC)), 2)"
        total, count = f"SUM({values})", f"COUNT({values})"
        return (
            f"CASE WHEN {count} = 0 THEN NULL"
            f" WHEN {total} >= 0 THEN ((200 * {total} + {count}) / (2 * {count})) / 100.0"
            f" ELSE -((-200 * {total} + {count}) / (2 * {count})) / 100.0 END"
        )

    def json_array_length(self, column: str) -> str:
        if self.sqlite:
            return f"json_array_length({column})"
        return f"CASE WHEN jsonb_typeof({column}) = 'array' THEN jsonb_array_length({column}) END"


def _sqlite_scaled_integer(decimal_text: str, digits: int) -> str:
    """SQLite: the exact decimal text ``decimal_text`` times 10**digits as an INTEGER, rounded half
    away from zero. ExactDecimal stores ``format(Decimal, "f")``: ``-?\\d+(\\.\\d+)?``, no exponent.

    The text is padded to at least ``digits + 1`` decimals, the point removed after ``digits`` of
    them, and the next digit decides the rounding.
    """
    padded = (
        f"({decimal_text} || CASE WHEN instr({decimal_text}, '.') = 0 THEN '.' ELSE '' END"
        f" || '{'0' * (digits + 1)}')"
    )
    point = f"instr({padded}, '.')"
    kept = f"substr({padded}, 1, {point} - 1) || substr({padded}, {point} + 1, {digits})"
    next_digit = f"substr({padded}, {point} + {digits + 1}, 1)"
    away_from_zero = f"CASE WHEN substr({decimal_text}, 1, 1) = '-' THEN -1 ELSE 1 END"
    return f"(CAST({kept} AS INTEGER) + CASE WHEN {next_digit} >= '5' THEN {away_from_zero} ELSE 0 END)"


def _receivables_sql(d: _Dialect) -> str:
    # HUF documents without a rate are converted at 1; foreign ones without a rate get no HUF amount.
    rate = "COALESCE(i.conversion_rate, CASE WHEN i.currency = 'HUF' THEN {one} END)".format(
        one="'1'" if d.sqlite else "1"
    )
    # HUF cents = cents x rate, rounded half away from zero.
    if d.sqlite:
        gross_minor = _sqlite_scaled_integer("i.gross_total", 2)
        rate_e8 = _sqlite_scaled_integer(rate, 8)
        sqlite_only_column = f"\n        {rate_e8} AS rate_e8,"
        # Cents times the rate in 1e-8 units overflows 64 bits for large invoices, so the rate is
        # split into its integer part and its 8 decimals; every step stays an exact integer.
        huf_minor = (
            "gross_minor * (rate_e8 / 100000000)"
            " + (gross_minor * (rate_e8 % 100000000)"
            " + CASE WHEN gross_minor < 0 THEN -50000000 ELSE 50000000 END) / 100000000"
        )
    else:
        gross_minor = "CAST(ROUND(i.gross_total, 2) * 100 AS BIGINT)"
        sqlite_only_column = ""
        huf_minor = "CAST(ROUND(gross_minor * conversion_rate) AS BIGINT)"
    is_open = f"COALESCE(payment_status, '') IN ({_sql_list(OPEN_PAYMENT_STATUSES)})"
    days_overdue = d.greatest(d.days_between("as_of_date", "due_date"), "0")
    return f"""
CREATE VIEW report_receivables AS
WITH documents AS (
    SELECT
        i.company_id, c.slug AS company_slug, i.document_id, i.invoice_number, i.document_type,
        i.partner_id, i.partner_name, i.partner_tax_number,
        i.invoice_date, i.due_date, i.paid_date, i.payment_status,
        i.currency, {rate} AS conversion_rate,
        {gross_minor} AS gross_minor,{sqlite_only_column}
        {d.today} AS as_of_date
    FROM billingo_invoices i
    JOIN companies c ON c.id = i.company_id
    WHERE i.document_type IN ({_sql_list(RECEIVABLE_TYPES)})
      AND NOT i.cancelled
      AND i.deleted_in_source_at IS NULL
),
amounts AS (
    SELECT documents.*,
        {huf_minor} AS gross_huf_minor,
        {is_open} AS is_open,
        CASE WHEN {is_open} AND due_date IS NOT NULL THEN {days_overdue} END AS days_overdue
    FROM documents
)
SELECT
    company_id, company_slug, document_id, invoice_number, document_type,
    partner_id, partner_name, partner_tax_number,
    invoice_date, due_date, paid_date, payment_status,
    is_open,
    COALESCE(payment_status, '') = 'partially_paid' AS is_partially_paid,
    currency, conversion_rate,
    {d.money("gross_minor")} AS gross_amount,
    {d.money("gross_huf_minor")} AS gross_amount_huf,
    gross_minor, gross_huf_minor,
    as_of_date, days_overdue,
    CASE WHEN NOT is_open THEN NULL
         WHEN days_overdue IS NULL OR days_overdue = 0 THEN 'current'
         WHEN days_overdue <= 30 THEN '1-30'
         WHEN days_overdue <= 60 THEN '31-60'
         WHEN days_overdue <= 90 THEN '61-90'
         ELSE '90+' END AS aging_bucket
FROM amounts
"""


def _outstanding_sql(d: _Dialect) -> str:
    return f"""
CREATE VIEW report_outstanding_invoices AS
SELECT
    company_id, company_slug, document_id, invoice_number, document_type,
    partner_id, partner_name, partner_tax_number,
    invoice_date, due_date, payment_status, is_partially_paid,
    currency, conversion_rate,
    gross_amount AS open_amount, gross_amount_huf AS open_amount_huf,
    as_of_date, days_overdue,
    COALESCE(days_overdue, 0) > 0 AS is_overdue,
    aging_bucket
FROM report_receivables
WHERE is_open
"""


def _conditional_sum(minor_units: str, condition: str | None) -> str:
    """SUM of the rows meeting ``condition`` (all rows when None); 0 rather than NULL when none do."""
    if condition is None:
        return f"SUM({minor_units})"
    return f"SUM(CASE WHEN {condition} THEN {minor_units} ELSE 0 END)"


_AGING_BUCKETS = (
    ("current", "'current'"),
    ("days_1_30", "'1-30'"),
    ("days_31_60", "'31-60'"),
    ("days_61_90", "'61-90'"),
    ("days_over_90", "'90+'"),
)


def _aging_sql(d: _Dialect, view: str, group_columns: str) -> str:
    def total(minor: str, condition: str | None = None) -> str:
        return d.money(_conditional_sum(minor, condition))

    overdue = "aging_bucket <> 'current'"
    amounts = []
    for suffix, minor in (("amount", "gross_minor"), ("huf", "gross_huf_minor")):
        for bucket, label in _AGING_BUCKETS:
            amounts.append(f"{total(minor, f'aging_bucket = {label}')} AS {bucket}_{suffix}")
        amounts.append(f"{total(minor, overdue)} AS overdue_{suffix}")
        amounts.append(f"{total(minor)} AS total_{suffix}")
    amount_columns = ",\n    ".join(amounts)
    return f"""
CREATE VIEW {view} AS
SELECT
    {group_columns}, currency, as_of_date,
    COUNT(*) AS invoice_count,
    SUM(CASE WHEN {overdue} THEN 1 ELSE 0 END) AS overdue_invoice_count,
    SUM(CASE WHEN is_partially_paid THEN 1 ELSE 0 END) AS partially_paid_count,
    {total("gross_minor", "is_partially_paid")} AS partially_paid_amount,
    {amount_columns}
FROM report_receivables
WHERE is_open
GROUP BY {group_columns}, currency, as_of_date
"""


def _cash_flow_sql(d: _Dialect) -> str:
    weeks = ", ".join(f"({n})" for n in range(FORECAST_WEEKS + 1))
    week_of_due_date = f"{d.days_between('due_date', 'as_of_date')} / 7 + 1"
    return f"""
CREATE VIEW report_cash_flow_forecast AS
WITH weeks(week_number) AS (VALUES {weeks}),
open_items AS (
    SELECT company_id, company_slug, currency, as_of_date, gross_minor, gross_huf_minor,
        CASE WHEN due_date < as_of_date THEN 0 ELSE {week_of_due_date} END AS week_number
    FROM report_receivables
    WHERE is_open AND due_date IS NOT NULL
),
series AS (
    SELECT DISTINCT company_id, company_slug, currency, as_of_date FROM open_items
)
SELECT
    s.company_id, s.company_slug, s.currency, s.as_of_date, w.week_number,
    CASE WHEN w.week_number = 0 THEN NULL
         ELSE {d.add_days('s.as_of_date', '7 * (w.week_number - 1)')} END AS week_start,
    CASE WHEN w.week_number = 0 THEN {d.add_days('s.as_of_date', '-1')}
         ELSE {d.add_days('s.as_of_date', '7 * w.week_number - 1')} END AS week_end,
    COUNT(o.week_number) AS invoice_count,
    {d.money('COALESCE(SUM(o.gross_minor), 0)')} AS expected_amount,
    {d.money('COALESCE(SUM(o.gross_huf_minor), 0)')} AS expected_huf
FROM series s
CROSS JOIN weeks w
LEFT JOIN open_items o
    ON o.company_id = s.company_id
   AND {d.null_safe_equal('o.currency', 's.currency')}
   AND o.week_number = w.week_number
GROUP BY s.company_id, s.company_slug, s.currency, s.as_of_date, w.week_number
"""


def _partner_balances_sql(d: _Dialect) -> str:
    overdue = "is_open AND days_overdue > 0"
    amounts = []
    for suffix, minor in (("amount", "gross_minor"), ("huf", "gross_huf_minor")):
        for name, condition in (("invoiced", None), ("paid", "payment_status = 'paid'"),
                                ("open", "is_open"), ("overdue", overdue)):
            amounts.append(f"{d.money(_conditional_sum(minor, condition))} AS {name}_{suffix}")
    amount_columns = ",\n    ".join(amounts)
    return f"""
CREATE VIEW report_partner_balances AS
SELECT
    company_id, company_slug, partner_id, partner_name, partner_tax_number, currency, as_of_date,
    COUNT(*) AS invoice_count,
    SUM(CASE WHEN is_open THEN 1 ELSE 0 END) AS open_invoice_count,
    SUM(CASE WHEN {overdue} THEN 1 ELSE 0 END) AS overdue_invoice_count,
    {amount_columns},
    MIN(CASE WHEN is_open THEN due_date END) AS oldest_open_due_date,
    MAX(invoice_date) AS last_invoice_date,
    MAX(CASE WHEN payment_status = 'paid' THEN paid_date END) AS last_paid_date
FROM report_receivables
GROUP BY company_id, company_slug, partner_id, partner_name, partner_tax_number, currency, as_of_date
"""


def _payment_behaviour_sql(d: _Dialect) -> str:
    # Only fully paid invoices have a meaningful payment date (a partial payment's date says
    # nothing about when the rest arrives).
    paid = "payment_status = 'paid' AND paid_date IS NOT NULL AND due_date IS NOT NULL"
    days_late = f"CASE WHEN {paid} THEN {d.greatest(d.days_between('paid_date', 'due_date'), '0')} END"
    days_to_pay = (
        f"CASE WHEN payment_status = 'paid' AND paid_date IS NOT NULL AND invoice_date IS NOT NULL"
        f" THEN {d.days_between('paid_date', 'invoice_date')} END"
    )
    return f"""
CREATE VIEW report_partner_payment_behaviour AS
WITH measured AS (
    SELECT report_receivables.*, {days_late} AS days_late, {days_to_pay} AS days_to_pay
    FROM report_receivables
)
SELECT
    company_id, company_slug, partner_id, partner_name, partner_tax_number, as_of_date,
    COUNT(days_late) AS paid_invoice_count,
    SUM(CASE WHEN days_late = 0 THEN 1 ELSE 0 END) AS paid_on_time_count,
    SUM(CASE WHEN days_late > 0 THEN 1 ELSE 0 END) AS paid_late_count,
    {d.average_2dp('days_late')} AS average_days_late,
    MAX(days_late) AS max_days_late,
    {d.average_2dp('days_to_pay')} AS average_days_to_pay,
    SUM(CASE WHEN is_open THEN 1 ELSE 0 END) AS open_invoice_count,
    SUM(CASE WHEN is_open AND days_overdue > 0 THEN 1 ELSE 0 END) AS overdue_invoice_count,
    MAX(days_overdue) AS max_days_overdue,
    {d.money('SUM(CASE WHEN is_open AND days_overdue > 0 THEN gross_huf_minor ELSE 0 END)')} AS overdue_huf
FROM measured
GROUP BY company_id, company_slug, partner_id, partner_name, partner_tax_number, as_of_date
"""


def _sync_history_sql(d: _Dialect) -> str:
    return f"""
CREATE VIEW report_sync_history AS
SELECT
    s.id AS sync_id, s.company_id, c.slug AS company_slug, s.run_id, s.trigger, s.status,
    s.started_at, s.finished_at, s.duration_seconds,
    s.invoices_processed, s.invoices_created, s.invoices_updated, s.invoices_skipped,
    s.invoices_failed, s.invoices_marked_deleted, s.items_written,
    s.api_calls, s.pages_fetched, s.documents_fetched, s.fetch_complete,
    {d.json_array_length('s.errors')} AS error_count,
    s.error_message
FROM sync_log s
JOIN companies c ON c.id = s.company_id
ORDER BY s.started_at DESC, s.id DESC
"""


def upgrade() -> None:
    d = _Dialect(op.get_bind().dialect.name)
    statements = (
        _receivables_sql(d),
        _outstanding_sql(d),
        _aging_sql(d, "report_aging_by_company", "company_id, company_slug"),
        _aging_sql(
            d, "report_aging_by_partner",
            "company_id, company_slug, partner_id, partner_name, partner_tax_number",
        ),
        _cash_flow_sql(d),
        _partner_balances_sql(d),
        _payment_behaviour_sql(d),
        _sync_history_sql(d),
    )
    for statement in statements:
        op.execute(statement)


def downgrade() -> None:
    for name in VIEW_NAMES:
        op.execute(f"DROP VIEW IF EXISTS {name}")
