"""Tenant isolation in the database (PostgreSQL row-level security, migration 0005).

The isolation tests run the real set-up: a warehouse database owned by a non-superuser role (as
in production: superusers bypass row-level security, owners only unless it is forced), migrated
and synced by that owner, and readers that log in over a new connection as their own role and
run hand-written SQL. On SQLite there is no database-side isolation, and the commands say so.

Roles are cluster-wide on the shared server: every role made here has a unique name and is
dropped at the end.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from alembic import command
from click.testing import CliRunner

from billingo_pipeline.admin import grant_reader, register_company
from billingo_pipeline.billingo_client import BillingoClient
from billingo_pipeline.cli import main
from billingo_pipeline.credentials import decrypt_api_key, generate_fernet_key
from billingo_pipeline.settings import FERNET_KEY_ENV
from billingo_pipeline.simulator import BillingoSimulator, generate_api_key
from billingo_pipeline.sync import sync_company
from billingo_pipeline.warehouse import companies as company_store
from billingo_pipeline.warehouse.companies import READER_GROUP_ROLE, READER_MAPPING_TABLE, CompanyError
from billingo_pipeline.warehouse.engine import alembic_config, create_warehouse_engine, upgrade_to_head
from billingo_pipeline.warehouse.schema import metadata

from .conftest import PG_ADMIN_URL

POLICY = "company_reader_rows"
INSUFFICIENT_PRIVILEGE = "42501"
COMPANIES = ("acme", "globex")


def _unique_role(kind: str) -> str:
    return f"billingo_test_{kind}_{uuid.uuid4().hex[:10]}"


def _admin_engine() -> sa.Engine:
    return sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")


def _drop_roles(roles: list[str]) -> None:
    admin = _admin_engine()
    with admin.connect() as conn:
        for role in reversed(roles):
            conn.execute(sa.text(f'DROP ROLE IF EXISTS "{role}"'))
    admin.dispose()


def _url_as(url: str, role: str, password: str | None = None) -> str:
    return sa.make_url(url).set(username=role, password=password).render_as_string(hide_password=False)


def _sqlstate(exc: sa.exc.DBAPIError) -> str | None:
    return getattr(exc.orig, "sqlstate", None)


# --- The catalog walk: what every tenant table and view must have --------------------------------


def isolation_gaps(conn: sa.Connection) -> list[str]:
    """Every way the live database falls short of per-company isolation for readers; [] is good.

    Tenant tables are those of ``schema.metadata`` with a ``company_id`` column *and* every table
    in the catalog with one (a table a later migration adds without the schema module, or in the
    access schema), so a new table without row-level security shows up here.
    """
    schema = conn.execute(sa.text("SELECT current_schema()")).scalar_one()
    catalog_tables = set(
        conn.execute(
            sa.text(
                "SELECT c.table_schema || '.' || c.table_name FROM information_schema.columns c "
                "JOIN information_schema.tables t USING (table_schema, table_name) "
                "WHERE c.column_name = 'company_id' AND t.table_type = 'BASE TABLE' "
                "AND c.table_schema NOT IN ('pg_catalog', 'information_schema')"
            )
        ).scalars()
    )
    model_tables = {f"{schema}.{t.name}" for t in metadata.sorted_tables if "company_id" in t.c}
    gaps = []
    for table in sorted(catalog_tables | model_tables | {f"{schema}.companies"}):
        flags = conn.execute(
            sa.text("SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE oid = to_regclass(:t)"),
            {"t": table},
        ).first()
        if flags is None:
            gaps.append(f"{table}: missing from the database")
            continue
        if not flags.relrowsecurity:
            gaps.append(f"{table}: row-level security is off")
        if flags.relforcerowsecurity:
            gaps.append(f"{table}: row-level security is forced (the pipeline, its owner, would be filtered)")
        policy = conn.execute(
            sa.text(
                "SELECT roles, cmd, qual FROM pg_policies WHERE schemaname || '.' || tablename = :t AND policyname = :p"
            ),
            {"t": table, "p": POLICY},
        ).first()
        if policy is None or list(policy.roles) != [READER_GROUP_ROLE] or policy.cmd != "SELECT":
            gaps.append(f"{table}: no SELECT policy '{POLICY}' for {READER_GROUP_ROLE}")
        elif not table.endswith(".company_reader_roles") and "company_reader_roles" not in policy.qual:
            gaps.append(f"{table}: its policy does not go through the reader mapping")
        if not conn.execute(
            sa.text("SELECT has_table_privilege(:r, :t, 'SELECT') OR has_any_column_privilege(:r, :t, 'SELECT')"),
            {"r": READER_GROUP_ROLE, "t": table},
        ).scalar_one():
            gaps.append(f"{table}: {READER_GROUP_ROLE} cannot read it")
        for write in ("INSERT", "UPDATE", "DELETE", "TRUNCATE"):
            if conn.execute(
                sa.text("SELECT has_table_privilege(:r, :t, :w)"), {"r": READER_GROUP_ROLE, "t": table, "w": write}
            ).scalar_one():
                gaps.append(f"{table}: {READER_GROUP_ROLE} may {write}")
    for column in ("api_key_encrypted", "api_key_fingerprint"):
        if conn.execute(
            sa.text("SELECT has_column_privilege(:r, :t, :c, 'SELECT')"),
            {"r": READER_GROUP_ROLE, "t": f"{schema}.companies", "c": column},
        ).scalar_one():
            gaps.append(f"{schema}.companies.{column}: readable by {READER_GROUP_ROLE}")
    views = conn.execute(
        sa.text(
            "SELECT c.oid::regclass::text AS name, coalesce(c.reloptions, '{}') AS options FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'v' AND n.nspname = :s ORDER BY 1"
        ),
        {"s": schema},
    ).all()
    for view in views:
        if "security_invoker=true" not in view.options:
            gaps.append(f"{view.name}: view runs with its owner's rights (security_invoker is off)")
        if not conn.execute(
            sa.text("SELECT has_table_privilege(:r, :v, 'SELECT')"), {"r": READER_GROUP_ROLE, "v": view.name}
        ).scalar_one():
            gaps.append(f"{view.name}: {READER_GROUP_ROLE} cannot read it")
    return gaps


def tenant_relations(conn: sa.Connection) -> list[str]:
    """Every table and view of the warehouse schema with a ``company_id`` column."""
    return list(
        conn.execute(
            sa.text(
                "SELECT table_name FROM information_schema.columns "
                "WHERE table_schema = current_schema() AND column_name = 'company_id' ORDER BY 1"
            )
        ).scalars()
    )


# --- An owned, synced warehouse with two companies -----------------------------------------------


class Warehouse:
    def __init__(self, url: str, engine: sa.Engine, company_ids: dict[str, int], roles: list[str]):
        self.url = url
        self.engine = engine
        self.company_ids = company_ids
        self.roles = roles
        self._reader_engines: list[sa.Engine] = []

    def new_reader(self, first_slug: str, *more_slugs: str) -> str:
        """A fresh login role mapped to the companies, created by ``grant_reader`` as the owner."""
        role = _unique_role("reader")
        self.roles.append(role)
        for slug in (first_slug, *more_slugs):
            grant_reader(self.engine, slug, role, password=None)
        return role

    def connect_as(self, role: str) -> sa.Engine:
        engine = sa.create_engine(_url_as(self.url, role), poolclass=sa.pool.NullPool)
        self._reader_engines.append(engine)
        return engine

    def close(self) -> None:
        for engine in self._reader_engines:
            engine.dispose()


def _sync(engine: sa.Engine, simulator: BillingoSimulator, slug: str) -> None:
    company = company_store.get_company(engine, slug)
    result = sync_company(
        engine,
        company,
        run_id=f"test-{uuid.uuid4().hex[:8]}",
        trigger="test",
        open_client=lambda c: BillingoClient(
            simulator.base_url, decrypt_api_key(c.api_key_encrypted, c.slug), company=c.slug, backoff_seconds=0.01
        ),
    )
    assert result.status in ("COMPLETED", "PARTIAL")


def _add_receivables(simulator: BillingoSimulator, api_key: str) -> None:
    """Open, overdue and paid invoices, so every reporting view has rows for the company."""
    today = simulator.today()
    for due_in, status in ((-45, "outstanding"), (-5, "expired"), (10, "outstanding"), (20, "partially_paid")):
        simulator.add_document(
            api_key,
            type="invoice",
            due_date=(today + dt.timedelta(days=due_in)).isoformat(),
            payment_status=status,
        )
    simulator.add_document(
        api_key,
        type="invoice",
        invoice_date=(today - dt.timedelta(days=30)).isoformat(),
        due_date=(today - dt.timedelta(days=15)).isoformat(),
        payment_status="paid",
        paid_date=(today - dt.timedelta(days=10)).isoformat(),
    )


def _seed(engine: sa.Engine) -> None:
    """Two companies synced from the simulator, their keys under a Fernet key of this fixture."""
    saved = os.environ.get(FERNET_KEY_ENV)
    os.environ[FERNET_KEY_ENV] = generate_fernet_key()
    try:
        with BillingoSimulator() as simulator:
            for seed, slug in enumerate(COMPANIES, start=71):
                api_key = generate_api_key(f"tenants:{slug}")
                simulator.add_organization(api_key, name=slug.title(), seed=seed, document_count=25)
                _add_receivables(simulator, api_key)
                register_company(engine, slug, slug.title(), api_key, api_base_url=simulator.base_url)
                _sync(engine, simulator, slug)
    finally:
        if saved is None:
            os.environ.pop(FERNET_KEY_ENV, None)
        else:
            os.environ[FERNET_KEY_ENV] = saved


@pytest.fixture(scope="module")
def owned_warehouse() -> Iterator[Warehouse]:
    owner = _unique_role("owner")
    database = f"billingo_test_rls_{uuid.uuid4().hex[:10]}"
    roles = [owner]
    admin = _admin_engine()
    with admin.connect() as conn:
        # CREATEROLE: `company grant-reader` creates login roles; no SUPERUSER, no BYPASSRLS.
        conn.execute(sa.text(f'CREATE ROLE "{owner}" LOGIN CREATEROLE'))
        conn.execute(sa.text(f'CREATE DATABASE "{database}" OWNER "{owner}"'))
    url = _url_as(sa.make_url(PG_ADMIN_URL).set(database=database).render_as_string(hide_password=False), owner)
    engine = create_warehouse_engine(url)
    warehouse = Warehouse(url, engine, {}, roles)
    try:
        upgrade_to_head(engine)  # as the owner, as the pipeline does on first use
        _seed(engine)
        warehouse.company_ids.update({c.slug: c.id for c in company_store.list_companies(engine)})
        yield warehouse
    finally:
        warehouse.close()
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        admin.dispose()
        _drop_roles(roles)


def _rows_by_company(engine: sa.Engine, relation: str) -> dict[int, int]:
    with engine.connect() as conn:
        return dict(conn.execute(sa.text(f"SELECT company_id, count(*) FROM {relation} GROUP BY company_id")).all())


def _refused(engine: sa.Engine, statement: str) -> str | None:
    """Run ``statement`` in its own transaction; the SQLSTATE it failed with (None: it did not)."""
    with engine.connect() as conn:
        try:
            conn.execute(sa.text(statement))
        except sa.exc.DBAPIError as exc:
            return _sqlstate(exc)
        finally:
            conn.rollback()
    return None


# --- The tests ------------------------------------------------------------------------------------


def test_every_tenant_table_and_view_is_isolated_and_a_new_one_would_be_caught(owned_warehouse):
    with owned_warehouse.engine.connect() as conn:
        assert isolation_gaps(conn) == []
        # What a later migration that forgets the treatment would leave: the walk must see it.
        conn.execute(sa.text("CREATE TABLE billingo_future_thing (id INTEGER, company_id INTEGER)"))
        conn.execute(sa.text("CREATE VIEW report_future AS SELECT company_id FROM billingo_invoices"))
        gaps = isolation_gaps(conn)
        conn.rollback()
    assert any(g.endswith("billingo_future_thing: row-level security is off") for g in gaps), gaps
    assert any("report_future: view runs with its owner's rights" in g for g in gaps), gaps
    assert any("report_future: billingo_reader cannot read it" in g for g in gaps), gaps


def test_a_reader_sees_only_its_company_in_every_tenant_table_and_view(owned_warehouse):
    acme, globex = owned_warehouse.company_ids["acme"], owned_warehouse.company_ids["globex"]
    reader = owned_warehouse.connect_as(owned_warehouse.new_reader("acme"))
    with owned_warehouse.engine.connect() as conn:
        relations = tenant_relations(conn)
    assert {"billingo_documents_raw", "billingo_invoices", "billingo_invoice_items", "sync_log", "sync_health"} <= set(relations)
    assert {r for r in relations if r.startswith("report_")} >= {"report_outstanding_invoices", "report_sync_history"}

    for relation in relations:
        as_owner = _rows_by_company(owned_warehouse.engine, relation)
        # The pipeline (the owner) still sees both companies: that is what makes the check below mean something.
        assert as_owner.get(acme, 0) > 0 and as_owner.get(globex, 0) > 0, (relation, as_owner)
        assert _rows_by_company(reader, relation) == {acme: as_owner[acme]}, relation
        with reader.connect() as conn:
            assert conn.execute(sa.text(f"SELECT count(*) FROM {relation} WHERE company_id = {globex}")).scalar_one() == 0

    with reader.connect() as conn:
        assert conn.execute(sa.text("SELECT id, slug FROM companies")).all() == [(acme, "acme")]
        assert conn.execute(sa.text(f"SELECT company_id FROM {READER_MAPPING_TABLE}")).scalars().all() == [acme]
        # A per-session setting changes nothing: the policies read current_user, not a GUC.
        conn.execute(sa.text(f"SET billingo.company_id = '{globex}'"))
        assert conn.execute(sa.text("SELECT DISTINCT company_id FROM billingo_invoices")).scalars().all() == [acme]


def test_a_reader_cannot_read_the_keys_nor_write_nor_become_another_reader(owned_warehouse):
    globex = owned_warehouse.company_ids["globex"]
    globex_reader = owned_warehouse.new_reader("globex")
    reader = owned_warehouse.connect_as(owned_warehouse.new_reader("acme"))
    for statement in (
        "SELECT api_key_encrypted FROM companies",
        "SELECT api_key_fingerprint FROM companies",
        "SELECT * FROM companies",
        "SELECT count(*) FROM companies WHERE api_key_encrypted IS NOT NULL",
        "INSERT INTO companies (slug, name, created_at, updated_at) VALUES ('evil', 'x', now(), now())",
        f"UPDATE billingo_invoices SET partner_name = 'x' WHERE company_id = {globex}",
        "UPDATE sync_log SET status = 'FAILED'",
        "DELETE FROM billingo_documents_raw",
        "TRUNCATE billingo_invoice_items",
        f"INSERT INTO {READER_MAPPING_TABLE} (role_name, company_id) VALUES (current_user, {globex})",
        "CREATE TABLE public.stolen AS SELECT 1",
        f'SET ROLE "{globex_reader}"',
        "SELECT * FROM alembic_version",
    ):
        assert _refused(reader, statement) == INSUFFICIENT_PRIVILEGE, statement


def test_a_reader_of_two_companies_sees_both_and_an_unmapped_reader_sees_nothing(owned_warehouse):
    both = owned_warehouse.connect_as(owned_warehouse.new_reader("acme", "globex"))
    assert set(_rows_by_company(both, "billingo_invoices")) == set(owned_warehouse.company_ids.values())

    # A billingo_reader member without a mapping (or a mapping deleted since): default deny.
    unmapped = _unique_role("reader")
    owned_warehouse.roles.append(unmapped)
    with owned_warehouse.engine.begin() as conn:
        conn.execute(sa.text(f'CREATE ROLE "{unmapped}" LOGIN IN ROLE {READER_GROUP_ROLE}'))
    nobody = owned_warehouse.connect_as(unmapped)
    with owned_warehouse.engine.connect() as conn:
        relations = tenant_relations(conn) + ["companies"]
    for relation in relations:
        with nobody.connect() as conn:
            assert conn.execute(sa.text(f"SELECT count(*) FROM {relation}")).scalar_one() == 0, relation


def test_the_owner_pipeline_keeps_writing_and_deleting_a_company_drops_its_mappings(owned_warehouse):
    """Row-level security is enabled, not forced: the owner's writes pass untouched."""
    reader = owned_warehouse.new_reader("acme")
    engine = owned_warehouse.engine
    with engine.connect() as conn:
        flags = conn.execute(
            sa.text("SELECT bool_or(relforcerowsecurity) FROM pg_class WHERE relname IN ('billingo_invoices', 'sync_log')")
        ).scalar_one()
        superuser = conn.execute(sa.text("SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user")).scalar_one()
    assert flags is False and superuser is False
    company_store.add_company(engine, "temporary", "Temporary")
    grant_reader(engine, "temporary", reader, password=None)
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM companies WHERE slug = 'temporary'"))
        mapped = conn.execute(
            sa.text(f"SELECT count(*) FROM {READER_MAPPING_TABLE} WHERE role_name = :r"), {"r": reader}
        ).scalar_one()
    assert mapped == 1  # acme only: the mapping went with the company


def test_grant_reader_refuses_powerful_or_foreign_roles_and_bad_names(owned_warehouse):
    engine = owned_warehouse.engine
    with engine.connect() as conn:
        owner = conn.execute(sa.text("SELECT current_user")).scalar_one()
    foreign = _unique_role("foreign")
    owned_warehouse.roles.append(foreign)
    with engine.begin() as conn:
        conn.execute(sa.text(f'CREATE ROLE "{foreign}" LOGIN'))
    for role, expected in (
        (owner, "is not a plain billingo reader"),
        ("postgres", "is not a plain billingo reader"),
        (foreign, "is not a plain billingo reader"),
        (READER_GROUP_ROLE, "invalid reader role name"),
        ("pg_monitor", "invalid reader role name"),
        ('x"; DROP TABLE companies; --', "invalid reader role name"),
        ("Analyst", "invalid reader role name"),
    ):
        with pytest.raises(CompanyError, match=expected):
            grant_reader(engine, "acme", role, password=None)
    with pytest.raises(CompanyError, match="unknown company 'nope'"):
        grant_reader(engine, "nope", _unique_role("reader"), password=None)
    with engine.connect() as conn:
        assert conn.execute(
            sa.text(f"SELECT count(*) FROM {READER_MAPPING_TABLE} WHERE role_name IN (:a, :b)"), {"a": owner, "b": foreign}
        ).scalar_one() == 0


def test_grant_reader_command_takes_the_password_from_the_environment_only(warehouse_url, engine, monkeypatch):
    """Both dialects: on PostgreSQL the role is created with a SCRAM verifier computed on this
    side (the server never sees the password); on SQLite the command says there is nothing to grant."""
    monkeypatch.setenv("BILLINGO_WAREHOUSE_URL", warehouse_url)
    company_store.add_company(engine, "acme", "Acme")
    role = _unique_role("reader")
    password = f"pw-{uuid.uuid4().hex}"
    monkeypatch.setenv("BILLINGO_READER_PASSWORD", password)
    try:
        result = CliRunner().invoke(main, ["company", "grant-reader", "acme", "--role", role], catch_exceptions=False)
        assert password not in result.output
        if engine.dialect.name == "sqlite":
            assert result.exit_code == 1
            assert result.stderr.strip() == (
                "error: reader roles exist on PostgreSQL only: SQLite is embedded and single-user, "
                "its isolation is the application's."
            )
            return
        assert result.exit_code == 0, result.output
        assert result.output.strip() == f"role '{role}' created (password set); it reads companies acme."
        admin = _admin_engine()
        with admin.connect() as conn:
            stored = conn.execute(sa.text("SELECT rolpassword FROM pg_authid WHERE rolname = :r"), {"r": role}).scalar_one()
        admin.dispose()
        assert stored.startswith("SCRAM-SHA-256$") and password not in stored
        again = CliRunner().invoke(main, ["company", "grant-reader", "acme", "--role", role, "--no-password"])
        assert again.exit_code == 0 and "updated (password unchanged)" in again.output
    finally:
        if engine.dialect.name == "postgresql":
            _drop_roles([role])


def test_sqlite_migration_adds_no_access_objects(warehouse_url, engine):
    """Same schema module on both dialects: 0005 adds only PostgreSQL access control, outside it."""
    inspector = sa.inspect(engine)
    assert "company_reader_roles" not in inspector.get_table_names()
    if engine.dialect.name == "postgresql":
        assert "company_reader_roles" in inspector.get_table_names(schema="billingo_access")


def test_downgrade_of_0005_removes_the_isolation_and_upgrade_restores_it():
    database = f"billingo_test_downgrade_{uuid.uuid4().hex[:10]}"
    admin = _admin_engine()
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{database}"'))
    engine = create_warehouse_engine(sa.make_url(PG_ADMIN_URL).set(database=database).render_as_string(hide_password=False))
    try:
        upgrade_to_head(engine)
        command.downgrade(alembic_config(engine), "0004")
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM pg_policies WHERE policyname = :p"), {"p": POLICY}).scalar_one() == 0
            assert conn.execute(
                sa.text("SELECT count(*) FROM pg_class WHERE relrowsecurity AND relnamespace = 'public'::regnamespace")
            ).scalar_one() == 0
            assert conn.execute(sa.text("SELECT to_regnamespace('billingo_access')")).scalar() is None
            assert conn.execute(
                sa.text("SELECT count(*) FROM pg_class WHERE relkind = 'v' AND reloptions IS NOT NULL AND relnamespace = 'public'::regnamespace")
            ).scalar_one() == 0
            assert "c.api_key_encrypted IS NOT NULL" in conn.execute(sa.text("SELECT pg_get_viewdef('sync_health')")).scalar_one()
            assert conn.execute(
                sa.text(
                    "SELECT count(*) FROM information_schema.role_table_grants WHERE grantee = :r "
                    "AND table_catalog = current_database()"
                ),
                {"r": READER_GROUP_ROLE},
            ).scalar_one() == 0
        command.upgrade(alembic_config(engine), "head")
        with engine.connect() as conn:
            assert isolation_gaps(conn) == []
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        admin.dispose()
