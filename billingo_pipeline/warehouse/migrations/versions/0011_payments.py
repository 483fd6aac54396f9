"""payments: payment histories, payment-status history, receivables net of recorded payments

Revision ID: 0011
Revises: 0010_billingo_entities
Create Date: 2026-12-01

Tables
- ``billingo_document_payments``: one row per payment of a document's history
  (``GET /documents/{id}/payments``), exact money; a document's rows are replaced when fetched.
- ``billingo_payment_history_state``: per document, whether its payment history is due (a sync saw
  a reason to fetch it and has not yet) and when it was fetched. The mark survives a sync that
  reaches its cap, so the next sync fetches it first even when that one sees no change.
- ``billingo_invoice_status_history``: append-only, one row per observed change of an invoice's
  payment status, paid date or cancelled flag, the first observation included. Seeded here with
  each existing invoice's current state (observed at its ``last_changed_at``, no sync), and the
  existing ``partially_paid`` invoices are marked due, so the first sync after the upgrade fetches
  their payments.
- ``sync_log``: ``payment_history_calls``, ``payment_histories_fetched``,
  ``payment_histories_deferred`` (plain ADD COLUMN: a SQLite table copy would break the views).

Views
``report_receivables`` gains what was recorded as paid and what is left open: a ``partially_paid``
invoice's open amount is its gross minus the sum of its recorded payments (in the document's
currency, in cents; HUF at the document's rate, as the gross). ``report_outstanding_invoices``,
both aging views, the cash-flow forecast and the partner balances count what is left; the partner
balances' ``paid`` adds the recorded part payments. New: ``report_partner_days_to_pay``, from the
status history (each invoice's first observation as ``paid``). The views of revision 0002 are
dropped and created again: PostgreSQL cannot change a view's columns in place. The shared SQL
helpers are read from revision 0002's file (a migration never changes, so they cannot move under
this one). On PostgreSQL the new tables and views get 0005's isolation (row-level security, the
``company_reader_rows`` policy, SELECT for ``billingo_reader``, ``security_invoker``).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import sqlalchemy as sa
from alembic import op

from billingo_pipeline.warehouse.schema import ExactDecimal, UtcDateTime

revision = '0011'
down_revision = '0010_billingo_entities'
branch_labels = None
depends_on = None


def _revision_0002():
    path = Path(__file__).with_name("0002_reporting_views.py")
    spec = importlib.util.spec_from_file_location("billingo_migration_0002", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


V2 = _revision_0002()

READER_ROLE = "billingo_reader"
POLICY = "company_reader_rows"
READER_COMPANY_IDS = "(SELECT m.company_id FROM billingo_access.company_reader_roles m WHERE m.role_name = current_user)"
NEW_TABLES = ("billingo_document_payments", "billingo_payment_history_state", "billingo_invoice_status_history")
# Dependent views first: the order in which they are dropped.
RECREATED_VIEWS = (
    "report_partner_payment_behaviour",
    "report_partner_balances",
    "report_cash_flow_forecast",
    "report_aging_by_partner",
    "report_aging_by_company",
    "report_outstanding_invoices",
    "report_receivables",
)
NEW_VIEWS = ("report_partner_days_to_pay",)
SYNC_LOG_COLUMNS = ("payment_history_calls", "payment_histories_fetched", "payment_histories_deferred")


def _huf_minor(d, minor: str) -> str:
    """``minor`` document-currency cents in HUF cents at the document's rate, rounded half away
    from zero; on SQLite in exact integers (the rate split into its integer part and 8 decimals)."""
    if d.sqlite:
        return (
            f"{minor} * (rate_e8 / 100000000)"
            f" + ({minor} * (rate_e8 % 100000000)"
            f" + CASE WHEN {minor} < 0 THEN -50000000 ELSE 50000000 END) / 100000000"
        )
    return f"CAST(ROUND({minor} * conversion_rate) AS BIGINT)"


def _receivables_sql(d) -> str:
    rate = "COALESCE(i.conversion_rate, CASE WHEN i.currency = 'HUF' THEN {one} END)".format(
        one="'1'" if d.sqlite else "1"
    )
    if d.sqlite:
        gross_minor = V2._sqlite_scaled_integer("i.gross_total", 2)
        price_minor = V2._sqlite_scaled_integer("p.price", 2)
        rate_column = f"\n        {V2._sqlite_scaled_integer(rate, 8)} AS rate_e8,"
    else:
        gross_minor = "CAST(ROUND(i.gross_total, 2) * 100 AS BIGINT)"
        price_minor = "CAST(ROUND(p.price, 2) * 100 AS BIGINT)"
        rate_column = ""
    is_open = f"COALESCE(payment_status, '') IN ({V2._sql_list(V2.OPEN_PAYMENT_STATUSES)})"
    days_overdue = d.greatest(d.days_between("as_of_date", "due_date"), "0")
    return f"""
CREATE VIEW report_receivables AS
WITH recorded AS (
    SELECT p.company_id, p.document_id, SUM({price_minor}) AS recorded_paid_minor
    FROM billingo_document_payments p
    GROUP BY p.company_id, p.document_id
),
documents AS (
    SELECT
        i.company_id, c.slug AS company_slug, i.document_id, i.invoice_number, i.document_type,
        i.partner_id, i.partner_name, i.partner_tax_number,
        i.invoice_date, i.due_date, i.paid_date, i.payment_status,
        i.currency, {rate} AS conversion_rate,
        {gross_minor} AS gross_minor,{rate_column}
        COALESCE(r.recorded_paid_minor, 0) AS recorded_paid_minor,
        {d.today} AS as_of_date
    FROM billingo_invoices i
    JOIN companies c ON c.id = i.company_id
    LEFT JOIN recorded r ON r.company_id = i.company_id AND r.document_id = i.document_id
    WHERE i.document_type IN ({V2._sql_list(V2.RECEIVABLE_TYPES)})
      AND NOT i.cancelled
      AND i.deleted_in_source_at IS NULL
),
amounts AS (
    SELECT documents.*,
        {_huf_minor(d, "gross_minor")} AS gross_huf_minor,
        {is_open} AS is_open,
        CASE WHEN {is_open} AND due_date IS NOT NULL THEN {days_overdue} END AS days_overdue,
        -- Only a partially paid invoice's recorded payments lower what is open: Billingo's status
        -- says what is settled, the history says how much of a part payment arrived.
        CASE WHEN {is_open} THEN gross_minor
                 - CASE WHEN payment_status = 'partially_paid' THEN recorded_paid_minor ELSE 0 END END AS open_minor
    FROM documents
),
net AS (
    SELECT amounts.*,
        CASE WHEN is_open THEN {_huf_minor(d, "open_minor")} END AS open_huf_minor
    FROM amounts
),
settled AS (
    SELECT net.*,
        CASE WHEN payment_status = 'paid' THEN gross_minor
             WHEN payment_status = 'partially_paid' THEN gross_minor - open_minor
             ELSE 0 END AS paid_minor,
        CASE WHEN payment_status = 'paid' THEN gross_huf_minor
             WHEN payment_status = 'partially_paid' THEN gross_huf_minor - open_huf_minor
             ELSE 0 END AS paid_huf_minor
    FROM net
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
         ELSE '90+' END AS aging_bucket,
    {d.money("recorded_paid_minor")} AS recorded_paid_amount,
    {d.money("paid_minor")} AS paid_amount,
    {d.money("paid_huf_minor")} AS paid_amount_huf,
    {d.money("open_minor")} AS open_amount,
    {d.money("open_huf_minor")} AS open_amount_huf,
    recorded_paid_minor, paid_minor, paid_huf_minor, open_minor, open_huf_minor
FROM settled
"""


def _outstanding_sql(d) -> str:
    return """
CREATE VIEW report_outstanding_invoices AS
SELECT
    company_id, company_slug, document_id, invoice_number, document_type,
    partner_id, partner_name, partner_tax_number,
    invoice_date, due_date, payment_status, is_partially_paid,
    currency, conversion_rate,
    open_amount, open_amount_huf,
    as_of_date, days_overdue,
    COALESCE(days_overdue, 0) > 0 AS is_overdue,
    aging_bucket,
    gross_amount, gross_amount_huf, recorded_paid_amount
FROM report_receivables
WHERE is_open
"""


def _net_of_payments(sql: str) -> str:
    """Revision 0002's aggregate over open receivables, counting what is left open."""
    return sql.replace("gross_huf_minor", "open_huf_minor").replace("gross_minor", "open_minor")


def _partner_balances_sql(d) -> str:
    overdue = "is_open AND days_overdue > 0"
    amounts = []
    for suffix, gross, paid, open_ in (
        ("amount", "gross_minor", "paid_minor", "open_minor"),
        ("huf", "gross_huf_minor", "paid_huf_minor", "open_huf_minor"),
    ):
        for name, minor, condition in (
            ("invoiced", gross, None), ("paid", paid, None), ("open", open_, "is_open"), ("overdue", open_, overdue),
        ):
            amounts.append(f"{d.money(V2._conditional_sum(minor, condition))} AS {name}_{suffix}")
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


def _days_to_pay_sql(d) -> str:
    # An invoice's payment is dated by the paid date of its first status-history row as paid:
    # what Billingo said when the warehouse first saw it paid, not whatever it says today.
    days_to_pay = d.days_between("f.paid_date", "r.invoice_date")
    days_late = d.greatest(d.days_between("f.paid_date", "r.due_date"), "0")
    return f"""
CREATE VIEW report_partner_days_to_pay AS
WITH first_paid_row AS (
    SELECT company_id, document_id, MIN(id) AS history_id
    FROM billingo_invoice_status_history
    WHERE payment_status = 'paid' AND NOT cancelled AND paid_date IS NOT NULL
    GROUP BY company_id, document_id
),
became_paid AS (
    SELECT h.company_id, h.document_id, h.paid_date, h.observed_at
    FROM first_paid_row f
    JOIN billingo_invoice_status_history h ON h.id = f.history_id
),
measured AS (
    SELECT r.company_id, r.company_slug, r.partner_id, r.partner_name, r.partner_tax_number,
        f.observed_at,
        CASE WHEN r.invoice_date IS NOT NULL THEN {days_to_pay} END AS days_to_pay,
        CASE WHEN r.due_date IS NOT NULL THEN {days_late} END AS days_late
    FROM became_paid f
    JOIN report_receivables r ON r.company_id = f.company_id AND r.document_id = f.document_id
)
SELECT
    company_id, company_slug, partner_id, partner_name, partner_tax_number,
    COUNT(*) AS paid_invoice_count,
    {d.average_2dp('days_to_pay')} AS average_days_to_pay,
    MIN(days_to_pay) AS min_days_to_pay,
    MAX(days_to_pay) AS max_days_to_pay,
    {d.average_2dp('days_late')} AS average_days_late,
    MIN(observed_at) AS first_paid_observed_at,
    MAX(observed_at) AS last_paid_observed_at
FROM measured
GROUP BY company_id, company_slug, partner_id, partner_name, partner_tax_number
"""


def _isolate(tables: tuple[str, ...], views: tuple[str, ...]) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in tables:
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"CREATE POLICY {POLICY} ON {table} FOR SELECT TO {READER_ROLE} USING (company_id IN {READER_COMPANY_IDS})")
        op.execute(f"GRANT SELECT ON {table} TO {READER_ROLE}")
    for view in views:
        op.execute(f"ALTER VIEW {view} SET (security_invoker = true)")
        op.execute(f"GRANT SELECT ON {view} TO {READER_ROLE}")


def upgrade() -> None:
    op.create_table(
        "billingo_document_payments",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
        sa.Column("company_id", sa.Integer(), sa.ForeignKey("companies.id"), nullable=False),
        sa.Column("document_id", sa.BigInteger(), nullable=False, comment="Billingo document id"),
        sa.Column("position", sa.Integer(), nullable=False, comment="1-based order in Billingo's payment history"),
        sa.Column("payment_date", sa.Date(), nullable=False),
        sa.Column("price", ExactDecimal(20, 6), nullable=False, comment="in the document's currency"),
        sa.Column("payment_method", sa.String(64), nullable=False),
        sa.Column("voucher_number", sa.String(128), nullable=True),
        sa.Column("conversion_rate", ExactDecimal(20, 8), nullable=True),
        sa.Column("fetched_at", UtcDateTime(), nullable=False),
        sa.Column("sync_id", sa.Integer(), sa.ForeignKey("sync_log.id"), nullable=True, comment="the sync that fetched it"),
        sa.UniqueConstraint("company_id", "document_id", "position"),
    )
    op.create_table(
        "billingo_payment_history_state",
        sa.Column("company_id", sa.Integer(), sa.ForeignKey("companies.id"), primary_key=True),
        sa.Column("document_id", sa.BigInteger(), primary_key=True),
        sa.Column("due_since", UtcDateTime(), nullable=True, comment="set when a sync saw a reason to fetch; cleared by the fetch"),
        sa.Column("due_sync_id", sa.Integer(), sa.ForeignKey("sync_log.id"), nullable=True),
        sa.Column("fetched_at", UtcDateTime(), nullable=True, comment="when the stored payments were fetched"),
        sa.Column("fetched_sync_id", sa.Integer(), sa.ForeignKey("sync_log.id"), nullable=True),
        sa.Column("not_found", sa.Boolean(), nullable=False, server_default=sa.false(), comment="Billingo answered 404 (document gone)"),
    )
    op.create_index(
        "ix_billingo_payment_history_state_company_id_due_since", "billingo_payment_history_state", ["company_id", "due_since"]
    )
    op.create_table(
        "billingo_invoice_status_history",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
        sa.Column("company_id", sa.Integer(), sa.ForeignKey("companies.id"), nullable=False),
        sa.Column("document_id", sa.BigInteger(), nullable=False),
        sa.Column("observed_at", UtcDateTime(), nullable=False, comment="when the sync wrote it"),
        sa.Column("sync_id", sa.Integer(), sa.ForeignKey("sync_log.id"), nullable=True, comment="NULL: taken over from the invoices when the table was created"),
        sa.Column("payment_status", sa.String(32), nullable=True),
        sa.Column("paid_date", sa.Date(), nullable=True, comment="only for paid / partially_paid, as on the invoice"),
        sa.Column("cancelled", sa.Boolean(), nullable=False),
        sa.Column("previous_payment_status", sa.String(32), nullable=True),
    )
    op.create_index(
        "ix_billingo_invoice_status_history_document",
        "billingo_invoice_status_history", ["company_id", "document_id", "observed_at"],
    )
    op.add_column("sync_log", sa.Column("payment_history_calls", sa.Integer(), nullable=False, server_default="0", comment="GET /documents/{id}/payments requests, retries included"))
    op.add_column("sync_log", sa.Column("payment_histories_fetched", sa.Integer(), nullable=False, server_default="0"))
    op.add_column("sync_log", sa.Column("payment_histories_deferred", sa.Integer(), nullable=False, server_default="0", comment="still due after this sync (over the cap): fetched first next time"))

    op.execute(
        "INSERT INTO billingo_invoice_status_history"
        " (company_id, document_id, observed_at, sync_id, payment_status, paid_date, cancelled, previous_payment_status)"
        " SELECT company_id, document_id, last_changed_at, NULL, payment_status, paid_date, cancelled, NULL"
        " FROM billingo_invoices ORDER BY company_id, document_id"
    )
    op.execute(
        "INSERT INTO billingo_payment_history_state (company_id, document_id, due_since, not_found)"
        " SELECT company_id, document_id, last_changed_at, " + ("0" if op.get_bind().dialect.name == "sqlite" else "false")
        + " FROM billingo_invoices WHERE payment_status = 'partially_paid' AND deleted_in_source_at IS NULL"
    )

    d = V2._Dialect(op.get_bind().dialect.name)
    for view in RECREATED_VIEWS:
        op.execute(f"DROP VIEW IF EXISTS {view}")
    for statement in (
        _receivables_sql(d),
        _outstanding_sql(d),
        _net_of_payments(V2._aging_sql(d, "report_aging_by_company", "company_id, company_slug")),
        _net_of_payments(V2._aging_sql(
            d, "report_aging_by_partner", "company_id, company_slug, partner_id, partner_name, partner_tax_number",
        )),
        _net_of_payments(V2._cash_flow_sql(d)),
        _partner_balances_sql(d),
        V2._payment_behaviour_sql(d),
        _days_to_pay_sql(d),
    ):
        op.execute(statement)
    _isolate(NEW_TABLES, RECREATED_VIEWS + NEW_VIEWS)


def downgrade() -> None:
    for view in NEW_VIEWS + RECREATED_VIEWS:
        op.execute(f"DROP VIEW IF EXISTS {view}")
    d = V2._Dialect(op.get_bind().dialect.name)
    for statement in (
        V2._receivables_sql(d),
        V2._outstanding_sql(d),
        V2._aging_sql(d, "report_aging_by_company", "company_id, company_slug"),
        V2._aging_sql(d, "report_aging_by_partner", "company_id, company_slug, partner_id, partner_name, partner_tax_number"),
        V2._cash_flow_sql(d),
        V2._partner_balances_sql(d),
        V2._payment_behaviour_sql(d),
    ):
        op.execute(statement)
    _isolate((), RECREATED_VIEWS)
    for column in reversed(SYNC_LOG_COLUMNS):
        op.drop_column("sync_log", column)
    for table in ("billingo_invoice_status_history", "billingo_payment_history_state", "billingo_document_payments"):
        op.drop_table(table)
