"""Shared set-up of the fault matrix: one company on the simulator, synced the production way.

A sync is ``sync.sync_company`` with the ``BillingoResource``'s clients (what the Dagster asset
runs for each company), or, with ``via_dagster=True``, a whole Dagster run of the sync assets
(``runner.run_company_syncs``, what the CLI starts): a Dagster run costs seconds, so the run path
is kept for the tests that look at what the run shows (its failure text, its event log). The
client's backoff is shrunk so that retries do not sleep for real. ``FaultRig`` holds the company
and answers the questions every fault test asks: what did the sync log say, is every document the
simulator holds in the warehouse exactly once, did the next sync recover.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import uuid
from collections.abc import Iterator

import dagster as dg
import pytest
import sqlalchemy as sa

from billingo_pipeline.admin import register_company
from billingo_pipeline.resources import BillingoResource
from billingo_pipeline.runner import run_company_syncs
from billingo_pipeline.simulator import BillingoSimulator, generate_api_key
from billingo_pipeline.sync import CompanySyncError, sync_company
from billingo_pipeline.warehouse.companies import CompanyError, get_company
from billingo_pipeline.warehouse.engine import get_engine
from billingo_pipeline.warehouse.schema import billingo_documents_raw, billingo_invoice_items, billingo_invoices, sync_log
from billingo_pipeline.warehouse.sync_log import COMPLETED, SyncAlreadyRunningError
from billingo_pipeline_tests.conftest import in_process_cli, throwaway_instance
from billingo_pipeline_tests.pg_cluster import PostgresCluster

SLUG = "acme"
DOCUMENTS = 30
PAGE_SIZE = 10  # 30 documents are 3 pages: a fault can hit the first, a middle or the last page
# Retries wait milliseconds, also when Billingo sends Retry-After (the wait is capped by the maximum).
HISTORY_AGE = dt.timedelta(minutes=12)  # the default incremental overlap (10 min) and a margin
FAST_RETRIES = {"backoff_seconds": 0.001, "max_backoff_seconds": 0.01}


@dataclasses.dataclass(frozen=True)
class SyncOutcome:
    """How one sync ended, as its caller sees it."""

    run_id: str
    success: bool
    status: str | None  # the sync-log row's status; None when no row was written (refused)
    error: str | None  # the one line the caller got (the exception, or the run's failure)


@dataclasses.dataclass
class FaultRig:
    """One company (``acme``) with ``DOCUMENTS`` documents on the simulator and in the warehouse's companies."""

    engine: sa.Engine
    warehouse_url: str
    simulator: BillingoSimulator
    api_key: str
    company_id: int
    _cleanup: contextlib.ExitStack = dataclasses.field(repr=False)
    slug: str = SLUG
    _instance: dg.DagsterInstance | None = dataclasses.field(default=None, repr=False)

    @property
    def instance(self) -> dg.DagsterInstance:
        """A test Dagster instance, made on first use."""
        if self._instance is None:
            self._instance = self._cleanup.enter_context(throwaway_instance())
        return self._instance

    def resource(self, **overrides) -> BillingoResource:
        return BillingoResource(base_url=self.simulator.base_url, **{"page_size": PAGE_SIZE, **FAST_RETRIES, **overrides})

    def sync(
        self, *, via_dagster: bool = False, run_id: str | None = None, full: bool = False, **resource_overrides
    ) -> SyncOutcome:
        """One sync of the company (see the module docstring); never raises on a failed sync.
        ``full`` forces a full sweep (the direct path only)."""
        billingo = self.resource(**resource_overrides)
        if via_dagster:
            [result] = run_company_syncs(
                [self.slug], warehouse_url=self.warehouse_url, billingo=billingo, instance=self.instance, trigger="test",
            )
            return SyncOutcome(result.run_id, result.success, result.sync_status, result.error)
        run_id = run_id or f"test-{uuid.uuid4().hex}"
        try:
            company = get_company(self.engine, self.slug)
            result = sync_company(
                self.engine, company, run_id=run_id, trigger="test", open_client=billingo.client_for, full=full
            )
        except (CompanySyncError, SyncAlreadyRunningError, CompanyError) as exc:
            return SyncOutcome(run_id, False, self._status_of(run_id), str(exc))
        return SyncOutcome(run_id, True, result.status, None)

    def _status_of(self, run_id: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(sync_log.c.status).where(sync_log.c.run_id == run_id)).scalar()

    def log_rows(self) -> list[sa.Row]:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(sync_log).where(sync_log.c.company_id == self.company_id).order_by(sync_log.c.id)).all()

    def last_log(self) -> sa.Row:
        return self.log_rows()[-1]

    def source(self) -> dict[int, dict]:
        """The documents the simulator holds, by id."""
        return {d["id"]: d for d in self.simulator.documents(self.api_key)}

    def stored_ids(self, table) -> list[int]:
        with self.engine.connect() as conn:
            return conn.execute(
                sa.select(table.c.document_id).where(table.c.company_id == self.company_id)
            ).scalars().all()

    def item_keys(self) -> list[tuple[int, int]]:
        with self.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(
                sa.select(billingo_invoice_items.c.document_id, billingo_invoice_items.c.position)
                .where(billingo_invoice_items.c.company_id == self.company_id)
            )]

    def live_invoice_ids(self) -> set[int]:
        """Invoices not marked as vanished from Billingo."""
        with self.engine.connect() as conn:
            return set(conn.execute(
                sa.select(billingo_invoices.c.document_id)
                .where(billingo_invoices.c.company_id == self.company_id, billingo_invoices.c.deleted_in_source_at.is_(None))
            ).scalars())

    def assert_nothing_lost_or_doubled(self, *, failed_ids: frozenset[int] = frozenset()) -> None:
        """Every simulator document is stored exactly once (raw), every one but ``failed_ids`` as an
        invoice with every item exactly once, and none of them is marked as vanished."""
        source = self.source()
        raw_ids, invoice_ids, item_keys = self.stored_ids(billingo_documents_raw), self.stored_ids(billingo_invoices), self.item_keys()
        assert len(raw_ids) == len(set(raw_ids)) and len(invoice_ids) == len(set(invoice_ids)), "a document is stored twice"
        assert len(item_keys) == len(set(item_keys)), "an item is stored twice"
        assert set(raw_ids) == set(source), "raw documents differ from what Billingo holds"
        expected = set(source) - failed_ids
        assert set(invoice_ids) == expected and self.live_invoice_ids() == expected
        assert len(item_keys) == sum(len(source[i]["items"]) for i in expected)

    def assert_recovers(self, *, unchanged: bool = False) -> sa.Row:
        """The next sync, with no hand on the warehouse, completes and holds every document once.

        It is whatever sync the engine plans (incremental after a complete full sweep: it fetches
        what changed since the last complete fetch). ``unchanged``: nothing changed at Billingo, so
        whatever it fetched is skipped by hash.
        """
        result = self.sync()
        log = self.last_log()
        assert (result.success, result.status, log.status) == (True, COMPLETED, COMPLETED), log.error_message
        assert log.error_message is None and log.errors == [] and log.fetch_complete
        assert log.invoices_processed == log.documents_fetched and log.invoices_failed == 0
        if unchanged:
            assert (log.invoices_created, log.invoices_updated, log.invoices_skipped) == (0, 0, log.documents_fetched)
        self.assert_nothing_lost_or_doubled()
        return log

    def assert_key_free(self, *texts: str | None) -> None:
        for text in texts:
            assert self.api_key not in (text or ""), "the API key leaked"


@pytest.fixture
def rig(request, warehouse_url, simulator, fernet_key) -> Iterator[FaultRig]:
    """The company on a fresh warehouse; ``DOCUMENTS`` documents, or as many as an indirect parameter says."""
    api_key = generate_api_key(SLUG)
    documents = getattr(request, "param", DOCUMENTS)
    simulator.add_organization(api_key, name="Acme Kft.", seed=SLUG, document_count=documents)
    # The generated history is stamped up to a minute ago: move Billingo's clock past the
    # incremental overlap, so an incremental sync fetches exactly what a test changes.
    simulator.shift_clock(HISTORY_AGE)
    engine = get_engine(warehouse_url)
    company, _ = register_company(engine, SLUG, "Acme Kft.", api_key, api_base_url=simulator.base_url)
    with contextlib.ExitStack() as cleanup:
        yield FaultRig(engine, warehouse_url, simulator, api_key, company.id, cleanup)


@pytest.fixture
def cli(rig, dagster_home, monkeypatch):
    """The CLI in-process against the rig's warehouse and simulator, with a Dagster home of its own."""
    return in_process_cli(monkeypatch, rig.warehouse_url, rig.simulator.base_url)


@pytest.fixture(scope="module")
def pg_cluster() -> Iterator[PostgresCluster]:
    """A throwaway PostgreSQL cluster of this module's own: tests may stop it (``pg_ctl -m immediate``).

    Shared by the module's tests; ``running_pg_cluster`` hands it out started. Always stopped and
    removed at the end, also when a test failed with the server down.
    """
    cluster = PostgresCluster()
    try:
        yield cluster.setup()
    finally:
        cluster.teardown()


@pytest.fixture
def running_pg_cluster(pg_cluster) -> PostgresCluster:
    """``pg_cluster``, started again if an earlier test left it stopped."""
    if not pg_cluster.is_running():
        pg_cluster.start()
    return pg_cluster
