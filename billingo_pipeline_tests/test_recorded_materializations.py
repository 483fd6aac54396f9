"""What a billingo_sync step reports is what it did: the assets it wrote are materialized, and a
step that wrote nothing (a partition of a company that does not exist) leaves the checks of the
real companies as their own syncs left them.

Each test runs on SQLite and on the real PostgreSQL; syncs go through Dagster against the
simulator on a real socket.
"""

from __future__ import annotations

import dagster as dg
import sqlalchemy as sa

from billingo_pipeline.defs.billingo.checks import CHECKS, ERROR_RATE, FRESHNESS, INVOICES_PER_CALL, ITEMS_ADD_UP, PARTNER_NAME, UNIQUE_IDS
from billingo_pipeline.defs.billingo.assets import SYNC_TABLES
from billingo_pipeline.warehouse.schema import billingo_invoice_items, billingo_invoices, billingo_partners

from .conftest import add_simulated_company as _add
from .conftest import materialize_company

RAW, INVOICES, ITEMS, PAYMENTS, PARTNERS = (
    dg.AssetKey(k) for k in ("billingo_documents_raw", "billingo_invoices", "billingo_invoice_items", "billingo_document_payments",
                             "billingo_partners")
)


def _materialize(instance, warehouse_url, simulator, slug, *, selection=None):
    # A run that fails is asserted on, not raised.
    return materialize_company(instance, warehouse_url, simulator, slug, selection=selection, raise_on_error=False)


def _materialized(result):
    return {(m.asset_key, m.partition): {k: v.value for k, v in m.metadata.items()} for m in result.asset_materializations_for_node("billingo_sync")}


def _count(engine, table):
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()


def test_selecting_the_raw_documents_alone_records_the_invoices_and_items_it_wrote(engine, warehouse_url, simulator, instance, fernet_key):
    _add(engine, simulator, "acme", seed=41, documents=25)
    result = _materialize(instance, warehouse_url, simulator, "acme", selection=["billingo_documents_raw"])
    assert result.success
    items = _count(engine, billingo_invoice_items)
    assert _count(engine, billingo_invoices) == 25 and items > 25
    materialized = _materialized(result)
    # A fetch sweeps every endpoint and fetches the payment histories: all that it wrote is recorded.
    assert set(materialized) == {(key, "acme") for key in SYNC_TABLES}
    assert materialized[(RAW, "acme")]["documents_fetched"] == 25
    assert materialized[(PARTNERS, "acme")]["created"] == _count(engine, billingo_partners) > 0
    assert (materialized[(INVOICES, "acme")]["processed"], materialized[(INVOICES, "acme")]["created"]) == (25, 25)
    assert materialized[(ITEMS, "acme")]["items_written"] == items
    # The health and key metrics stay on the invoices, as in a whole sync.
    assert "health" in materialized[(INVOICES, "acme")] and "health" not in materialized[(RAW, "acme")]
    for key in (RAW, INVOICES, ITEMS):
        event = instance.get_latest_materialization_event(key)
        assert event.run_id == result.run_id and event.dagster_event.partition == "acme"
    # Only the selected asset's checks run: the others were not asked for.
    assert {e.check_name for e in result.get_asset_check_evaluations()} == {INVOICES_PER_CALL}

    # Re-normalizing reads no Billingo document: the raw asset is not recorded as written.
    renormalized = _materialize(instance, warehouse_url, simulator, "acme", selection=["billingo_invoices", "billingo_invoice_items"])
    assert renormalized.success
    assert set(_materialized(renormalized)) == {(INVOICES, "acme"), (ITEMS, "acme")}


def test_a_partition_of_an_unknown_company_fails_alone_and_leaves_the_checks_as_they_were(
    engine, warehouse_url, simulator, instance, fernet_key
):
    _add(engine, simulator, "acme", seed=42, documents=20)
    _add(engine, simulator, "globex", seed=43, documents=20)
    assert _materialize(instance, warehouse_url, simulator, "acme").success
    assert _materialize(instance, warehouse_url, simulator, "globex").success
    # globex's data goes bad and a re-normalization finds it: its partner-name check fails.
    with engine.begin() as conn:
        globex_id = conn.execute(sa.text("SELECT id FROM companies WHERE slug = 'globex'")).scalar_one()
        document_id = conn.execute(
            sa.select(sa.func.min(billingo_invoices.c.document_id)).where(
                billingo_invoices.c.company_id == globex_id, billingo_invoices.c.document_type == "invoice"
            )
        ).scalar_one()
        conn.execute(billingo_invoices.update().where(billingo_invoices.c.document_id == document_id).values(partner_name=""))
    renormalized = _materialize(instance, warehouse_url, simulator, "globex", selection=["billingo_invoices", "billingo_invoice_items"])
    assert not {e.check_name: e for e in renormalized.get_asset_check_evaluations()}[PARTNER_NAME].passed

    result = _materialize(instance, warehouse_url, simulator, "ghost")
    assert not result.success
    [failure] = [event for event in result.all_events if event.is_step_failure]
    assert failure.step_failure_data.user_failure_data.description == "ghost: unknown company 'ghost' (see `billingo-pipeline company list`)."
    assert _materialized(result) == {}

    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert set(evaluations) == set(CHECKS)
    for name in (ITEMS_ADD_UP, UNIQUE_IDS, ERROR_RATE, INVOICES_PER_CALL, FRESHNESS):
        assert evaluations[name].passed, (name, evaluations[name].description)
    partner = evaluations[PARTNER_NAME]
    assert not partner.passed and partner.metadata["failing_companies"].value == ["globex"]
    assert partner.metadata["companies_checked"].value == 2
    assert partner.description.startswith("not evaluated in this run (no company was synced); stored results: 1 of 2 companies fail.")
    assert partner.metadata["evaluated_in_this_run"].value is False
    # Dagster resolves every check of the failed run from its result, not as an execution failure.
    for definition in CHECKS.values():
        [record] = instance.event_log_storage.get_asset_check_execution_history(definition.key, limit=1)
        assert record.run_id == result.run_id
        assert record.status.value == ("FAILED" if definition.name == PARTNER_NAME else "SUCCEEDED"), definition.name
