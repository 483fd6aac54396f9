"""PostgreSQL going down in the middle of a sync: the CLI says so in one line and exits non-zero,
nothing stored is lost, and the next sync (with the server back) recovers by itself.

The server is a throwaway cluster of this module's own (``pg_cluster``): the shared server on
5432 is never stopped.
"""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa

from billingo_pipeline.admin import register_company
from billingo_pipeline.simulator import generate_api_key
from billingo_pipeline.warehouse.engine import dispose_engines, get_engine
from billingo_pipeline.warehouse.schema import billingo_documents_raw, billingo_invoice_items, billingo_invoices, sync_log
from billingo_pipeline.warehouse.sync_log import COMPLETED, FAILED, RUNNING
from billingo_pipeline_tests.faults.cli_subprocess import cli_environment, run_cli

pytestmark = pytest.mark.slow  # a throwaway PostgreSQL cluster and a CLI process

# Four pages of 100. The server goes down when page 4 is asked for: by then pages 1-3 are
# fetched, one of them may be waiting in the hand-off, one being prepared and one being written,
# so none, one or two pages are committed.
DOCUMENTS = 350


def test_postgresql_going_down_mid_sync_is_one_line_and_the_next_sync_recovers(running_pg_cluster, simulator, fernet_key, tmp_path):
    cluster = running_pg_cluster
    url = cluster.create_database("outage_mid_sync")
    engine = get_engine(url)
    api_key = generate_api_key("outage")
    simulator.add_organization(api_key, name="Acme Kft.", seed="outage", document_count=DOCUMENTS)
    register_company(engine, "acme", "Acme Kft.", api_key, api_base_url=simulator.base_url)

    went_down = threading.Event()

    def outage(request):
        if request.path.endswith("/documents") and request.query.get("page") == "4" and not went_down.is_set():
            went_down.set()
            cluster.stop()  # immediate: like a crashed server or a failover

    simulator.on_request(outage)
    env = cli_environment(url, simulator.base_url, tmp_path / "dagster_home")
    failed = run_cli(env, "sync", "acme")
    assert went_down.is_set()
    assert failed.returncode == 1, failed.stdout + failed.stderr
    [line] = failed.stdout.splitlines()
    assert line.startswith("acme: FAILED") and "the warehouse failed during the sync: OperationalError" in line
    assert "the sync-log row could not be marked FAILED" in line and "the next sync takes it over" in line
    assert "Traceback" not in failed.stderr and "[SQL" not in failed.stdout + failed.stderr
    assert api_key not in failed.stdout + failed.stderr

    cluster.start()
    dispose_engines()  # the pool's connections died with the server
    engine = get_engine(url)
    with engine.connect() as conn:
        [left] = conn.execute(sa.select(sync_log)).all()
        assert left.status == RUNNING and conn.execute(sa.select(sa.func.count()).select_from(billingo_documents_raw)).scalar() in (0, 100, 200)

    recovered = run_cli(env, "sync", "acme")
    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    assert recovered.stdout.startswith("acme: COMPLETED")
    with engine.connect() as conn:
        first, second = conn.execute(sa.select(sync_log).order_by(sync_log.c.id)).all()
        raw_ids = conn.execute(sa.select(billingo_documents_raw.c.document_id)).scalars().all()
        invoice_ids = conn.execute(sa.select(billingo_invoices.c.document_id)).scalars().all()
        items = conn.execute(sa.select(sa.func.count()).select_from(billingo_invoice_items)).scalar()
    assert first.status == FAILED and first.error_message.startswith("abandoned: ")
    assert "taken over by run " + second.run_id in first.error_message
    assert second.status == COMPLETED and second.invoices_processed == DOCUMENTS
    source = simulator.documents(api_key)
    assert sorted(raw_ids) == sorted(invoice_ids) == sorted(d["id"] for d in source)
    assert items == sum(len(d["items"]) for d in source)
    dispose_engines()
