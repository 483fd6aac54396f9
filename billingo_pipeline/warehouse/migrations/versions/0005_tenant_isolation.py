"""tenant isolation on PostgreSQL: row-level security per company, a read-only reporting role

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01

PostgreSQL only; on SQLite (embedded, one user) this revision does nothing and isolation is the
application's (every query of the pipeline and the CLI is scoped to one company).

- ``billingo_reader``: a NOLOGIN group role with SELECT on every tenant table and reporting view,
  and on the columns of ``companies`` except the key's (``api_key_encrypted``,
  ``api_key_fingerprint``). Roles are cluster-wide, so it is created only when missing (several
  databases may migrate at once) and never dropped by a downgrade (other databases may use it).
- ``billingo_access.company_reader_roles(role_name, company_id)``: which login role reads which
  company. ``billingo-pipeline company grant-reader`` fills it. Readers see only their own rows of
  it. It lives in its own schema: it is access control, not warehouse data, and PostgreSQL-only.
- Row-level security on every table with a ``company_id`` (and on ``companies`` by ``id``): a
  reader sees the rows of the companies mapped to ``current_user``, which a session cannot change
  on its own (``SET ROLE`` only reaches roles it is a member of; a per-session setting could be
  set by anyone). The policies are for ``billingo_reader`` only and allow SELECT only; every
  other role that is not the owner sees nothing. The owner, which the pipeline connects as (it
  runs these migrations), is not subject to them: row-level security is enabled, not forced.
- The views run with the reader's rights (``security_invoker``), or they would read the tables as
  their owner and show every company. ``sync_health`` tells whether a key is configured from
  ``api_key_configured_at`` instead of ``api_key_encrypted`` (set and cleared together), because a
  view run as the reader may not touch a column the reader cannot read.

A table or view added later must get the same treatment in its own migration (enable row-level
security, the ``company_reader_rows`` policy, SELECT for ``billingo_reader``, ``security_invoker``);
``test_tenant_isolation`` walks the live catalog and fails for one that does not.
"""
from __future__ import annotations

from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

READER_ROLE = "billingo_reader"
ACCESS_SCHEMA = "billingo_access"
MAPPING_TABLE = f"{ACCESS_SCHEMA}.company_reader_roles"
POLICY = "company_reader_rows"

TENANT_TABLES = ("billingo_documents_raw", "billingo_invoices", "billingo_invoice_items", "sync_log")
# Written out, not imported: this revision must keep granting the same columns when the code changes.
COMPANY_COLUMNS_FOR_READERS = (
    "id", "slug", "name", "billingo_sync_enabled", "is_active",
    "api_key_configured_at", "api_key_checked_at", "created_at", "updated_at",
)
VIEWS = (
    "report_receivables",
    "report_outstanding_invoices",
    "report_aging_by_company",
    "report_aging_by_partner",
    "report_cash_flow_forecast",
    "report_partner_balances",
    "report_partner_payment_behaviour",
    "report_sync_history",
    "sync_health",
    "sync_metrics",
)

READER_COMPANY_IDS = (
    f"(SELECT m.company_id FROM {MAPPING_TABLE} m WHERE m.role_name = current_user)"
)
KEY_CONFIGURED_BY_TOKEN = "c.api_key_encrypted IS NOT NULL"
KEY_CONFIGURED_BY_DATE = "c.api_key_configured_at IS NOT NULL"

# The role may appear between the check and the CREATE (another database migrating at the same
# moment): both ways of losing that race are caught.
CREATE_READER_ROLE = f"""
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = '{READER_ROLE}') THEN
        BEGIN
            CREATE ROLE {READER_ROLE} NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END;
    END IF;
END
$$
"""


def _schema_usage(verb: str) -> str:
    # The warehouse's own schema is whatever the migrations run in (``public`` by default).
    preposition = "TO" if verb == "GRANT" else "FROM"
    return f"""
DO $$
BEGIN
    EXECUTE format('{verb} USAGE ON SCHEMA %I {preposition} {READER_ROLE}', current_schema());
END
$$
"""


def _replace_sync_health_expression(old: str, new: str) -> None:
    bind = op.get_bind()
    definition = bind.exec_driver_sql("SELECT pg_get_viewdef('sync_health'::regclass)").scalar_one()
    if definition.count(old) != 1:
        raise RuntimeError(f"sync_health does not read '{old}' exactly once: revision 0005 needs an update")
    op.execute(f"CREATE OR REPLACE VIEW sync_health AS {definition.replace(old, new)}")


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(CREATE_READER_ROLE)
    op.execute(_schema_usage("GRANT"))

    op.execute(f"CREATE SCHEMA {ACCESS_SCHEMA}")
    op.execute(
        f"""
CREATE TABLE {MAPPING_TABLE} (
    role_name TEXT NOT NULL,
    company_id INTEGER NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    granted_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (role_name, company_id)
)"""
    )
    op.execute(f"GRANT USAGE ON SCHEMA {ACCESS_SCHEMA} TO {READER_ROLE}")
    op.execute(f"GRANT SELECT ON {MAPPING_TABLE} TO {READER_ROLE}")
    op.execute(f"ALTER TABLE {MAPPING_TABLE} ENABLE ROW LEVEL SECURITY")
    op.execute(f"CREATE POLICY {POLICY} ON {MAPPING_TABLE} FOR SELECT TO {READER_ROLE} USING (role_name = current_user)")

    for table in TENANT_TABLES:
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(
            f"CREATE POLICY {POLICY} ON {table} FOR SELECT TO {READER_ROLE} USING (company_id IN {READER_COMPANY_IDS})"
        )
        op.execute(f"GRANT SELECT ON {table} TO {READER_ROLE}")

    op.execute("ALTER TABLE companies ENABLE ROW LEVEL SECURITY")
    op.execute(f"CREATE POLICY {POLICY} ON companies FOR SELECT TO {READER_ROLE} USING (id IN {READER_COMPANY_IDS})")
    op.execute(f"GRANT SELECT ({', '.join(COMPANY_COLUMNS_FOR_READERS)}) ON companies TO {READER_ROLE}")

    _replace_sync_health_expression(KEY_CONFIGURED_BY_TOKEN, KEY_CONFIGURED_BY_DATE)
    for view in VIEWS:
        op.execute(f"ALTER VIEW {view} SET (security_invoker = true)")
        op.execute(f"GRANT SELECT ON {view} TO {READER_ROLE}")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for view in VIEWS:
        op.execute(f"REVOKE ALL ON {view} FROM {READER_ROLE}")
        op.execute(f"ALTER VIEW {view} RESET (security_invoker)")
    _replace_sync_health_expression(KEY_CONFIGURED_BY_DATE, KEY_CONFIGURED_BY_TOKEN)

    op.execute(f"REVOKE ALL ON companies FROM {READER_ROLE}")
    op.execute(f"DROP POLICY {POLICY} ON companies")
    op.execute("ALTER TABLE companies DISABLE ROW LEVEL SECURITY")
    for table in TENANT_TABLES:
        op.execute(f"REVOKE ALL ON {table} FROM {READER_ROLE}")
        op.execute(f"DROP POLICY {POLICY} ON {table}")
        op.execute(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")

    # The mappings go with the schema; the login roles stay (cluster-wide, maybe used elsewhere).
    op.execute(f"DROP SCHEMA {ACCESS_SCHEMA} CASCADE")
    op.execute(_schema_usage("REVOKE"))
