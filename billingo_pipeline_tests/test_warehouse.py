"""The warehouse schema and writes, on SQLite and on the real PostgreSQL."""

from decimal import Decimal

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from billingo_pipeline.warehouse import companies as company_store
from billingo_pipeline.warehouse import documents as store
from billingo_pipeline.warehouse.engine import alembic_config, dispose_engines, get_engine, is_at_head, upgrade_to_head
from billingo_pipeline.warehouse.schema import billingo_invoice_items, billingo_invoices, metadata, sync_log
from billingo_pipeline.warehouse.sync_log import (
    COMPLETED,
    FAILED,
    PARTIAL,
    RUNNING,
    SyncCounts,
    fail_sync,
    final_status,
    finish_sync,
    record_fetch,
    start_sync,
    utcnow,
)


def test_migrations_create_exactly_the_schema_module(engine):
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), metadata)
    assert diff == []
    assert set(sa.inspect(engine).get_table_names()) >= {t.name for t in metadata.sorted_tables}


def test_get_engine_migrates_a_warehouse_left_at_an_older_revision(engine, warehouse_url):
    """It skips Alembic only for a database at the newest revision; one behind is upgraded."""
    assert is_at_head(engine)
    command.downgrade(alembic_config(engine), "0005")
    try:
        assert not is_at_head(engine)
        assert "cursor" not in {c["name"] for c in sa.inspect(engine).get_columns("sync_log")}
        dispose_engines()  # forget the engine made at head: the next get_engine looks again
        reopened = get_engine(warehouse_url)
        assert is_at_head(reopened)
        assert "cursor" in {c["name"] for c in sa.inspect(reopened).get_columns("sync_log")}
    finally:
        upgrade_to_head(engine)  # a no-op when the test passed; the session's database stays usable


@pytest.mark.parametrize("password", ["s3@x:cr3t", "s3@cr3t"])
def test_url_with_an_unescaped_at_in_the_password_is_refused_without_quoting_it(password):
    # SQLAlchemy's own error, or the driver's, would quote the rest of the password.
    with pytest.raises(sa.exc.ArgumentError, match="not a valid SQLAlchemy URL") as excinfo:
        get_engine(f"postgresql+psycopg://billingo:{password}@127.0.0.1:5432/warehouse")
    assert "cr3t" not in str(excinfo.value)


@pytest.mark.parametrize("url", ["mysql+pymysql://billingo:s3cr3t@127.0.0.1/warehouse", "oracle://billingo:s3cr3t@db/warehouse"])
def test_a_database_other_than_sqlite_or_postgresql_is_refused_by_name(url):
    # Without this the user meets a missing driver or, after installing one, a KeyError in the upserts.
    with pytest.raises(sa.exc.ArgumentError, match="SQLite or PostgreSQL, not '(mysql|oracle)'") as excinfo:
        get_engine(url)
    assert "s3cr3t" not in str(excinfo.value)


def _company(engine, slug="acme"):
    return company_store.add_company(engine, slug, slug.title(), api_key_encrypted="token", api_key_fingerprint="fp")


def _invoice(document_id, **overrides):
    row = {"document_id": document_id, "invoice_number": f"INV-{document_id}", "source_hash": "h" * 64,
           "gross_total": Decimal("0.1") + Decimal("0.2"), "currency": "HUF", "cancelled": False}
    row.update(overrides)
    return row


def test_money_round_trips_exactly(engine):
    company = _company(engine)
    tiny = Decimal("123456789012.123456")
    with engine.begin() as conn:
        store.write_invoices_with_items(conn, company.id, [_invoice(1, gross_total=tiny)], [], utcnow())
    with engine.connect() as conn:
        value = conn.execute(sa.select(billingo_invoices.c.gross_total)).scalar_one()
    assert value == tiny and isinstance(value, Decimal)


def test_amounts_round_to_the_column_scale_identically_on_both_dialects(engine):
    company = _company(engine)
    artefact = Decimal(str(0.1 + 0.2))  # 0.30000000000000004, as a float-computing API may send
    with engine.begin() as conn:
        store.write_invoices_with_items(conn, company.id, [_invoice(1, gross_total=artefact, conversion_rate=Decimal("392.123456789"))], [], utcnow())
    with engine.connect() as conn:
        row = conn.execute(sa.select(billingo_invoices.c.gross_total, billingo_invoices.c.conversion_rate)).one()
    assert row.gross_total == Decimal("0.3") and row.conversion_rate == Decimal("392.12345679")


def test_float_money_is_refused(engine):
    company = _company(engine)
    with pytest.raises(sa.exc.StatementError, match="Decimal"):
        with engine.begin() as conn:
            store.write_invoices_with_items(conn, company.id, [_invoice(1, gross_total=0.3)], [], utcnow())


def test_items_are_replaced_not_mixed(engine):
    company = _company(engine)
    item = lambda pos, name: {"document_id": 7, "position": pos, "name": name, "quantity": Decimal("1")}  # noqa: E731
    with engine.begin() as conn:
        store.write_invoices_with_items(conn, company.id, [_invoice(7)], [item(1, "a"), item(2, "b"), item(3, "c")], utcnow())
    with engine.begin() as conn:
        store.write_invoices_with_items(conn, company.id, [_invoice(7, invoice_number="X")], [item(1, "new")], utcnow())
    with engine.connect() as conn:
        names = conn.execute(sa.select(billingo_invoice_items.c.name)).scalars().all()
        number = conn.execute(sa.select(billingo_invoices.c.invoice_number)).scalar_one()
    assert names == ["new"] and number == "X"


def test_failed_batch_leaves_previous_invoice_and_items_untouched(engine):
    company = _company(engine)
    good = {"document_id": 7, "position": 1, "name": "kept", "quantity": Decimal("1")}
    with engine.begin() as conn:
        store.write_invoices_with_items(conn, company.id, [_invoice(7)], [good], utcnow())
    duplicate_position = [dict(good, name="x"), dict(good, name="y")]
    with pytest.raises(sa.exc.IntegrityError):
        with engine.begin() as conn:
            store.write_invoices_with_items(conn, company.id, [_invoice(7, invoice_number="NEW")], duplicate_position, utcnow())
    with engine.connect() as conn:
        assert conn.execute(sa.select(billingo_invoice_items.c.name)).scalars().all() == ["kept"]
        assert conn.execute(sa.select(billingo_invoices.c.invoice_number)).scalar_one() == "INV-7"


def test_same_billingo_id_in_two_companies_stays_separate(engine):
    acme, globex = _company(engine, "acme"), _company(engine, "globex")
    with engine.begin() as conn:
        store.write_invoices_with_items(conn, acme.id, [_invoice(5, invoice_number="A")], [], utcnow())
        store.write_invoices_with_items(conn, globex.id, [_invoice(5, invoice_number="G")], [], utcnow())
    with engine.connect() as conn:
        rows = conn.execute(sa.select(billingo_invoices.c.company_id, billingo_invoices.c.invoice_number).order_by("company_id")).all()
    assert rows == [(acme.id, "A"), (globex.id, "G")]


def test_item_cannot_point_at_another_companys_invoice(engine):
    acme, globex = _company(engine, "acme"), _company(engine, "globex")
    with engine.begin() as conn:
        store.write_invoices_with_items(conn, acme.id, [_invoice(5)], [], utcnow())
    with pytest.raises(sa.exc.IntegrityError):
        with engine.begin() as conn:
            conn.execute(billingo_invoice_items.insert().values(company_id=globex.id, document_id=5, position=1))


def test_sync_log_lifecycle(engine):
    company = _company(engine)
    sync_id = start_sync(engine, company.id, "run-1", "manual")
    assert start_sync(engine, company.id, "run-1", "manual") == sync_id  # re-executed step, same row
    with engine.connect() as conn:
        assert conn.execute(sa.select(sync_log.c.status)).scalar_one() == RUNNING
    record_fetch(engine, sync_id, api_calls=3, pages_fetched=2, documents_fetched=10, fetch_complete=True,
                 errors=[{"document_id": None, "message": "no id"}])
    status = finish_sync(engine, sync_id, SyncCounts(processed=10, created=9, failed=1),
                         [{"document_id": 4, "message": "bad amount"}])
    with engine.connect() as conn:
        row = conn.execute(sa.select(sync_log)).one()
    assert status == PARTIAL == row.status
    assert row.invoices_processed == 11 and row.invoices_failed == 2 and row.api_calls == 3
    assert [e["stage"] for e in row.errors] == ["fetch", "normalize"]
    assert row.finished_at >= row.started_at and row.duration_seconds >= 0

    other = start_sync(engine, company.id, "run-2", "schedule")
    fail_sync(engine, other, "HTTP 401")
    with engine.connect() as conn:
        assert conn.execute(sa.select(sync_log.c.status, sync_log.c.error_message).where(sync_log.c.id == other)).one() == (FAILED, "HTTP 401")


@pytest.mark.parametrize(
    "counts, expected",
    [(SyncCounts(processed=5), COMPLETED), (SyncCounts(processed=5, failed=1), PARTIAL),
     (SyncCounts(processed=2, failed=2), FAILED), (SyncCounts(), COMPLETED)],
)
def test_final_status(counts, expected):
    assert final_status(counts) == expected


def test_company_validation_and_flags(engine):
    with pytest.raises(company_store.CompanyError, match="invalid company slug"):
        company_store.add_company(engine, "Bad Slug!", "x")
    _company(engine)
    with pytest.raises(company_store.CompanyError, match="already exists"):
        _company(engine)
    with pytest.raises(company_store.UnknownCompanyError, match="unknown company 'nope'"):
        company_store.update_company(engine, "nope", name="x")
    assert company_store.syncable_company_slugs(engine) == ["acme"]
    company_store.update_company(engine, "acme", billingo_sync_enabled=False)
    assert company_store.syncable_company_slugs(engine) == []
    with pytest.raises(company_store.CompanyNotSyncableError, match="BILLINGO_SYNC"):
        company_store.get_company(engine, "acme").require_syncable()
