"""Page writes into the warehouse, old path against the bulk path, on SQLite and PostgreSQL.

    .venv/bin/python bench/warehouse_writes.py [--documents 20000] [--dialects sqlite postgresql]

No HTTP: the simulator's generated documents are normalized up front, then written page by page
(100 documents, one transaction per page: raw rows, invoices and items commit together) into a
fresh warehouse per measurement (a throwaway PostgreSQL database, or a SQLite file). Each phase
is timed around its call: ``raw`` (upsert_raw_documents), ``invoices`` (the invoice upsert),
``items`` (the item DELETE + INSERT), and the whole loop.

``legacy`` is the pre-bulk path kept here as the reference: ``conn.execute(insert, rows)``
(multi-row INSERT ... ON CONFLICT for raw rows and invoices, executemany for items), with no
statistics on a fresh PostgreSQL warehouse. ``bulk`` is what the warehouse module does now.

Target: PostgreSQL within 1.25x of SQLite on the bulk path.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa

from billingo_pipeline.normalize import normalize_document
from billingo_pipeline.simulator.data import generate_documents
from billingo_pipeline.warehouse import documents as store
from billingo_pipeline.warehouse.companies import add_company
from billingo_pipeline.warehouse.engine import create_warehouse_engine, upgrade_to_head
from billingo_pipeline.warehouse.schema import WAREHOUSE_ROW_LIMITS, billingo_invoice_items, billingo_invoices
from billingo_pipeline.warehouse.sync_log import start_sync
from billingo_pipeline.warehouse.upsert import upsert

PG_ADMIN_URL = os.environ.get("BILLINGO_BENCH_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
PAGE_SIZE = 100
PHASES = ("raw", "invoices", "items")


@contextlib.contextmanager
def fresh_warehouse(dialect: str) -> Iterator[str]:
    if dialect == "sqlite":
        with tempfile.TemporaryDirectory() as folder:
            yield f"sqlite:///{Path(folder) / 'warehouse.db'}"
        return
    name = f"bench_writes_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield sa.make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def legacy_raw(conn, company_id, sync_id, documents, now):
    rows = []
    for document_id, payload, content_hash, *_ in documents:
        stored, verbatim = store.storable_payload(payload)
        rows.append({
            "company_id": company_id, "document_id": document_id, "payload": stored, "payload_verbatim": verbatim,
            "content_hash": content_hash, "first_fetched_at": now, "last_fetched_at": now,
            "last_seen_sync_id": sync_id, "missing_since": None,
        })
    upsert(conn, store.raw, rows, conflict_columns=("company_id", "document_id"),
           update_columns=("payload", "payload_verbatim", "content_hash", "last_fetched_at", "last_seen_sync_id", "missing_since"))


def legacy_invoices(conn, company_id, invoice_rows, now):
    rows = [{**row, "company_id": company_id, "first_seen_at": now, "last_changed_at": now, "deleted_in_source_at": None}
            for row in invoice_rows]
    upsert(conn, billingo_invoices, rows, conflict_columns=("company_id", "document_id"),
           update_columns=[c.name for c in billingo_invoices.columns if c.name not in store.INVOICE_UPDATE_EXCLUDED])


def legacy_items(conn, company_id, document_ids, item_rows):
    items = billingo_invoice_items
    conn.execute(items.delete().where(items.c.company_id == company_id, items.c.document_id.in_(document_ids)))
    if item_rows:
        conn.execute(items.insert(), [{**row, "company_id": company_id} for row in item_rows])


def prepare_pages(count: int) -> list[tuple[list, list, list]]:
    documents = generate_documents(1, count, today=dt.date(2026, 11, 30))
    pages = []
    for start in range(0, count, PAGE_SIZE):
        page = documents[start:start + PAGE_SIZE]
        raw_rows = [store.raw_document(d["id"], d) for d in page]
        normalized = [normalize_document(d, WAREHOUSE_ROW_LIMITS) for d in page]
        invoice_rows = [{**n.invoice, "source_hash": r.content_hash} for n, r in zip(normalized, raw_rows)]
        item_rows = [{**item, "document_id": n.document_id} for n in normalized for item in n.items]
        pages.append((raw_rows, invoice_rows, item_rows))
    return pages


def measure(dialect: str, path: str, pages) -> dict[str, float]:
    timings = dict.fromkeys((*PHASES, "total"), 0.0)
    with fresh_warehouse(dialect) as url:
        engine = create_warehouse_engine(url)
        upgrade_to_head(engine)
        company = add_company(engine, "bench", "Bench Kft.")
        sync_id = start_sync(engine, company.id, "bench-run", "cli")
        loop_started = time.perf_counter()
        for raw_rows, invoice_rows, item_rows in pages:
            now = dt.datetime.now(dt.timezone.utc)
            with engine.begin() as conn:
                started = time.perf_counter()
                if path == "legacy":
                    legacy_raw(conn, company.id, sync_id, raw_rows, now)
                    after_raw = time.perf_counter()
                    legacy_invoices(conn, company.id, invoice_rows, now)
                    after_invoices = time.perf_counter()
                    legacy_items(conn, company.id, [r["document_id"] for r in invoice_rows], item_rows)
                else:
                    store.upsert_raw_documents(conn, company.id, sync_id, raw_rows, now)
                    after_raw = time.perf_counter()
                    # invoices and items are one call on this path: "invoices" holds both, "items" 0
                    store.write_invoices_with_items(conn, company.id, invoice_rows, item_rows, now)
                    after_invoices = time.perf_counter()
                ended = time.perf_counter()
            timings["raw"] += after_raw - started
            timings["invoices"] += after_invoices - after_raw
            timings["items"] += ended - after_invoices
        timings["total"] = time.perf_counter() - loop_started
        engine.dispose()
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=20_000)
    parser.add_argument("--dialects", nargs="+", default=["sqlite", "postgresql"], choices=["sqlite", "postgresql"])
    parser.add_argument("--paths", nargs="+", default=["legacy", "bulk"], choices=["legacy", "bulk"])
    args = parser.parse_args()
    pages = prepare_pages(args.documents)
    items = sum(len(p[2]) for p in pages)
    print(f"{args.documents} documents, {items} items, {len(pages)} pages of {PAGE_SIZE}")
    results: dict[tuple[str, str], dict[str, float]] = {}
    for path in args.paths:
        for dialect in args.dialects:
            results[dialect, path] = timings = measure(dialect, path, pages)
            phases = "  ".join(f"{name} {timings[name]:6.2f} s" for name in PHASES)
            print(f"{path:7} {dialect:10} total {timings['total']:6.2f} s   {phases}", flush=True)
    for dialect in args.dialects:
        if (dialect, "legacy") in results and (dialect, "bulk") in results:
            ratio = results[dialect, "legacy"]["total"] / results[dialect, "bulk"]["total"]
            print(f"{dialect}: bulk is {ratio:.2f}x faster than legacy")
    for path in args.paths:
        if (("postgresql", path) in results) and (("sqlite", path) in results):
            ratio = results["postgresql", path]["total"] / results["sqlite", path]["total"]
            print(f"{path}: PostgreSQL / SQLite = {ratio:.2f} (target on bulk: <= 1.25)")


if __name__ == "__main__":
    main()
