"""The warehouse schema: every table the pipeline writes, in one place.

Alembic migrations under ``migrations/versions`` create exactly this schema; a test compares the
migrated database with this metadata on SQLite and PostgreSQL, so the two cannot drift.

Conventions
- Every row carries ``company_id``: one company's data never shares a key with another's.
- Money and quantities are exact decimals (``ExactDecimal``), never floats.
- Timestamps are timezone-aware UTC (``UtcDateTime``) on both dialects.
- Billingo enums (type, payment status/method, currency, VAT) are stored as text, because the live
  API returns values the published spec does not list.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from decimal import ROUND_HALF_UP, Decimal

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.types import TypeDecorator

from ..normalize import ColumnLimit, RowLimits

# Constraint names are fixed so migrations on both dialects can refer to them.
metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


def _exact_value(scale: int, as_text: bool) -> Callable[[Decimal | None], Decimal | str | None]:
    quantum = Decimal(1).scaleb(-scale)
    # Plain digits. ``str`` writes them for a Decimal of exponent -6..0, and 2.5x faster than
    # ``format(value, "f")``, which is needed beyond (``str(Decimal("0E-8"))`` is "0E-8").
    plain = str if scale <= 6 else _plain_digits

    def exact(value):
        if value is None:
            return None
        if type(value) is not Decimal and not isinstance(value, Decimal):
            raise TypeError(f"ExactDecimal takes Decimal values, got {type(value).__name__}")
        # Rounded here, identically on both dialects: PostgreSQL's NUMERIC would round on its
        # own while SQLite's text would keep float artefacts such as 0.30000000000000004.
        value = value.quantize(quantum, rounding=ROUND_HALF_UP)
        return plain(value) if as_text else value

    return exact


def _plain_digits(value: Decimal) -> str:
    return format(value, "f")


class ExactDecimal(TypeDecorator):
    """NUMERIC on PostgreSQL; canonical decimal text on SQLite, whose NUMERIC is a binary float."""

    impl = sa.Numeric
    cache_ok = True

    def __init__(self, precision: int = 20, scale: int = 6):
        super().__init__()
        self.precision = precision
        self.scale = scale
        self._bind = {as_text: _exact_value(scale, as_text) for as_text in (True, False)}

    def __repr__(self) -> str:
        return f"ExactDecimal({self.precision}, {self.scale})"

    def load_dialect_impl(self, dialect):
        if dialect.name == "sqlite":
            return dialect.type_descriptor(sa.String(self.precision + 2))
        return dialect.type_descriptor(sa.Numeric(self.precision, self.scale, asdecimal=True))

    def exact_value(self, as_text: bool) -> Callable[[Decimal | None], Decimal | str | None]:
        """The bind step as one function (``bulk`` calls it for every money value of a page):
        the Decimal rounded to the column's scale, as plain digits when ``as_text`` (SQLite's
        column, and PostgreSQL's COPY, get ``"0.00000001"``, never ``"1E-8"``)."""
        return self._bind[as_text]

    def process_bind_param(self, value, dialect):
        return self._bind[dialect.name == "sqlite"](value)

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return value if isinstance(value, Decimal) else Decimal(str(value))


class UtcDateTime(TypeDecorator):
    """Aware UTC datetimes in and out; SQLite stores them naive (in UTC)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("UtcDateTime needs an aware datetime")
        value = value.astimezone(dt.timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.timezone.utc)
        return value.astimezone(dt.timezone.utc)


# JSON documents: JSONB on PostgreSQL so analysts can query the payload; JSON text on SQLite.
JsonDocument = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def Money() -> ExactDecimal:  # noqa: N802 - reads as a column type
    return ExactDecimal(20, 6)


def _now_column(name: str, **kw) -> sa.Column:
    return sa.Column(name, UtcDateTime(), nullable=False, **kw)


companies = sa.Table(
    "companies",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("slug", sa.String(64), nullable=False, unique=True, comment="Dagster partition key"),
    sa.Column("name", sa.String(255), nullable=False),
    # The BILLINGO_SYNC feature flag: a company is synced only when this and is_active hold.
    sa.Column("billingo_sync_enabled", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("is_active", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("api_key_encrypted", sa.Text, nullable=True, comment="Fernet token, never plaintext"),
    sa.Column("api_key_fingerprint", sa.String(32), nullable=True),
    sa.Column("api_key_configured_at", UtcDateTime(), nullable=True),
    sa.Column("api_key_checked_at", UtcDateTime(), nullable=True),
    _now_column("created_at"),
    _now_column("updated_at"),
)

sync_log = sa.Table(
    "sync_log",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("company_id", sa.Integer, sa.ForeignKey("companies.id"), nullable=False),
    sa.Column("run_id", sa.String(64), nullable=False, comment="Dagster run id"),
    sa.Column("trigger", sa.String(32), nullable=False, comment="schedule | sensor | backfill | manual (the UI) | cli | demo: what started the sync"),
    sa.Column("status", sa.String(16), nullable=False, comment="RUNNING | COMPLETED | PARTIAL | FAILED"),
    _now_column("started_at"),
    sa.Column("finished_at", UtcDateTime(), nullable=True),
    sa.Column("duration_seconds", sa.Float, nullable=True),
    sa.Column("invoices_processed", sa.Integer, nullable=False, server_default="0"),
    sa.Column("invoices_created", sa.Integer, nullable=False, server_default="0"),
    sa.Column("invoices_updated", sa.Integer, nullable=False, server_default="0"),
    sa.Column("invoices_skipped", sa.Integer, nullable=False, server_default="0"),
    sa.Column("invoices_failed", sa.Integer, nullable=False, server_default="0"),
    sa.Column("invoices_marked_deleted", sa.Integer, nullable=False, server_default="0"),
    sa.Column("items_written", sa.Integer, nullable=False, server_default="0"),
    sa.Column("api_calls", sa.Integer, nullable=False, server_default="0"),
    sa.Column("pages_fetched", sa.Integer, nullable=False, server_default="0"),
    sa.Column("documents_fetched", sa.Integer, nullable=False, server_default="0"),
    # What Billingo's newest page reported (last_page, total): how far a RUNNING sync is.
    sa.Column("pages_total", sa.Integer, nullable=True, comment="Billingo's last_page, as reported"),
    sa.Column("documents_total", sa.Integer, nullable=True, comment="Billingo's total, as reported"),
    # False when paging could not prove it saw every document; vanished-marking is then skipped.
    sa.Column("fetch_complete", sa.Boolean, nullable=True),
    sa.Column("errors", JsonDocument, nullable=False, comment="[{document_id, message}]"),
    sa.Column("error_message", sa.Text, nullable=True, comment="why a FAILED sync failed"),
    sa.Column("check_results", JsonDocument, nullable=True, comment="asset-check outcomes"),
    # Liveness of a RUNNING row (sync_log.start_sync): a live sync refreshes heartbeat_at; holder
    # names its process so a sync on the same host sees at once when that process is gone.
    sa.Column("heartbeat_at", UtcDateTime(), nullable=True, comment="refreshed while the sync is alive"),
    sa.Column("holder", sa.String(255), nullable=True, comment="host:pid of the syncing process"),
    # Incremental sync (sync.plan_sync): how the sync fetched and from which cursor. A full sweep is
    # the only mode that may mark documents deleted in source.
    sa.Column("mode", sa.String(16), nullable=True, comment="full | incremental"),
    sa.Column("modified_since", UtcDateTime(), nullable=True, comment="last_modified_date asked for (incremental)"),
    sa.Column("cursor", UtcDateTime(), nullable=True, comment="Billingo's clock at the start of the sync"),
    sa.Column("normalization_revision", sa.Integer, nullable=True),
    # Payment histories (GET /documents/{id}/payments) fetched after the sweep, within a per-sync cap.
    sa.Column("payment_history_calls", sa.Integer, nullable=False, server_default="0", comment="GET /documents/{id}/payments requests, retries included"),
    sa.Column("payment_histories_fetched", sa.Integer, nullable=False, server_default="0"),
    sa.Column("payment_histories_deferred", sa.Integer, nullable=False, server_default="0", comment="still due after this sync (over the cap): fetched first next time"),
    sa.UniqueConstraint("company_id", "run_id"),
    sa.Index(None, "company_id", "started_at"),
    # One sync per company at a time, whatever the run layout (single partitions, ranges, the CLI):
    # a second RUNNING row for the same company cannot exist (sync_log.start_sync explains).
    sa.Index(
        "ux_sync_log_company_id_running",
        "company_id",
        unique=True,
        sqlite_where=sa.text("status = 'RUNNING'"),
        postgresql_where=sa.text("status = 'RUNNING'"),
    ),
)

def raw_entity_table(name: str, id_column: str, *, entity: str, payload_comment: str, hash_comment: str) -> sa.Table:
    """The raw table of one Billingo list endpoint, one shape for all: the payload as received, its
    change hash, when it was fetched, the sync that last saw it and since when a complete sweep no
    longer returns it. Unique per (company, Billingo id)."""
    return sa.Table(
        name,
        metadata,
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
        sa.Column("company_id", sa.Integer, sa.ForeignKey("companies.id"), nullable=False),
        sa.Column(id_column, sa.BigInteger, nullable=False, comment=f"Billingo {entity} id"),
        sa.Column("payload", JsonDocument, nullable=False, comment=payload_comment),
        sa.Column("content_hash", sa.String(64), nullable=False, comment=hash_comment),
        # Nothing Billingo sent is dropped: a payload JSON(B) cannot hold as it is (a NUL character, a
        # non-finite number) is kept here as exact JSON text, and `payload` holds a queryable stand-in.
        sa.Column(
            "payload_verbatim", sa.Text, nullable=True,
            comment="exact JSON text, only when payload cannot hold it (NUL, non-finite numbers)",
        ),
        _now_column("first_fetched_at"),
        _now_column("last_fetched_at"),
        sa.Column("last_seen_sync_id", sa.Integer, sa.ForeignKey("sync_log.id"), nullable=True),
        # Set when a complete fetch no longer returns it (Billingo deletes only drafts of documents).
        sa.Column("missing_since", UtcDateTime(), nullable=True),
        sa.UniqueConstraint("company_id", id_column),
    )


ENTITY_HASH_COMMENT = "normalize.change_hash: canonical JSON"

billingo_documents_raw = raw_entity_table(
    "billingo_documents_raw", "document_id", entity="document",
    payload_comment="the Document object as received",
    hash_comment="normalize.change_hash: canonical JSON, unpaid paid_date ignored",
)

billingo_invoices = sa.Table(
    "billingo_invoices",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("company_id", sa.Integer, sa.ForeignKey("companies.id"), nullable=False),
    sa.Column("document_id", sa.BigInteger, nullable=False, comment="Billingo document id"),
    sa.Column("invoice_number", sa.String(128), nullable=True),
    sa.Column("document_type", sa.String(32), nullable=True, comment="Billingo DocumentType, as text"),
    sa.Column("correction_type", sa.String(32), nullable=True),
    sa.Column("block_id", sa.BigInteger, nullable=True),
    sa.Column("cancelled", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("invoice_date", sa.Date, nullable=True),
    sa.Column("fulfillment_date", sa.Date, nullable=True),
    sa.Column("due_date", sa.Date, nullable=True),
    # Only kept for paid / partially_paid documents: Billingo shows "today" for unpaid ones.
    sa.Column("paid_date", sa.Date, nullable=True),
    sa.Column("currency", sa.String(8), nullable=True),
    sa.Column("conversion_rate", ExactDecimal(20, 8), nullable=True),
    sa.Column("net_total", Money(), nullable=True, comment="summary.net_amount"),
    sa.Column("vat_total", Money(), nullable=True, comment="summary.vat_amount"),
    sa.Column("gross_total", Money(), nullable=True, comment="gross_total"),
    sa.Column("net_total_local", Money(), nullable=True, comment="summary.net_amount_local (HUF)"),
    sa.Column("vat_total_local", Money(), nullable=True, comment="summary.vat_amount_local (HUF)"),
    sa.Column("gross_total_local", Money(), nullable=True, comment="summary.gross_amount_local (HUF)"),
    sa.Column("payment_method", sa.String(64), nullable=True),
    sa.Column("payment_status", sa.String(32), nullable=True),
    sa.Column("rounding", sa.String(16), nullable=True, comment="settings.round"),
    sa.Column("language", sa.String(8), nullable=True),
    sa.Column("electronic", sa.Boolean, nullable=True),
    sa.Column("partner_id", sa.BigInteger, nullable=True),
    sa.Column("partner_name", sa.String(255), nullable=True),
    sa.Column("partner_tax_number", sa.String(64), nullable=True),
    sa.Column("partner_iban", sa.String(64), nullable=True),
    sa.Column("partner_swift", sa.String(32), nullable=True),
    sa.Column("partner_account_number", sa.String(64), nullable=True),
    sa.Column("partner_country_code", sa.String(8), nullable=True),
    sa.Column("partner_post_code", sa.String(32), nullable=True),
    sa.Column("partner_city", sa.String(128), nullable=True),
    sa.Column("partner_address", sa.String(255), nullable=True),
    sa.Column("partner_emails", sa.Text, nullable=True, comment="comma-separated"),
    sa.Column("comment", sa.Text, nullable=True),
    sa.Column("source_hash", sa.String(64), nullable=False, comment="raw content_hash normalized from"),
    _now_column("first_seen_at"),
    _now_column("last_changed_at"),
    sa.Column("deleted_in_source_at", UtcDateTime(), nullable=True),
    sa.UniqueConstraint("company_id", "document_id"),
    sa.Index(None, "company_id", "invoice_number"),
    sa.Index(None, "company_id", "payment_status", "due_date"),
)

billingo_invoice_items = sa.Table(
    "billingo_invoice_items",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("company_id", sa.Integer, nullable=False),
    sa.Column("document_id", sa.BigInteger, nullable=False),
    sa.Column("position", sa.Integer, nullable=False, comment="1-based order on the document"),
    sa.Column("product_id", sa.BigInteger, nullable=True),
    sa.Column("name", sa.String(512), nullable=True),
    sa.Column("quantity", Money(), nullable=True),
    sa.Column("unit", sa.String(64), nullable=True),
    sa.Column("net_unit_price", Money(), nullable=True),
    sa.Column("vat_rate", sa.String(16), nullable=True, comment="as Billingo writes it: 27%, 5,5%, AAM"),
    sa.Column("vat_percent", ExactDecimal(7, 4), nullable=True, comment="numeric rate; null for AAM etc."),
    sa.Column("entitlement", sa.String(32), nullable=True),
    sa.Column("net_amount", Money(), nullable=True),
    sa.Column("vat_amount", Money(), nullable=True),
    sa.Column("gross_amount", Money(), nullable=True),
    sa.Column("comment", sa.Text, nullable=True),
    sa.UniqueConstraint("company_id", "document_id", "position"),
    # An item cannot outlive its invoice, nor point at another company's invoice.
    sa.ForeignKeyConstraint(
        ["company_id", "document_id"],
        ["billingo_invoices.company_id", "billingo_invoices.document_id"],
        ondelete="CASCADE",
    ),
)

billingo_document_payments = sa.Table(
    "billingo_document_payments",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("company_id", sa.Integer, sa.ForeignKey("companies.id"), nullable=False),
    sa.Column("document_id", sa.BigInteger, nullable=False, comment="Billingo document id"),
    sa.Column("position", sa.Integer, nullable=False, comment="1-based order in Billingo's payment history"),
    sa.Column("payment_date", sa.Date, nullable=False),
    sa.Column("price", Money(), nullable=False, comment="in the document's currency"),
    sa.Column("payment_method", sa.String(64), nullable=False),
    sa.Column("voucher_number", sa.String(128), nullable=True),
    sa.Column("conversion_rate", ExactDecimal(20, 8), nullable=True),
    _now_column("fetched_at"),
    sa.Column("sync_id", sa.Integer, sa.ForeignKey("sync_log.id"), nullable=True, comment="the sync that fetched it"),
    sa.UniqueConstraint("company_id", "document_id", "position"),
)

# One row per document whose payment history is due or has been fetched: the "due" mark survives
# a sync that hits its cap (or fails), so the next one fetches it first even if it sees no change.
billingo_payment_history_state = sa.Table(
    "billingo_payment_history_state",
    metadata,
    sa.Column("company_id", sa.Integer, sa.ForeignKey("companies.id"), primary_key=True),
    sa.Column("document_id", sa.BigInteger, primary_key=True),
    sa.Column("due_since", UtcDateTime(), nullable=True, comment="set when a sync saw a reason to fetch; cleared by the fetch"),
    sa.Column("due_sync_id", sa.Integer, sa.ForeignKey("sync_log.id"), nullable=True),
    sa.Column("fetched_at", UtcDateTime(), nullable=True, comment="when the stored payments were fetched"),
    sa.Column("fetched_sync_id", sa.Integer, sa.ForeignKey("sync_log.id"), nullable=True),
    sa.Column("not_found", sa.Boolean, nullable=False, server_default=sa.false(), comment="Billingo answered 404 (document gone)"),
    sa.Index(None, "company_id", "due_since"),
)

# Append-only: one row per observed change of an invoice's payment status, paid date or cancelled
# flag (the first observation included). An invoice's state on a date is its newest row observed
# before it; "became paid" is its first row with status paid.
billingo_invoice_status_history = sa.Table(
    "billingo_invoice_status_history",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("company_id", sa.Integer, sa.ForeignKey("companies.id"), nullable=False),
    sa.Column("document_id", sa.BigInteger, nullable=False),
    sa.Column("observed_at", UtcDateTime(), nullable=False, comment="when the sync wrote it"),
    sa.Column("sync_id", sa.Integer, sa.ForeignKey("sync_log.id"), nullable=True, comment="NULL: taken over from the invoices when the table was created"),
    sa.Column("payment_status", sa.String(32), nullable=True),
    sa.Column("paid_date", sa.Date, nullable=True, comment="only for paid / partially_paid, as on the invoice"),
    sa.Column("cancelled", sa.Boolean, nullable=False),
    sa.Column("previous_payment_status", sa.String(32), nullable=True),
    sa.Index("ix_billingo_invoice_status_history_document", "company_id", "document_id", "observed_at"),
)


# --- the other list endpoints (endpoints/partners.py, spendings.py, document_blocks.py,
# bank_accounts.py): a raw table each and a normalized one. A normalized row remembers the raw hash
# it was built from (``source_hash``) and is marked, never deleted, when Billingo no longer returns it.


def normalized_entity_table(name: str, id_column: str, id_comment: str, *columns: sa.SchemaItem) -> sa.Table:
    """A normalized table of one list endpoint: the company, the Billingo id (unique per company),
    ``columns``, and the raw hash it was built from with its first-seen, changed and deleted marks."""
    return sa.Table(
        name,
        metadata,
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
        sa.Column("company_id", sa.Integer, sa.ForeignKey("companies.id"), nullable=False),
        sa.Column(id_column, sa.BigInteger, nullable=False, comment=id_comment),
        *columns,
        sa.Column("source_hash", sa.String(64), nullable=False, comment="raw content_hash normalized from"),
        _now_column("first_seen_at"),
        _now_column("last_changed_at"),
        sa.Column("deleted_in_source_at", UtcDateTime(), nullable=True, comment="a complete sweep no longer returned it"),
        sa.UniqueConstraint("company_id", id_column),
    )


billingo_partners_raw = raw_entity_table(
    "billingo_partners_raw", "partner_id", entity="partner",
    payload_comment="the Partner object as received", hash_comment=ENTITY_HASH_COMMENT,
)

billingo_partners = normalized_entity_table(
    "billingo_partners", "partner_id", "Billingo partner id (invoices: partner_id)",
    sa.Column("name", sa.String(255), nullable=True),
    sa.Column("tax_number", sa.String(64), nullable=True, comment="taxcode"),
    sa.Column("group_member_tax_number", sa.String(64), nullable=True),
    sa.Column("tax_type", sa.String(32), nullable=True, comment="PartnerTaxType, as text"),
    sa.Column("country_code", sa.String(8), nullable=True),
    sa.Column("post_code", sa.String(32), nullable=True),
    sa.Column("city", sa.String(128), nullable=True),
    sa.Column("address", sa.String(255), nullable=True),
    sa.Column("emails", sa.Text, nullable=True, comment="comma-separated"),
    sa.Column("phone", sa.String(64), nullable=True),
    sa.Column("iban", sa.String(64), nullable=True),
    sa.Column("swift", sa.String(32), nullable=True),
    sa.Column("account_number", sa.String(64), nullable=True),
    sa.Column("general_ledger_number", sa.String(64), nullable=True),
    sa.Column("default_payment_method", sa.String(64), nullable=True, comment="custom_billing_settings.payment_method"),
    sa.Column("default_due_days", sa.Integer, nullable=True, comment="custom_billing_settings.due_days"),
)

billingo_spendings_raw = raw_entity_table(
    "billingo_spendings_raw", "spending_id", entity="spending",
    payload_comment="the SpendingListItem object as received", hash_comment=ENTITY_HASH_COMMENT,
)

billingo_spendings = normalized_entity_table(
    "billingo_spendings", "spending_id", "Billingo spending id",
    sa.Column("invoice_number", sa.String(128), nullable=True, comment="the supplier's invoice number"),
    sa.Column("category", sa.String(64), nullable=True, comment="Billingo Category, as text"),
    sa.Column("invoice_date", sa.Date, nullable=True),
    sa.Column("fulfillment_date", sa.Date, nullable=True),
    sa.Column("due_date", sa.Date, nullable=True),
    sa.Column("paid_at", sa.Date, nullable=True, comment="null while unpaid"),
    sa.Column("currency", sa.String(8), nullable=True),
    sa.Column("conversion_rate", ExactDecimal(20, 8), nullable=True),
    sa.Column("gross_total", Money(), nullable=True, comment="total_gross"),
    sa.Column("vat_total", Money(), nullable=True, comment="total_vat_amount"),
    sa.Column("gross_total_local", Money(), nullable=True, comment="total_gross_local (HUF)"),
    sa.Column("vat_total_local", Money(), nullable=True, comment="total_vat_amount_local (HUF)"),
    sa.Column("payment_method", sa.String(64), nullable=True),
    sa.Column("created_by_nav", sa.Boolean, nullable=True, comment="is_created_by_nav: read from NAV, not typed in"),
    sa.Column("partner_id", sa.BigInteger, nullable=True),
    sa.Column("partner_name", sa.String(255), nullable=True),
    sa.Column("partner_tax_number", sa.String(64), nullable=True, comment="partner.tax_code"),
    sa.Column("partner_iban", sa.String(64), nullable=True),
    sa.Column("partner_account_number", sa.String(64), nullable=True),
    sa.Column("comment", sa.Text, nullable=True),
    sa.Index(None, "company_id", "paid_at", "due_date"),
)

billingo_document_blocks_raw = raw_entity_table(
    "billingo_document_blocks_raw", "block_id", entity="document block",
    payload_comment="the DocumentBlock object as received", hash_comment=ENTITY_HASH_COMMENT,
)

billingo_document_blocks = normalized_entity_table(
    "billingo_document_blocks", "block_id", "Billingo block id (invoices: block_id)",
    sa.Column("name", sa.String(255), nullable=True),
    sa.Column("prefix", sa.String(64), nullable=True, comment="invoice number prefix"),
    sa.Column("block_type", sa.String(32), nullable=True, comment="DocumentBlockType, as text"),
)

billingo_bank_accounts_raw = raw_entity_table(
    "billingo_bank_accounts_raw", "bank_account_id", entity="bank account",
    payload_comment="the BankAccount object as received", hash_comment=ENTITY_HASH_COMMENT,
)

billingo_bank_accounts = normalized_entity_table(
    "billingo_bank_accounts", "bank_account_id", "Billingo bank account id",
    sa.Column("name", sa.String(255), nullable=True),
    sa.Column("account_number", sa.String(64), nullable=True),
    sa.Column("iban", sa.String(64), nullable=True, comment="account_number_iban"),
    sa.Column("swift", sa.String(32), nullable=True),
    sa.Column("currency", sa.String(8), nullable=True),
)

# Per-endpoint counts of each sync (sync.sync_company): a child row per (sync, endpoint), so they
# are plain columns in SQL on both dialects rather than JSON whose functions differ.
sync_log_endpoints = sa.Table(
    "sync_log_endpoints",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("sync_id", sa.Integer, sa.ForeignKey("sync_log.id", ondelete="CASCADE"), nullable=False),
    sa.Column("company_id", sa.Integer, sa.ForeignKey("companies.id"), nullable=False),
    sa.Column("endpoint", sa.String(32), nullable=False, comment="documents | partners | spendings | document_blocks | bank_accounts"),
    sa.Column("mode", sa.String(16), nullable=True, comment="full | incremental: how this endpoint was read"),
    sa.Column("fetched", sa.Integer, nullable=False, server_default="0"),
    sa.Column("created", sa.Integer, nullable=False, server_default="0"),
    sa.Column("updated", sa.Integer, nullable=False, server_default="0"),
    sa.Column("skipped", sa.Integer, nullable=False, server_default="0", comment="unchanged by hash"),
    sa.Column("failed", sa.Integer, nullable=False, server_default="0"),
    sa.Column("marked_missing", sa.Integer, nullable=False, server_default="0"),
    sa.Column("api_calls", sa.Integer, nullable=False, server_default="0"),
    sa.Column("pages_fetched", sa.Integer, nullable=False, server_default="0"),
    sa.Column("fetch_complete", sa.Boolean, nullable=True),
    sa.Column("duration_seconds", sa.Float, nullable=True),
    sa.UniqueConstraint("sync_id", "endpoint"),
    sa.Index(None, "company_id", "endpoint"),
)


def column_limits(table: sa.Table) -> dict[str, ColumnLimit]:
    """What each column of ``table`` can hold, read from its type: the same limits on both
    dialects, so SQLite refuses what PostgreSQL would (SQLite itself ignores lengths)."""
    limits: dict[str, ColumnLimit] = {}
    for column in table.columns:
        kind = column.type
        if isinstance(kind, ExactDecimal):
            limits[column.name] = ColumnLimit(digits=(kind.precision, kind.scale))
        elif isinstance(kind, sa.String):  # Text is a String without a length
            limits[column.name] = ColumnLimit(max_length=kind.length, text=True)
        elif isinstance(kind, sa.Integer):
            limits[column.name] = ColumnLimit(integer_bits=64 if isinstance(kind, sa.BigInteger) else 32)
    return limits


#: What normalized invoice and item rows are checked against before they are written.
WAREHOUSE_ROW_LIMITS = RowLimits(invoice=column_limits(billingo_invoices), item=column_limits(billingo_invoice_items))
