"""The page writers (raw rows, invoices, items) store exactly what a plain INSERT stores, on both dialects.

On PostgreSQL they go through COPY and one set-based upsert (``warehouse/bulk.py``); these tests
compare what they store, column by column, with what ``conn.execute(insert, rows)`` stores for the
same rows, and with what SQLite stores.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import random
from decimal import ROUND_HALF_UP, Decimal

import pytest
import sqlalchemy as sa

from billingo_pipeline.canonical_json import read_json_text
from billingo_pipeline.normalize import change_hash, normalize_document
from billingo_pipeline.simulator.data import generate_documents
from billingo_pipeline.endpoints import PageContext
from billingo_pipeline.endpoints.documents import prepare_document_page, write_document_page
from billingo_pipeline.warehouse import bulk
from billingo_pipeline.warehouse import payments as payment_store
from billingo_pipeline.warehouse import companies as company_store
from billingo_pipeline.warehouse import documents as store
from billingo_pipeline.warehouse.engine import get_engine
from billingo_pipeline.warehouse.refusals import is_row_refusal, write_isolating_refusals
from billingo_pipeline.warehouse.schema import (
    WAREHOUSE_ROW_LIMITS,
    ExactDecimal,
    billingo_documents_raw,
    billingo_payment_history_state,
    billingo_invoice_items,
    billingo_invoices,
    metadata,
)
from billingo_pipeline.warehouse.sync_log import start_sync
from billingo_pipeline.warehouse.upsert import upsert

from .conftest import _empty_all

NOW = dt.datetime(2026, 11, 30, 8, 15, 30, 123456, tzinfo=dt.timezone.utc)
# Columns a writer fills from the database (ids) or that name the company: compared separately.
NOT_COMPARED = {"id", "company_id"}
HOSTILE = "tab\there\nnew line\r\nback\\slash \\N \\\\N 'single' \"double\" 😀 עברית مرحبا \u202e ﷽ end"


def _page(count: int = 100, seed: int = 7) -> list[dict]:
    return generate_documents(seed, count, today=dt.date(2026, 11, 30))


def _rows(documents: list[dict]) -> tuple[list, list, list]:
    raw_rows = [store.raw_document(d["id"], d) for d in documents]
    normalized = [normalize_document(d, WAREHOUSE_ROW_LIMITS) for d in documents]
    invoice_rows = [{**n.invoice, "source_hash": r.content_hash} for n, r in zip(normalized, raw_rows)]
    item_rows = [{**item, "document_id": n.document_id} for n in normalized for item in n.items]
    return raw_rows, invoice_rows, item_rows


def _company(engine, slug: str):
    company = company_store.add_company(engine, slug, slug.title())
    return company, start_sync(engine, company.id, f"run-{slug}", "cli")


def _write_page(engine, company_id: int, sync_id: int, documents: list[dict], now: dt.datetime = NOW) -> None:
    raw_rows, invoice_rows, item_rows = _rows(documents)
    with engine.begin() as conn:  # one transaction per page, as the sync writes it
        store.upsert_raw_documents(conn, company_id, sync_id, raw_rows, now)
        store.write_invoices_with_items(conn, company_id, invoice_rows, item_rows, now)


def _write_page_by_plain_insert(engine, company_id: int, sync_id: int, documents: list[dict]) -> None:
    """The reference: SQLAlchemy's own INSERT of the same rows, bound by the column types."""
    raw_rows, invoice_rows, item_rows = _rows(documents)
    with engine.begin() as conn:
        rows = []
        for document_id, payload, content_hash, *_ in raw_rows:
            stored, verbatim = store.storable_payload(payload)
            rows.append({"company_id": company_id, "document_id": document_id, "payload": stored,
                         "payload_verbatim": verbatim, "content_hash": content_hash, "first_fetched_at": NOW,
                         "last_fetched_at": NOW, "last_seen_sync_id": sync_id, "missing_since": None})
        upsert(conn, billingo_documents_raw, rows, conflict_columns=("company_id", "document_id"), update_columns=("payload",))
        upsert(
            conn, billingo_invoices,
            [{**r, "company_id": company_id, "first_seen_at": NOW, "last_changed_at": NOW, "deleted_in_source_at": None}
             for r in invoice_rows],
            conflict_columns=("company_id", "document_id"), update_columns=("invoice_number",),
        )
        conn.execute(billingo_invoice_items.insert(), [{**r, "company_id": company_id} for r in item_rows])


def _stored(engine, company_id: int) -> dict[str, list[tuple]]:
    """Every column of the company's rows (but ids), in key order, as Python values."""
    order = {
        billingo_documents_raw: ("document_id",),
        billingo_invoices: ("document_id",),
        billingo_invoice_items: ("document_id", "position"),
    }
    stored = {}
    with engine.connect() as conn:
        for table, keys in order.items():
            columns = [c for c in table.columns if c.name not in NOT_COMPARED]
            stored[table.name] = [
                tuple(row)
                for row in conn.execute(
                    sa.select(*columns).where(table.c.company_id == company_id).order_by(*(table.c[k] for k in keys))
                )
            ]
    return stored


def _items_of(engine, company_id: int, document_id: int) -> list[tuple]:
    with engine.connect() as conn:
        return conn.execute(
            sa.select(billingo_invoice_items.c.position, billingo_invoice_items.c.name)
            .where(billingo_invoice_items.c.company_id == company_id, billingo_invoice_items.c.document_id == document_id)
            .order_by(billingo_invoice_items.c.position)
        ).all()


def test_a_realistic_page_is_stored_exactly_as_a_plain_insert_stores_it(engine):
    documents = _page()
    bulk_company, bulk_sync = _company(engine, "bulk")
    plain_company, plain_sync = _company(engine, "plain")
    _write_page(engine, bulk_company.id, bulk_sync, documents)
    _write_page_by_plain_insert(engine, plain_company.id, plain_sync, documents)

    written, reference = _stored(engine, bulk_company.id), _stored(engine, plain_company.id)
    # last_seen_sync_id names each company's own sync; everything else must be identical.
    sync_column = [c.name for c in billingo_documents_raw.columns if c.name not in NOT_COMPARED].index("last_seen_sync_id")
    assert {r[sync_column] for r in written["billingo_documents_raw"]} == {bulk_sync}
    strip = lambda rows: [r[:sync_column] + r[sync_column + 1:] for r in rows]  # noqa: E731
    assert strip(written["billingo_documents_raw"]) == strip(reference["billingo_documents_raw"])
    assert written["billingo_invoices"] == reference["billingo_invoices"]
    assert written["billingo_invoice_items"] == reference["billingo_invoice_items"]
    assert len(written["billingo_invoices"]) == 100 and len(written["billingo_invoice_items"]) > 100

    with engine.connect() as conn:
        invoice = conn.execute(sa.select(billingo_invoices).where(billingo_invoices.c.company_id == bulk_company.id)
                               .order_by(billingo_invoices.c.document_id).limit(1)).one()
        payloads = store.raw_payloads(conn, bulk_company.id, [d["id"] for d in documents])
    assert isinstance(invoice.gross_total, Decimal) and invoice.first_seen_at == NOW
    assert invoice.first_seen_at.tzinfo == dt.timezone.utc
    assert {p.document_id: p.payload for p in payloads} == {d["id"]: d for d in documents}


def test_both_dialects_store_the_same_page_identically(tmp_path, postgres_database_url):
    documents = _page(seed=11)
    stored = []
    for url in (f"sqlite:///{tmp_path / 'warehouse.db'}", postgres_database_url):
        engine = get_engine(url)
        if engine.dialect.name == "postgresql":
            _empty_all(url)
        company, sync_id = _company(engine, "acme")
        _write_page(engine, company.id, sync_id, documents)
        rows = _stored(engine, company.id)
        rows.pop("billingo_documents_raw")  # JSON and JSONB read back the same dicts, checked below
        with engine.connect() as conn:
            payloads = store.raw_payloads(conn, company.id, [d["id"] for d in documents])
        rows["payloads"] = sorted(((p.document_id, p.payload) for p in payloads), key=lambda pair: pair[0])
        stored.append(rows)
    assert stored[0] == stored[1]


def test_writing_the_same_page_again_replaces_it_without_duplicates(engine):
    documents = _page()
    company, sync_id = _company(engine, "acme")
    _write_page(engine, company.id, sync_id, documents)
    first = _stored(engine, company.id)
    later = NOW + dt.timedelta(hours=1)
    _write_page(engine, company.id, sync_id, documents, now=later)
    again = _stored(engine, company.id)
    assert [len(again[name]) for name in again] == [len(first[name]) for name in first]
    assert again["billingo_invoice_items"] == first["billingo_invoice_items"]
    with engine.connect() as conn:
        invoice = conn.execute(sa.select(billingo_invoices.c.first_seen_at, billingo_invoices.c.last_changed_at)
                               .where(billingo_invoices.c.company_id == company.id).limit(1)).one()
        raw = conn.execute(sa.select(billingo_documents_raw.c.first_fetched_at, billingo_documents_raw.c.last_fetched_at)
                           .where(billingo_documents_raw.c.company_id == company.id).limit(1)).one()
    assert tuple(invoice) == (NOW, later) and tuple(raw) == (NOW, later)  # first seen kept, last moved


def test_an_invoice_that_lost_an_item_loses_it(engine):
    documents = _page(20)
    document = next(d for d in documents if len(d["items"]) >= 2)
    company, sync_id = _company(engine, "acme")
    _write_page(engine, company.id, sync_id, documents)
    assert len(_items_of(engine, company.id, document["id"])) == len(document["items"])
    document["items"] = document["items"][:1]
    _write_page(engine, company.id, sync_id, documents)
    assert _items_of(engine, company.id, document["id"]) == [(1, document["items"][0]["name"])]


def test_hostile_text_and_payloads_round_trip_exactly(engine):
    documents = _page(3)
    big = ("5 MB of text \t\n\\N \\ 😀 עברית " * 200_000)[:5_000_000]
    first, second, third = documents
    first["comment"] = HOSTILE
    first["document_partner"]["name"] = HOSTILE[:255]
    first["items"][0]["name"] = HOSTILE
    first["items"][0]["comment"] = big
    second["comment"] = big
    second["unexpected field"] = {"nul": "a\x00b", "tab\tkey": HOSTILE}  # JSONB cannot hold NUL: verbatim
    third["weird"] = read_json_text('[Infinity, -Infinity, NaN, "\\\\u0000 literally", "\\ud800 lone"]')
    company, sync_id = _company(engine, "acme")
    _write_page(engine, company.id, sync_id, documents)

    with engine.connect() as conn:
        comments = dict(conn.execute(sa.select(billingo_invoices.c.document_id, billingo_invoices.c.comment)
                                     .where(billingo_invoices.c.company_id == company.id)).all())
        partner = conn.execute(sa.select(billingo_invoices.c.partner_name).where(billingo_invoices.c.document_id == first["id"])).scalar_one()
        item = conn.execute(sa.select(billingo_invoice_items.c.name, billingo_invoice_items.c.comment).where(
            billingo_invoice_items.c.document_id == first["id"], billingo_invoice_items.c.position == 1)).one()
        payloads = {p.document_id: p.payload for p in store.raw_payloads(conn, company.id, [d["id"] for d in documents])}
        verbatim = dict(conn.execute(sa.select(billingo_documents_raw.c.document_id, billingo_documents_raw.c.payload_verbatim)).all())
        stand_in = conn.execute(sa.select(billingo_documents_raw.c.payload).where(billingo_documents_raw.c.document_id == second["id"])).scalar_one()
    assert comments[first["id"]] == HOSTILE and comments[second["id"]] == big and len(big) == 5_000_000
    assert partner == HOSTILE[:255] and tuple(item) == (HOSTILE, big)
    assert verbatim[first["id"]] is None and verbatim[second["id"]] is not None and verbatim[third["id"]] is not None
    assert stand_in["unexpected field"] == {"nul": "a\ufffdb", "tab\tkey": HOSTILE}
    assert payloads[first["id"]] == first and payloads[second["id"]] == second
    weird = payloads[third["id"]]["weird"]  # NaN never equals itself: compared one by one
    assert weird[:2] == [math.inf, -math.inf] and math.isnan(weird[2]) and weird[3:] == third["weird"][3:]


def test_nulls_stay_null(engine):
    company, sync_id = _company(engine, "acme")
    invoice = {"document_id": 1, "source_hash": "h" * 64, "cancelled": False, "invoice_number": None,
               "gross_total": None, "comment": None, "invoice_date": None, "electronic": None}
    item = {"document_id": 1, "position": 1, "name": None, "quantity": None, "vat_percent": None}
    with engine.begin() as conn:
        store.write_invoices_with_items(conn, company.id, [invoice], [item], NOW)
    with engine.connect() as conn:
        stored = conn.execute(sa.select(billingo_invoices.c.invoice_number, billingo_invoices.c.gross_total, billingo_invoices.c.comment,
                                        billingo_invoices.c.invoice_date, billingo_invoices.c.electronic, billingo_invoices.c.deleted_in_source_at)).one()
        stored_item = conn.execute(sa.select(billingo_invoice_items.c.name, billingo_invoice_items.c.quantity, billingo_invoice_items.c.vat_percent)).one()
    assert tuple(stored) == (None,) * 6 and tuple(stored_item) == (None,) * 3


def test_amounts_keep_the_bind_processors_quantization(engine):
    """COPY gets the text ExactDecimal's bind processor makes: rounded half up at the column's scale."""
    company, _ = _company(engine, "acme")
    invoice = {"document_id": 1, "source_hash": "h" * 64, "cancelled": False, "gross_total": Decimal("0.0000005"),
               "net_total": Decimal("1E+3"), "conversion_rate": Decimal("0.000000005"), "vat_total": Decimal("-2.5000005")}
    item = {"document_id": 1, "position": 1, "quantity": Decimal("1.23456789"), "vat_percent": Decimal("27.00005")}
    with engine.begin() as conn:
        store.write_invoices_with_items(conn, company.id, [invoice], [item], NOW)
    with engine.connect() as conn:
        row = conn.execute(sa.select(billingo_invoices.c.gross_total, billingo_invoices.c.net_total,
                                     billingo_invoices.c.conversion_rate, billingo_invoices.c.vat_total)).one()
        item_row = conn.execute(sa.select(billingo_invoice_items.c.quantity, billingo_invoice_items.c.vat_percent)).one()
    assert [format(v, "f") for v in row] == ["0.000001", "1000.000000", "0.00000001", "-2.500001"]
    assert [format(v, "f") for v in item_row] == ["1.234568", "27.0001"]


@pytest.mark.parametrize("scale", [0, 2, 4, 6, 8, 10])
def test_amounts_bind_as_plain_digits_at_every_scale(scale):
    """The bind text is ``format(..., "f")`` of the rounded value, whichever way it is written
    (``str`` up to scale 6, where it writes no exponent): zeros, tiny and huge values, signs."""
    exact = ExactDecimal(28, scale).exact_value(as_text=True)
    generator = random.Random(scale)
    values = [Decimal(0), Decimal("-0"), Decimal("0E-12"), Decimal("1E+5"), Decimal("-1E-12"), Decimal("123456789012.5")]
    values += [Decimal(generator.randint(-10**12, 10**12)).scaleb(generator.randint(-14, 6)) for _ in range(2_000)]
    quantum = Decimal(1).scaleb(-scale)
    for value in values:
        expected = format(value.quantize(quantum, rounding=ROUND_HALF_UP), "f")
        assert exact(value) == expected, value
        assert "E" not in expected


def test_sqlite_dates_bind_as_sqlalchemys_own_processor_binds_them():
    """The SQLite DATE shortcut (``date.isoformat``) writes what SQLAlchemy's processor writes,
    and leaves whatever is not a plain date to it (a datetime, and a refusal of text)."""
    sqlite_engine = sa.create_engine("sqlite://")
    column = billingo_invoices.c.due_date
    with sqlite_engine.connect() as conn:
        convert = bulk._converter(conn, column)
        process = column.type.dialect_impl(conn.dialect).bind_processor(conn.dialect)
        days = [dt.date(1, 1, 1), dt.date(999, 12, 31), dt.date(2024, 2, 29), dt.date(9999, 12, 31)]
        days += [dt.date(2000, 1, 1) + dt.timedelta(days=n * 37) for n in range(500)]
        for value in [*days, dt.datetime(2024, 5, 6, 7, 8, 9), None]:
            assert convert(value) == process(value), value
        with pytest.raises(TypeError):
            convert("2024-01-01")
    sqlite_engine.dispose()


def test_values_shared_between_rows_bind_as_each_row_alone_binds_them(engine):
    """``bound_rows`` converts a value object once for the rows that share it (a page's
    timestamp): each row still gets what binding it alone gives, and a bad value is still refused."""
    columns = [billingo_invoices.c.gross_total, billingo_invoices.c.first_seen_at, billingo_invoices.c.comment]
    shared_amount, shared_time = Decimal("1.0000005"), NOW
    rows = [
        {"gross_total": shared_amount, "first_seen_at": shared_time, "comment": "a"},
        {"gross_total": shared_amount, "first_seen_at": shared_time, "comment": None},
        {"gross_total": Decimal("2.5"), "first_seen_at": shared_time + dt.timedelta(hours=1), "comment": "c"},
        {"gross_total": None, "first_seen_at": shared_time, "comment": "a"},
        {"gross_total": shared_amount, "first_seen_at": NOW.astimezone(dt.timezone(dt.timedelta(hours=1))), "comment": "a"},
    ]
    with engine.connect() as conn:
        together = bulk.bound_rows(conn, columns, rows)
        alone = [bulk.bound_rows(conn, columns, [row])[0] for row in rows]
        assert together == alone
        assert together[0][0] == "1.000001" and together[4][1] == together[0][1]
        with pytest.raises(sa.exc.StatementError, match="Decimal"):
            bulk.bound_rows(conn, columns, [rows[0], {**rows[0], "gross_total": 1.5}])


def test_a_rollback_of_the_callers_transaction_leaves_nothing(engine):
    documents = _page(10)
    company, sync_id = _company(engine, "acme")
    raw_rows, invoice_rows, item_rows = _rows(documents)
    with engine.connect() as conn:
        with conn.begin() as transaction:
            store.upsert_raw_documents(conn, company.id, sync_id, raw_rows, NOW)
            store.write_invoices_with_items(conn, company.id, invoice_rows, item_rows, NOW)
            assert conn.execute(sa.select(sa.func.count()).select_from(billingo_invoice_items)).scalar_one() == len(item_rows)
            transaction.rollback()
    assert _stored(engine, company.id) == {t.name: [] for t in (billingo_documents_raw, billingo_invoices, billingo_invoice_items)}
    _write_page(engine, company.id, sync_id, documents)  # and the same session writes the page afterwards
    assert len(_stored(engine, company.id)["billingo_invoice_items"]) == len(item_rows)


def test_a_row_the_database_refuses_is_a_row_refusal_on_both_dialects(engine):
    """What the per-document isolation of the sync catches: SQLAlchemy's own exception types."""
    company, sync_id = _company(engine, "acme")
    orphan = {"document_id": 404, "position": 1, "name": "no such invoice"}
    with pytest.raises(sa.exc.IntegrityError) as excinfo:
        with engine.begin() as conn:
            store.write_invoices_with_items(conn, company.id, [{"document_id": 1, "source_hash": "h" * 64, "cancelled": False}], [orphan], NOW)
    assert is_row_refusal(excinfo.value)
    with pytest.raises(sa.exc.StatementError) as excinfo:
        with engine.begin() as conn:
            store.write_invoices_with_items(conn, company.id, [{"document_id": 1, "source_hash": "h" * 64, "cancelled": False}],
                                            [{"document_id": 1, "position": 1, "quantity": 1.5}], NOW)
    assert is_row_refusal(excinfo.value) and "Decimal" in str(excinfo.value)
    assert _stored(engine, company.id)["billingo_invoices"] == []
    _write_page(engine, company.id, sync_id, _page(5))  # the connection is usable afterwards
    assert len(_stored(engine, company.id)["billingo_invoices"]) == 5


def test_postgresql_tables_get_statistics_as_they_grow(postgres_database_url):
    """Without statistics PostgreSQL keeps a plan that checks each item's foreign key against every
    invoice of the company (bulk's docstring); the writers analyze a table it knows nothing about
    and one that doubled since. PostgreSQL only: SQLite keeps no plan across statements."""
    engine = get_engine(postgres_database_url)
    with engine.begin() as conn:  # TRUNCATE, not DELETE: the tables as new, without statistics
        conn.execute(sa.text(f"TRUNCATE {', '.join(t.name for t in metadata.sorted_tables)} RESTART IDENTITY CASCADE"))
    company, sync_id = _company(engine, "acme")
    tables = (billingo_documents_raw, billingo_invoices, billingo_invoice_items)
    with engine.begin() as conn:
        assert bulk.ensure_planner_statistics(conn, tables) == []  # empty tables: nothing to learn
    _write_page(engine, company.id, sync_id, _page(100, seed=1))
    with engine.connect() as conn:
        reltuples = dict(conn.execute(sa.text(
            "SELECT relname, reltuples FROM pg_class WHERE relname IN ('billingo_documents_raw', 'billingo_invoices')")).all())
        assert reltuples == {"billingo_documents_raw": 100, "billingo_invoices": 100}
        assert bulk.ensure_planner_statistics(conn, tables) == ["billingo_invoice_items"]  # written after its check
        assert bulk.ensure_planner_statistics(conn, tables) == []
    documents = _page(2000, seed=2)
    for start in range(0, len(documents), 100):
        _write_page(engine, company.id, sync_id, documents[start:start + 100])
    with engine.connect() as conn:
        analyzed = conn.execute(sa.text("SELECT reltuples FROM pg_class WHERE relname = 'billingo_invoices'")).scalar_one()
        assert 1000 <= analyzed <= 2100  # never less than half of what the table holds
        plan = "\n".join(conn.execute(sa.text(
            "EXPLAIN SELECT 1 FROM ONLY billingo_invoices x WHERE company_id = :c AND document_id = :d FOR KEY SHARE OF x"),
            {"c": company.id, "d": 5}).scalars())
    assert "uq_billingo_invoices_company_id_document_id" in plan


@pytest.mark.parametrize(
    "payload",
    [
        {"id": 1, "b": 1, "a": [1.5, "x"], "payment_status": "paid", "paid_date": "2026-01-02"},
        {"id": 2, "payment_status": "outstanding", "paid_date": "2026-11-30", "gross_total": 0.1},  # fake paid_date
        {"id": 3, "comment": "nul \x00 inside"},
        {"id": 4, "comment": "lone \ud800 surrogate"},
        read_json_text('{"id": 5, "gross_total": NaN, "net": Infinity, "items": [{"x": -Infinity}]}'),
        {"id": 6, "comment": HOSTILE, "nested": {"z": None, "y": True}},
        {"id": 7, "tiny": [1e-07, 2.5e-05, 0.0001, 1e16, 5e-324], "big": 2**64, "payment_status": "paid"},
        {"id": 8, "paid_date": "2026-11-30", "payment_status": "outstanding", "rate": 3.5e-06},
        {"id": 9, "é": {"Á": 1, "a": 2, "😀": 3, "z": [{"ő": "ű"}]}, "comment": "0.0000 and 1e-5 in text"},
    ],
    ids=["paid", "fake-paid-date", "nul", "surrogate", "non-finite", "hostile", "float-forms", "fake-paid-tiny", "unicode-keys"],
)
def test_one_serialization_gives_the_change_hash_and_a_lossless_stored_form(payload):
    document = store.raw_document(payload["id"], payload)
    assert document.content_hash == change_hash(payload)
    stored, verbatim = store.storable_payload(payload)
    # Compared as text: a NaN never equals itself.
    assert json.dumps(document.stored, sort_keys=True) == json.dumps(stored, sort_keys=True)
    assert document.verbatim == verbatim
    if document.text is not None:  # what the JSON column gets holds the stored value
        assert json.loads(document.text) == document.stored


def test_a_first_load_inserts_and_still_upserts_a_document_stored_after_all(engine):
    documents = _page(5)
    company, sync_id = _company(engine, "acme")
    _write_page(engine, company.id, sync_id, documents[:2])
    before = _stored(engine, company.id)
    documents[0]["comment"] = "changed since"
    raw_rows, invoice_rows, item_rows = _rows(documents)
    calls = []

    def write(conn, batch, assume_new):
        calls.append(assume_new)
        store.upsert_raw_documents(conn, company.id, sync_id, raw_rows, NOW, new=assume_new)
        store.write_invoices_with_items(conn, company.id, invoice_rows, item_rows, NOW, new=assume_new)

    if engine.dialect.name == "postgresql":
        # Written alone, the assumption spoils the transaction and says so; nothing of it is kept.
        with pytest.raises(bulk.AssumedNewKeysExist, match="billingo_documents_raw: a key assumed new exists"):
            with engine.begin() as conn:
                store.upsert_raw_documents(conn, company.id, sync_id, raw_rows, NOW, new=True)
        assert _stored(engine, company.id) == before
    # The caller believes none is stored (new), but two are: they are upserted, not refused.
    assert write_isolating_refusals(engine, ["page"], write, lambda element: 0) == {}
    # PostgreSQL's COPY met the stored keys and the page was written again, as an upsert; SQLite
    # always upserts.
    assert calls == ([True, False] if engine.dialect.name == "postgresql" else [True])
    stored = _stored(engine, company.id)
    assert len(stored["billingo_documents_raw"]) == len(stored["billingo_invoices"]) == 5
    assert len(stored["billingo_invoice_items"]) == len(item_rows)
    with engine.connect() as conn:
        comment = conn.execute(sa.select(billingo_invoices.c.comment).where(
            billingo_invoices.c.company_id == company.id, billingo_invoices.c.document_id == documents[0]["id"])).scalar_one()
    assert comment == "changed since"


def test_a_page_prepared_as_new_is_written_whole_when_another_writer_stored_part_of_it_first(engine):
    """Between a page's read of what is stored and its write, a concurrent sync of the company
    stores some of its documents and marks one's payments due: the page is still written whole,
    as an upsert, with nothing refused and every due mark kept once."""
    documents = _page(40)
    company, sync_id = _company(engine, "acme")
    page = PageContext(company.id, sync_id, NOW)
    prepared = prepare_document_page(engine, page, [(d["id"], d) for d in documents])
    assert prepared.first_seen == {d["id"] for d in documents} and prepared.payments_due
    due = sorted(prepared.payments_due)[0]
    _write_page(engine, company.id, sync_id, documents[:3])
    with engine.begin() as conn:
        payment_store.mark_payments_due(conn, company.id, sync_id, [due], NOW - dt.timedelta(hours=1))
    outcome = write_document_page(engine, page, prepared)
    assert (outcome.created, outcome.errors) == (40, [])
    stored = _stored(engine, company.id)
    assert len(stored["billingo_documents_raw"]) == len(stored["billingo_invoices"]) == 40
    assert len(stored["billingo_invoice_items"]) == sum(len(d.items) for d in prepared.to_write)
    with engine.connect() as conn:
        marks = dict(conn.execute(sa.select(billingo_payment_history_state.c.document_id, billingo_payment_history_state.c.due_since)
                                  .where(billingo_payment_history_state.c.company_id == company.id)).all())
    assert set(marks) == prepared.payments_due
    assert marks[due] == NOW - dt.timedelta(hours=1)  # an existing mark keeps its earlier time
    assert all(marks[d] == NOW for d in prepared.payments_due - {due})


def test_warehouse_sessions_are_set_up_for_bulk_writes(engine):
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL, in WAL mode
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        else:  # the server here is built with lz4 (Debian's PostgreSQL 15)
            assert conn.exec_driver_sql("SHOW default_toast_compression").scalar() == "lz4"
