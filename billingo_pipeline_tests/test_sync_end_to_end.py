"""End-to-end: the simulator on a real socket -> Dagster materializations -> the warehouse.

Each test runs on SQLite and on the real PostgreSQL (the ``warehouse_url`` fixture). The tests of
what a run records sync through Dagster runs (``_sync``, as the CLI does); those of what a sync
fetches and writes call the engine as the sync asset does (``_sync_directly``: a run costs a
second or more and adds nothing to what they check).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
import logging
import math
import threading
import time
from decimal import Decimal

import dagster as dg
import requests
import sqlalchemy as sa

from billingo_pipeline.admin import register_company
from billingo_pipeline.defs.billingo.assets import billingo_assets
from billingo_pipeline.garbage_collection import SYNC_YOUNG_THRESHOLD
from billingo_pipeline.partitions import COMPANY_PARTITIONS_NAME
from billingo_pipeline.resources import BillingoResource, FernetKeyResource, WarehouseResource
from billingo_pipeline.simulator import generate_api_key
from billingo_pipeline.warehouse import documents as store
from billingo_pipeline.warehouse.companies import get_company
from billingo_pipeline.warehouse.schema import billingo_documents_raw, billingo_invoice_items, billingo_invoices, sync_log
from billingo_pipeline.warehouse.sync_log import COMPLETED, FAILED, FULL, INCREMENTAL, PARTIAL, utcnow

from .conftest import add_simulated_company as _add
from .conftest import sync_companies, sync_directly

# The generated history is stamped up to a minute before "now": a clock moved past the incremental
# overlap (10 minutes) keeps it out of an incremental sync, whose counts are then exact.
HISTORY_AGE = dt.timedelta(minutes=12)


_sync = sync_companies
_sync_directly = sync_directly


def _log_rows(engine):
    with engine.connect() as conn:
        return conn.execute(sa.select(sync_log).order_by(sync_log.c.id)).all()


def _invoices(engine, **where):
    query = sa.select(billingo_invoices).order_by(billingo_invoices.c.document_id)
    for column, value in where.items():
        query = query.where(billingo_invoices.c[column] == value)
    with engine.connect() as conn:
        return {row.document_id: row for row in conn.execute(query)}


def _count(engine, table, **where):
    query = sa.select(sa.func.count()).select_from(table)
    for column, value in where.items():
        query = query.where(table.c[column] == value)
    with engine.connect() as conn:
        return conn.execute(query).scalar_one()


def _materialization_metadata(instance, run_id, asset_key):
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
    for record in records:
        materialization = record.event_log_entry.dagster_event.event_specific_data.materialization
        if materialization.asset_key == dg.AssetKey(asset_key):
            return {k: v.value for k, v in materialization.metadata.items()}
    raise AssertionError(f"no materialization of {asset_key} in run {run_id}")


def test_full_sync_then_resync_skips_everything(engine, warehouse_url, simulator, instance, fernet_key, caplog):
    caplog.set_level(logging.DEBUG)
    api_key = _add(engine, simulator, "acme", seed=1, documents=120)
    simulator.shift_clock(HISTORY_AGE)
    source = {d["id"]: d for d in simulator.documents(api_key)}

    [first] = _sync(instance, warehouse_url, simulator, "acme")
    assert first.success and first.sync_status == COMPLETED

    invoices = _invoices(engine)
    assert set(invoices) == set(source)
    assert _count(engine, billingo_invoice_items) == sum(len(d["items"]) for d in source.values())
    sample = source[max(source)]
    row = invoices[sample["id"]]
    assert row.invoice_number == sample["invoice_number"]
    assert row.gross_total == Decimal(str(sample["gross_total"]))
    assert row.partner_name == sample["document_partner"]["name"]

    [log] = _log_rows(engine)
    assert (log.status, log.invoices_processed, log.invoices_created, log.invoices_skipped) == (COMPLETED, 120, 120, 0)
    # Billingo's clock first, then three pages: a first sync is a full sweep from nowhere.
    assert log.api_calls == 4 and log.pages_fetched == 3 and log.trigger == "test"
    assert (log.mode, log.modified_since, log.fetch_complete) == (FULL, None, True)
    assert log.cursor is not None
    metadata = _materialization_metadata(instance, first.run_id, "billingo_invoices")
    assert (metadata["processed"], metadata["created"], metadata["failed"]) == (120, 120, 0)
    raw_metadata = _materialization_metadata(instance, first.run_id, "billingo_documents_raw")
    assert raw_metadata["api_calls"] == 4 and raw_metadata["documents_fetched"] == 120
    assert _materialization_metadata(instance, first.run_id, "billingo_invoice_items")["items_written"] > 120

    ids_before = {r.document_id: r.id for r in invoices.values()}
    # Nothing changed since the full sweep: the incremental re-sync reads the clock and one empty
    # page. (What the run records is the first sync's business; these two are the engine's.)
    [second] = _sync_directly(engine, simulator, "acme")
    assert second.sync_status == COMPLETED
    last = _log_rows(engine)[-1]
    assert (last.mode, last.modified_since) == (INCREMENTAL, log.cursor - dt.timedelta(minutes=10))
    assert (last.api_calls, last.pages_fetched, last.documents_fetched, last.fetch_complete) == (2, 1, 0, True)
    assert (last.invoices_processed, last.invoices_created, last.invoices_updated, last.invoices_skipped, last.items_written) == (0, 0, 0, 0, 0)
    # A full re-sync fetches everything again and finds every document unchanged.
    [third] = _sync_directly(engine, simulator, "acme", full=True)
    assert third.sync_status == COMPLETED
    last = _log_rows(engine)[-1]
    assert (last.mode, last.api_calls, last.pages_fetched, last.invoices_processed) == (FULL, 4, 3, 120)
    assert (last.invoices_created, last.invoices_updated, last.invoices_skipped, last.items_written) == (0, 0, 120, 0)
    assert last.invoices_marked_deleted == 0
    assert {r.document_id: r.id for r in _invoices(engine).values()} == ids_before
    assert _count(engine, billingo_invoices) == 120
    # The key appears in no log line, no event (metadata included) and no warehouse table but its own.
    assert api_key not in "\n".join(str(entry) for entry in instance.all_logs(first.run_id))
    assert api_key not in caplog.text
    with engine.connect() as conn:
        for table in (sync_log, billingo_invoices, billingo_documents_raw):
            assert api_key not in str(conn.execute(sa.select(table)).all())


def test_resync_applies_payments_new_documents_and_vanished_ones(engine, simulator, fernet_key):
    api_key = _add(engine, simulator, "acme", seed=2, documents=60)
    simulator.shift_clock(HISTORY_AGE)
    _sync_directly(engine, simulator, "acme")
    unpaid = next(d for d in simulator.documents(api_key) if d["payment_status"] == "outstanding" and not d["cancelled"])
    vanished = simulator.documents(api_key)[-1]
    simulator.pay_document(api_key, unpaid["id"])
    new = simulator.add_document(api_key)
    simulator.delete_document(api_key, vanished["id"])

    # An incremental sync fetches just the paid and the new document; a vanished one leaves no
    # trace in what was modified, so it stays unmarked.
    [result] = _sync_directly(engine, simulator, "acme")
    assert result.sync_status == COMPLETED
    log = _log_rows(engine)[-1]
    assert (log.mode, log.documents_fetched, log.invoices_processed, log.invoices_skipped) == (INCREMENTAL, 2, 2, 0)
    assert (log.invoices_created, log.invoices_updated, log.invoices_marked_deleted) == (1, 1, 0)
    assert _invoices(engine)[vanished["id"]].deleted_in_source_at is None
    # Only a full sweep sees what is gone.
    [result] = _sync_directly(engine, simulator, "acme", full=True)
    assert result.sync_status == COMPLETED
    log = _log_rows(engine)[-1]
    assert (log.mode, log.invoices_processed, log.invoices_created, log.invoices_updated, log.invoices_marked_deleted) == (FULL, 60, 0, 0, 1)
    assert log.invoices_skipped == 60  # every present document (the new one included) unchanged
    invoices = _invoices(engine)
    assert invoices[unpaid["id"]].payment_status == "paid" and invoices[unpaid["id"]].paid_date is not None
    assert new["id"] in invoices
    # Billingo never deletes issued invoices; one that vanishes is kept and marked, not deleted.
    assert invoices[vanished["id"]].deleted_in_source_at is not None
    assert _count(engine, billingo_invoice_items, document_id=vanished["id"]) == len(vanished["items"])


def test_one_malformed_document_makes_the_sync_partial(engine, simulator, fernet_key):
    api_key = _add(engine, simulator, "acme", seed=3, documents=40)
    bad = simulator.documents(api_key)[5]
    simulator.corrupt_document(api_key, bad["id"], "gross_total", "12.700,00 Ft")

    [result] = _sync_directly(engine, simulator, "acme")
    assert result.success and result.sync_status == PARTIAL
    log = _log_rows(engine)[-1]
    assert (log.invoices_processed, log.invoices_created, log.invoices_failed) == (40, 39, 1)
    [error] = log.errors
    assert error["document_id"] == bad["id"] and "gross_total" in error["message"]
    assert bad["id"] not in _invoices(engine)
    # The raw payload is kept as received, so the document can be re-normalized once fixed.
    assert _count(engine, billingo_documents_raw, document_id=bad["id"]) == 1


def test_documents_created_while_paging_are_neither_lost_nor_doubled(engine, simulator, fernet_key):
    api_key = _add(engine, simulator, "acme", seed=4, documents=130)
    created = []
    requests_so_far = len(simulator.requests_log)
    # Right after page 1 is served, a new invoice is issued: every later page shifts by one.
    simulator.schedule(after_requests=requests_so_far + 1, action=lambda: created.append(simulator.add_document(api_key)))

    [result] = _sync_directly(engine, simulator, "acme")
    assert result.sync_status == COMPLETED and created
    invoices = _invoices(engine)
    assert set(invoices) == {d["id"] for d in simulator.documents(api_key)}
    log = _log_rows(engine)[-1]
    assert log.invoices_processed == 131 and log.invoices_created == 131 and log.fetch_complete


def test_companies_are_isolated(engine, warehouse_url, simulator, instance, fernet_key):
    acme_key = _add(engine, simulator, "acme", seed=5, documents=30)
    globex_key = _add(engine, simulator, "globex", seed=6, documents=20)
    results = _sync(instance, warehouse_url, simulator, "acme", "globex")
    assert [r.sync_status for r in results] == [COMPLETED, COMPLETED]
    with engine.connect() as conn:
        ids = dict(conn.execute(sa.text("select slug, id from companies")).all())
    assert set(_invoices(engine, company_id=ids["acme"])) == {d["id"] for d in simulator.documents(acme_key)}
    assert set(_invoices(engine, company_id=ids["globex"])) == {d["id"] for d in simulator.documents(globex_key)}


def test_disabled_company_is_refused_without_calling_billingo(engine, simulator, fernet_key):
    _add(engine, simulator, "acme", seed=7, documents=10, sync_enabled=False)
    calls_before = len(simulator.requests_log)
    [result] = _sync_directly(engine, simulator, "acme")
    assert not result.success
    assert "BILLINGO_SYNC feature flag off" in result.error
    assert len(simulator.requests_log) == calls_before
    assert _log_rows(engine) == []


def test_rejected_key_fails_the_sync_and_never_leaks(engine, warehouse_url, simulator, instance, fernet_key, caplog):
    caplog.set_level(logging.DEBUG)
    wrong_key = "0123456789abcdef-not-a-billingo-key"
    simulator.add_organization(generate_api_key(8), name="Acme", seed=8, document_count=5)
    register_company(engine, "acme", "Acme", wrong_key, api_base_url=simulator.base_url, verify=False)

    [result] = _sync(instance, warehouse_url, simulator, "acme")
    assert not result.success and result.sync_status == FAILED
    [log] = _log_rows(engine)
    assert "HTTP 401" in log.error_message and "'acme'" in log.error_message
    event_text = "\n".join(str(entry) for entry in instance.all_logs(result.run_id))
    for text in (event_text, log.error_message, str(log.errors), result.error, caplog.text):
        assert wrong_key not in text
    assert "HTTP 401" in event_text


def test_server_errors_are_retried_then_fail_the_sync(engine, warehouse_url, simulator, instance, fernet_key, caplog):
    caplog.set_level(logging.DEBUG)
    api_key = _add(engine, simulator, "acme", seed=9, documents=10)
    simulator.inject_fault("server_error", times=10)
    [result] = _sync(instance, warehouse_url, simulator, "acme")
    assert result.sync_status == FAILED
    log = _log_rows(engine)[-1]
    assert "failed after 4 attempts" in log.error_message and "HTTP 500" in log.error_message
    # The clock answered; then every attempt at page 1 counts against the company's rate limit.
    assert log.api_calls == 1 + 4
    faulted = [r.path for r in simulator.requests_log if r.fault is not None]
    assert faulted == ["/v3/documents"] * 4
    assert api_key not in caplog.text and api_key not in "\n".join(str(e) for e in instance.all_logs(result.run_id))


def test_renormalizing_alone_gets_its_own_sync_log_row(engine, warehouse_url, simulator, instance, fernet_key):
    _add(engine, simulator, "acme", seed=10, documents=15)
    _sync(instance, warehouse_url, simulator, "acme")
    result = dg.materialize(
        billingo_assets,
        selection=["billingo_invoices", "billingo_invoice_items"],
        partition_key="acme",
        instance=instance,
        resources={
            "warehouse": WarehouseResource(url=warehouse_url),
            "billingo": BillingoResource(base_url=simulator.base_url),
            "fernet": FernetKeyResource(),
        },
    )
    assert result.success
    log = _log_rows(engine)[-1]
    assert log.run_id == result.run_id and log.trigger == "manual"
    assert (log.status, log.api_calls, log.invoices_skipped) == (COMPLETED, 0, 15)
    assert "acme" in instance.get_dynamic_partitions(COMPANY_PARTITIONS_NAME)


def test_an_invoice_seen_again_loses_its_deleted_mark(engine, warehouse_url, simulator, instance, fernet_key):
    api_key = _add(engine, simulator, "acme", seed=11, documents=10)
    simulator.shift_clock(HISTORY_AGE)
    _sync_directly(engine, simulator, "acme")
    documents = simulator.documents(api_key)
    returning = documents[3]["id"]
    # Back and changed meanwhile: its upsert already clears the mark, and it still counts as restored.
    returning_paid = next(d["id"] for d in documents if d["payment_status"] != "paid" and not d.get("cancelled"))
    simulator.pay_document(api_key, returning_paid)
    with engine.begin() as conn:  # as an earlier complete fetch that missed them would have left them
        conn.execute(
            billingo_invoices.update()
            .where(billingo_invoices.c.document_id.in_([returning, returning_paid]))
            .values(deleted_in_source_at=sa.func.current_timestamp())
        )
    # Only a full sweep restores: an incremental sync fetches just the paid one and cannot tell
    # an unmodified document from a vanished one.
    [result] = _sync(instance, warehouse_url, simulator, "acme", full=True)
    invoices = _invoices(engine)
    assert invoices[returning].deleted_in_source_at is None and invoices[returning_paid].deleted_in_source_at is None
    assert invoices[returning_paid].payment_status == "paid"
    metadata = _materialization_metadata(instance, result.run_id, "billingo_invoices")
    assert (metadata["restored"], metadata["updated"]) == (2, 1)


def test_sync_log_row_is_running_while_billingo_is_being_read(engine, simulator, fernet_key):
    _add(engine, simulator, "acme", seed=12, documents=120)
    seen_while_paging = []

    def look_at_sync_log(request):
        if request.path == "/v3/documents":
            with engine.connect() as conn:
                seen_while_paging.append(conn.execute(sa.select(sync_log.c.status)).scalars().all())

    simulator.on_request(look_at_sync_log)
    [result] = _sync_directly(engine, simulator, "acme")
    assert seen_while_paging == [["RUNNING"]] * 3
    assert _log_rows(engine)[-1].status == COMPLETED and result.sync_status == COMPLETED


@contextlib.contextmanager
def _states_reads(engine):
    """The statements run meanwhile that read stored document states (a page's read)."""
    statements: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("SELECT") and "billingo_documents_raw.content_hash" in statement:
            statements.append(statement)

    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)


def test_a_first_sync_never_reads_what_is_stored_of_its_pages_and_a_later_one_does(engine, simulator, fernet_key):
    _add(engine, simulator, "acme", seed=6, documents=120)
    with _states_reads(engine) as reads:
        [first] = _sync_directly(engine, simulator, "acme", full=True)
        assert (first.sync_status, reads) == (COMPLETED, [])
        [again] = _sync_directly(engine, simulator, "acme", full=True)
        assert again.sync_status == COMPLETED and len(reads) == 3  # one a page of 50
    log = _log_rows(engine)[-1]
    assert (log.invoices_created, log.invoices_skipped) == (0, 120)


def test_a_first_sync_meeting_a_document_stored_meanwhile_stores_every_document_once(engine, simulator, fernet_key):
    """What a first sync assumes (nothing of the company is stored) fails: after its first page
    someone stores a document of its last page, which is then written again as an upsert."""
    api_key = _add(engine, simulator, "acme", seed=7, documents=120)
    company = get_company(engine, "acme")
    last_page = requests.get(f"{simulator.base_url}/documents", params={"page": 3, "per_page": 50},
                             headers={"X-API-KEY": api_key}, timeout=10).json()["data"]
    later = last_page[0]

    def store_it():
        with engine.begin() as conn:
            store.upsert_raw_documents(conn, company.id, None, [store.raw_document(later["id"], later)], utcnow())

    # The sync's first two requests: Billingo's clock and page 1.
    simulator.schedule(after_requests=len(simulator.requests_log) + 2, action=store_it)
    [result] = _sync_directly(engine, simulator, "acme")
    assert result.sync_status == COMPLETED
    with engine.connect() as conn:
        sync_ids = conn.execute(sa.select(billingo_documents_raw.c.last_seen_sync_id).where(
            billingo_documents_raw.c.document_id == later["id"])).scalars().all()
    assert sync_ids == [_log_rows(engine)[-1].id]  # stored before, then by this sync: one row
    assert set(_invoices(engine)) == {d["id"] for d in simulator.documents(api_key)}
    assert _count(engine, billingo_documents_raw) == 120
    assert _count(engine, billingo_invoice_items) == sum(len(d["items"]) for d in simulator.documents(api_key))
    log = _log_rows(engine)[-1]
    assert (log.invoices_processed, log.invoices_failed, log.errors) == (120, 0, [])


def test_a_sync_collects_garbage_less_often_while_it_runs(engine, simulator, fernet_key):
    _add(engine, simulator, "acme", seed=8, documents=60)
    before = gc.get_threshold()
    during = []
    simulator.schedule(after_requests=len(simulator.requests_log) + 2, action=lambda: during.append(gc.get_threshold()))
    [result] = _sync_directly(engine, simulator, "acme")
    assert result.sync_status == COMPLETED
    assert during == [(max(before[0], SYNC_YOUNG_THRESHOLD), *before[1:])] and gc.get_threshold() == before


@contextlib.contextmanager
def _writer_transactions(engine):
    """(start, end) of every transaction the sync's page writers run meanwhile."""
    spans: list[list[float]] = []
    open_spans: dict[int, list[float]] = {}

    def begin(conn):
        if threading.current_thread().name.startswith("sync-writer-"):
            open_spans[id(conn)] = [time.monotonic(), math.inf]

    def commit(conn):
        span = open_spans.pop(id(conn), None)
        if span is not None:
            span[1] = time.monotonic()
            spans.append(span)

    sa.event.listen(engine, "begin", begin)
    sa.event.listen(engine, "commit", commit)
    try:
        yield spans
    finally:
        sa.event.remove(engine, "begin", begin)
        sa.event.remove(engine, "commit", commit)


def test_postgresql_writes_two_pages_at_once_and_sqlite_one_at_a_time(engine, simulator, fernet_key):
    api_key = _add(engine, simulator, "acme", seed=9, documents=200)  # four pages of 50
    postgresql = engine.dialect.name == "postgresql"
    if postgresql:  # every page's invoices take the server a while: the next page is sent meanwhile
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "CREATE FUNCTION test_slow_page() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN PERFORM pg_sleep(0.3); RETURN NULL; END $$;"
                "CREATE TRIGGER test_slow_page AFTER INSERT ON billingo_invoices "
                "FOR EACH STATEMENT EXECUTE FUNCTION test_slow_page()"
            )
    try:
        with _writer_transactions(engine) as spans:
            [result] = _sync_directly(engine, simulator, "acme")
    finally:
        if postgresql:
            with engine.begin() as conn:
                conn.exec_driver_sql("DROP TRIGGER test_slow_page ON billingo_invoices; DROP FUNCTION test_slow_page()")
    assert result.sync_status == COMPLETED
    assert set(_invoices(engine)) == {d["id"] for d in simulator.documents(api_key)}
    page_writes = [span for span in spans if span[1] - span[0] > 0.25] if postgresql else spans
    assert len(page_writes) >= 4
    most_at_once = max(sum(1 for other in page_writes if other[0] <= start < other[1]) for start, _ in page_writes)
    assert most_at_once == (2 if postgresql else 1)
