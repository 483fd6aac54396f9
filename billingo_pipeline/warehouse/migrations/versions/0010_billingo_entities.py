"""billingo entities: partners, spendings, document blocks, bank accounts; per-endpoint sync counts

Revision ID: 0010_billingo_entities
Revises: 0009
Create Date: 2026-12-01

- A raw table per list endpoint (``billingo_partners_raw``, ``billingo_spendings_raw``,
  ``billingo_document_blocks_raw``, ``billingo_bank_accounts_raw``), shaped as
  ``billingo_documents_raw``: payload, change hash, fetch times, last seen sync, missing mark.
- Their normalized tables (``billingo_partners``, ``billingo_spendings``,
  ``billingo_document_blocks``, ``billingo_bank_accounts``), unique per (company, Billingo id), with
  the raw hash they were built from and ``deleted_in_source_at``: marked, never deleted.
- ``sync_log_endpoints``: one row per (sync, endpoint) with its counts (fetched, created, updated,
  skipped, failed, marked missing, API calls, pages).

On PostgreSQL every new table gets the tenant isolation of revision 0005 (row-level security, the
``company_reader_rows`` policy, SELECT for ``billingo_reader``).

The columns are written out here, not imported: this revision must keep creating the same tables
when ``schema.py`` changes later.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from billingo_pipeline.warehouse.schema import ExactDecimal, UtcDateTime

revision = '0010_billingo_entities'
down_revision = '0009'
branch_labels = None
depends_on = None

READER_ROLE = "billingo_reader"
POLICY = "company_reader_rows"
READER_COMPANY_IDS = "(SELECT m.company_id FROM billingo_access.company_reader_roles m WHERE m.role_name = current_user)"
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
HASH_COMMENT = "normalize.change_hash: canonical JSON"
# (raw table, id column, entity, what the payload is)
RAW_TABLES = (
    ("billingo_partners_raw", "partner_id", "partner", "the Partner object as received"),
    ("billingo_spendings_raw", "spending_id", "spending", "the SpendingListItem object as received"),
    ("billingo_document_blocks_raw", "block_id", "document block", "the DocumentBlock object as received"),
    ("billingo_bank_accounts_raw", "bank_account_id", "bank account", "the BankAccount object as received"),
)


def _key() -> sa.Column:
    return sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False)


def _company() -> sa.Column:
    return sa.Column("company_id", sa.Integer(), nullable=False)


def _text(name: str, length: int | None, comment: str | None = None) -> sa.Column:
    kind = sa.Text() if length is None else sa.String(length=length)
    return sa.Column(name, kind, nullable=True, comment=comment)


def _money(name: str, comment: str) -> sa.Column:
    return sa.Column(name, ExactDecimal(20, 6), nullable=True, comment=comment)


def _constraints(table: str, id_column: str) -> list:
    return [
        sa.PrimaryKeyConstraint("id", name=f"pk_{table}"),
        sa.ForeignKeyConstraint(["company_id"], ["companies.id"], name=f"fk_{table}_company_id_companies"),
        sa.UniqueConstraint("company_id", id_column, name=f"uq_{table}_company_id_{id_column}"),
    ]


def _tracking() -> list[sa.Column]:
    return [
        sa.Column("source_hash", sa.String(length=64), nullable=False, comment="raw content_hash normalized from"),
        sa.Column("first_seen_at", UtcDateTime(), nullable=False),
        sa.Column("last_changed_at", UtcDateTime(), nullable=False),
        sa.Column("deleted_in_source_at", UtcDateTime(), nullable=True, comment="a complete sweep no longer returned it"),
    ]


def _normalized(table: str, id_column: str, id_comment: str, *columns: sa.Column) -> None:
    op.create_table(
        table, _key(), _company(),
        sa.Column(id_column, sa.BigInteger(), nullable=False, comment=id_comment),
        *columns, *_tracking(), *_constraints(table, id_column),
    )


def upgrade() -> None:
    for table, id_column, entity, payload in RAW_TABLES:
        op.create_table(
            table, _key(), _company(),
            sa.Column(id_column, sa.BigInteger(), nullable=False, comment=f"Billingo {entity} id"),
            sa.Column("payload", JSON, nullable=False, comment=payload),
            sa.Column("content_hash", sa.String(length=64), nullable=False, comment=HASH_COMMENT),
            _text("payload_verbatim", None, "exact JSON text, only when payload cannot hold it (NUL, non-finite numbers)"),
            sa.Column("first_fetched_at", UtcDateTime(), nullable=False),
            sa.Column("last_fetched_at", UtcDateTime(), nullable=False),
            sa.Column("last_seen_sync_id", sa.Integer(), nullable=True),
            sa.Column("missing_since", UtcDateTime(), nullable=True),
            *_constraints(table, id_column),
            sa.ForeignKeyConstraint(["last_seen_sync_id"], ["sync_log.id"], name=f"fk_{table}_last_seen_sync_id_sync_log"),
        )
    _normalized(
        "billingo_partners", "partner_id", "Billingo partner id (invoices: partner_id)",
        _text("name", 255), _text("tax_number", 64, "taxcode"), _text("group_member_tax_number", 64),
        _text("tax_type", 32, "PartnerTaxType, as text"), _text("country_code", 8), _text("post_code", 32),
        _text("city", 128), _text("address", 255), _text("emails", None, "comma-separated"), _text("phone", 64),
        _text("iban", 64), _text("swift", 32), _text("account_number", 64), _text("general_ledger_number", 64),
        _text("default_payment_method", 64, "custom_billing_settings.payment_method"),
        sa.Column("default_due_days", sa.Integer(), nullable=True, comment="custom_billing_settings.due_days"),
    )
    _normalized(
        "billingo_spendings", "spending_id", "Billingo spending id",
        _text("invoice_number", 128, "the supplier's invoice number"), _text("category", 64, "Billingo Category, as text"),
        sa.Column("invoice_date", sa.Date(), nullable=True), sa.Column("fulfillment_date", sa.Date(), nullable=True),
        sa.Column("due_date", sa.Date(), nullable=True), sa.Column("paid_at", sa.Date(), nullable=True, comment="null while unpaid"),
        _text("currency", 8), sa.Column("conversion_rate", ExactDecimal(20, 8), nullable=True),
        _money("gross_total", "total_gross"), _money("vat_total", "total_vat_amount"),
        _money("gross_total_local", "total_gross_local (HUF)"), _money("vat_total_local", "total_vat_amount_local (HUF)"),
        _text("payment_method", 64),
        sa.Column("created_by_nav", sa.Boolean(), nullable=True, comment="is_created_by_nav: read from NAV, not typed in"),
        sa.Column("partner_id", sa.BigInteger(), nullable=True), _text("partner_name", 255),
        _text("partner_tax_number", 64, "partner.tax_code"), _text("partner_iban", 64), _text("partner_account_number", 64),
        _text("comment", None),
    )
    op.create_index("ix_billingo_spendings_company_id_paid_at_due_date", "billingo_spendings", ["company_id", "paid_at", "due_date"])
    _normalized(
        "billingo_document_blocks", "block_id", "Billingo block id (invoices: block_id)",
        _text("name", 255), _text("prefix", 64, "invoice number prefix"), _text("block_type", 32, "DocumentBlockType, as text"),
    )
    _normalized(
        "billingo_bank_accounts", "bank_account_id", "Billingo bank account id",
        _text("name", 255), _text("account_number", 64), _text("iban", 64, "account_number_iban"), _text("swift", 32),
        _text("currency", 8),
    )
    op.create_table(
        "sync_log_endpoints",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sync_id", sa.Integer(), nullable=False),
        _company(),
        sa.Column("endpoint", sa.String(length=32), nullable=False, comment="documents | partners | spendings | document_blocks | bank_accounts"),
        sa.Column("mode", sa.String(length=16), nullable=True, comment="full | incremental: how this endpoint was read"),
        *(sa.Column(name, sa.Integer(), nullable=False, server_default="0", comment=comment) for name, comment in (
            ("fetched", None), ("created", None), ("updated", None), ("skipped", "unchanged by hash"), ("failed", None),
            ("marked_missing", None), ("api_calls", None), ("pages_fetched", None),
        )),
        sa.Column("fetch_complete", sa.Boolean(), nullable=True),
        sa.Column("duration_seconds", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_sync_log_endpoints"),
        sa.ForeignKeyConstraint(["sync_id"], ["sync_log.id"], name="fk_sync_log_endpoints_sync_id_sync_log", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["company_id"], ["companies.id"], name="fk_sync_log_endpoints_company_id_companies"),
        sa.UniqueConstraint("sync_id", "endpoint", name="uq_sync_log_endpoints_sync_id_endpoint"),
    )
    op.create_index("ix_sync_log_endpoints_company_id_endpoint", "sync_log_endpoints", ["company_id", "endpoint"])
    if op.get_bind().dialect.name == "postgresql":
        for table in NEW_TABLES:
            op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
            op.execute(f"CREATE POLICY {POLICY} ON {table} FOR SELECT TO {READER_ROLE} USING (company_id IN {READER_COMPANY_IDS})")
            op.execute(f"GRANT SELECT ON {table} TO {READER_ROLE}")


NEW_TABLES = (
    *(table for table, *_ in RAW_TABLES),
    "billingo_partners", "billingo_spendings", "billingo_document_blocks", "billingo_bank_accounts", "sync_log_endpoints",
)


def downgrade() -> None:
    for table in reversed(NEW_TABLES):
        op.drop_table(table)
