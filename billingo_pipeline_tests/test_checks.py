"""Asset checks: pass on good data, fail on crafted bad data; visible in Dagster and in sync_log.

Warehouse tests run on SQLite and on the real PostgreSQL; syncs go through Dagster against the
simulator on a real socket.
"""

from __future__ import annotations

import datetime as dt
from collections import namedtuple
from decimal import Decimal

import dagster as dg
import pytest
import sqlalchemy as sa

from billingo_pipeline.defs.billingo.checks import (
    ERROR,
    ERROR_RATE,
    FRESHNESS,
    INVOICE_PARTNERS,
    INVOICES_PER_CALL,
    ITEMS_ADD_UP,
    PARTNER_NAME,
    PAYMENTS_ADD_UP,
    UNIQUE_IDS,
    WARN,
    CHECKS,
    allowed_difference,
    allowed_difference_sql,
    check_freshness,
    check_invoices_per_api_call,
    CASH_ROUNDING_UNITS,
    ZERO_DECIMAL_CURRENCIES,
    check_items_add_up,
)
from billingo_pipeline.asset_keys import SYNC_HEALTH
from billingo_pipeline.resources import WarehouseResource
from billingo_pipeline.defs.billingo.sensors import sync_health_report_sensor
from billingo_pipeline.warehouse import companies as company_store
from billingo_pipeline.warehouse import documents as store
from billingo_pipeline.warehouse.schema import billingo_invoice_items, billingo_invoices, companies, sync_log
from billingo_pipeline.warehouse.sync_log import PARTIAL, record_check_results, start_sync, utcnow

from .conftest import add_simulated_company as _add
from .conftest import materialize_company as _materialize

ALL_CHECKS = {ITEMS_ADD_UP, UNIQUE_IDS, PARTNER_NAME, INVOICE_PARTNERS, ERROR_RATE, INVOICES_PER_CALL, FRESHNESS, PAYMENTS_ADD_UP}


def _report(instance, resources, cursor=None):
    with dg.build_sensor_context(instance=instance, resources=resources, cursor=cursor) as context:
        return sync_health_report_sensor(context)


def _evaluations(result):
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def _stored(engine, run_id):
    with engine.connect() as conn:
        return conn.execute(sa.select(sync_log.c.check_results).where(sync_log.c.run_id == run_id)).scalar_one()


def test_every_check_passes_on_good_data_and_is_stored_with_the_sync(engine, warehouse_url, simulator, instance, fernet_key):
    _add(engine, simulator, "acme", seed=21, documents=60)
    result = _materialize(instance, warehouse_url, simulator, "acme")
    evaluations = _evaluations(result)
    assert set(evaluations) == ALL_CHECKS
    assert all(e.passed for e in evaluations.values()), {n: e.description for n, e in evaluations.items()}
    assert evaluations[ITEMS_ADD_UP].asset_key == dg.AssetKey("billingo_invoice_items")
    assert evaluations[INVOICES_PER_CALL].asset_key == dg.AssetKey("billingo_documents_raw")
    assert evaluations[INVOICES_PER_CALL].metadata["invoices_per_api_call"].value == 30.0  # one page + the clock

    stored = _stored(engine, result.run_id)
    assert set(stored) == ALL_CHECKS and all(entry["passed"] for entry in stored.values())
    with engine.connect() as conn:
        priced = conn.execute(sa.select(sa.func.count()).where(billingo_invoices.c.gross_total.is_not(None))).scalar_one()
    assert stored[ITEMS_ADD_UP]["figures"]["invoices_checked"] == priced == 60
    assert stored[ERROR_RATE]["figures"] == {"documents_processed": 60, "documents_failed": 0, "error_rate": 0.0}

    # The invoices' materialization carries the health and plottable key metrics.
    [invoices] = [m for m in result.asset_materializations_for_node("billingo_sync") if m.asset_key == dg.AssetKey("billingo_invoices")]
    metadata = {k: v.value for k, v in invoices.metadata.items()}
    assert (metadata["health"], metadata["health_level"]) == ("GREEN", 0)
    assert metadata["success_rate_30d"] == 1.0 and metadata["error_rate_30d"] == 0.0
    assert metadata["invoices_per_api_call"] == 30.0 and metadata["invoices_per_api_call_30d"] == 30.0
    assert isinstance(invoices.metadata["median_sync_duration_seconds_30d"], dg.FloatMetadataValue)


def test_crafted_bad_data_fails_the_data_checks_in_dagster_and_in_sync_log(engine, warehouse_url, simulator, instance, fernet_key):
    _add(engine, simulator, "acme", seed=22, documents=30)
    _materialize(instance, warehouse_url, simulator, "acme")
    with engine.connect() as conn:
        invoices = conn.execute(
            sa.select(billingo_invoices.c.document_id, billingo_invoices.c.invoice_number)
            .where(billingo_invoices.c.document_type == "invoice", billingo_invoices.c.cancelled.is_(False))
            .order_by(billingo_invoices.c.document_id)
        ).all()
    mismatched, original, duplicate, nameless = invoices[:4]
    with engine.begin() as conn:
        item = conn.execute(
            sa.select(billingo_invoice_items.c.id, billingo_invoice_items.c.gross_amount)
            .where(billingo_invoice_items.c.document_id == mismatched.document_id).limit(1)
        ).one()
        conn.execute(billingo_invoice_items.update().where(billingo_invoice_items.c.id == item.id)
                     .values(gross_amount=item.gross_amount + Decimal(11)))
        conn.execute(billingo_invoices.update().where(billingo_invoices.c.document_id == duplicate.document_id)
                     .values(invoice_number=original.invoice_number))
        conn.execute(billingo_invoices.update().where(billingo_invoices.c.document_id == nameless.document_id)
                     .values(partner_name="  "))

    # Re-normalizing (no Billingo call) keeps the unchanged, tampered rows and checks them again.
    result = _materialize(instance, warehouse_url, simulator, "acme", selection=["billingo_invoices", "billingo_invoice_items"])
    assert result.success  # checks report, they do not block
    evaluations = _evaluations(result)
    # Neither the raw documents, the payments nor the partners were selected: their checks are not evaluated.
    assert set(evaluations) == ALL_CHECKS - {INVOICES_PER_CALL, PAYMENTS_ADD_UP, INVOICE_PARTNERS}
    for name, figure in ((ITEMS_ADD_UP, "mismatching_invoices"), (UNIQUE_IDS, "duplicates"), (PARTNER_NAME, "documents_without_partner_name")):
        evaluation = evaluations[name]
        assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR, name
        assert evaluation.metadata[figure].value == 1 and evaluation.metadata["failing_companies"].value == ["acme"]
    assert evaluations[ERROR_RATE].passed and evaluations[FRESHNESS].passed

    stored = _stored(engine, result.run_id)
    assert stored[ITEMS_ADD_UP]["figures"]["examples"][0].startswith(f"{mismatched.invoice_number}: gross_total")
    assert stored[UNIQUE_IDS]["figures"]["examples"] == [f"invoice number {original.invoice_number}"]
    assert stored[PARTNER_NAME]["figures"]["examples"] == [nameless.invoice_number]
    assert [stored[n]["passed"] for n in (ITEMS_ADD_UP, UNIQUE_IDS, PARTNER_NAME, ERROR_RATE)] == [False, False, False, True]
    assert stored[ITEMS_ADD_UP]["severity"] == ERROR


def test_an_error_heavy_sync_fails_the_error_rate_check(engine, warehouse_url, simulator, instance, fernet_key):
    api_key = _add(engine, simulator, "acme", seed=23, documents=40)
    for document in simulator.documents(api_key)[3:5]:
        simulator.corrupt_document(api_key, document["id"], "gross_total", "12.700,00 Ft")
    result = _materialize(instance, warehouse_url, simulator, "acme")
    evaluation = _evaluations(result)[ERROR_RATE]
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.WARN
    assert evaluation.metadata["error_rate"].value == 0.05
    assert "2 of 40 documents failed (5.00%" in evaluation.description
    with engine.connect() as conn:
        row = conn.execute(sa.select(sync_log.c.status, sync_log.c.check_results)).one()
    assert row.status == PARTIAL and row.check_results[ERROR_RATE]["figures"]["error_rate"] == 0.05


def test_few_invoices_per_api_call_fail_the_alert(engine, warehouse_url, simulator, instance, fernet_key):
    _add(engine, simulator, "acme", seed=24, documents=60)
    result = _materialize(instance, warehouse_url, simulator, "acme", page_size=10)
    evaluation = _evaluations(result)[INVOICES_PER_CALL]
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.WARN
    stored = _stored(engine, result.run_id)[INVOICES_PER_CALL]
    assert stored["figures"]["calls_needed"] == 2 and stored["figures"]["api_calls"] >= 7  # 6 pages + the clock
    assert stored["figures"]["invoices_per_api_call"] <= 10


Row = namedtuple("Row", "api_calls documents_fetched")


@pytest.mark.parametrize(
    "calls, documents, passed",
    # A sync needs a call per page of 100 plus one reading of Billingo's clock.
    [(0, 0, True), (1, 30, True), (2, 30, True), (3, 120, True), (4, 120, False), (10, 500, True), (11, 500, False),
     (2, 99, True), (3, 99, False)],
)
def test_invoices_per_api_call_rule(calls, documents, passed):
    assert check_invoices_per_api_call(Row(calls, documents)).passed is passed


NOW = dt.datetime(2026, 11, 25, 12, tzinfo=dt.timezone.utc)


@pytest.mark.parametrize(
    "hours_ago, passed, severity",
    [(None, False, ERROR), (0.5, True, WARN), (23.9, True, WARN), (24, False, WARN), (48, False, WARN), (48.1, False, ERROR)],
)
def test_freshness_rule(hours_ago, passed, severity):
    last = None if hours_ago is None else NOW - dt.timedelta(hours=hours_ago)
    outcome = check_freshness(last, NOW)
    assert (outcome.passed, outcome.severity) == (passed, severity)


@pytest.mark.parametrize(
    "currency, rounding, allowed",
    [("HUF", "five", "2.5"), ("HUF", "ten", "5"), ("HUF", "one", "0.5"), ("HUF", "none", "0.5"), ("HUF", None, "0.5"),
     ("EUR", "none", "0.005"), ("USD", None, "0.005")],
)
def test_allowed_difference(currency, rounding, allowed):
    assert allowed_difference(currency, rounding) == Decimal(allowed)


def test_items_add_up_within_the_documents_rounding(engine):
    company = company_store.add_company(engine, "acme", "Acme")
    cases = [  # (number, currency, rounding, item gross amounts, gross_total, adds up)
        ("F-1", "HUF", "five", ["10000", "2702"], "12700", True),
        ("F-2", "HUF", "five", ["12697.5"], "12700", True),
        ("F-3", "HUF", "five", ["12703"], "12700", False),
        ("F-4", "HUF", "ten", ["12704"], "12700", True),
        ("F-5", "HUF", "ten", ["12706"], "12700", False),
        ("F-6", "HUF", "none", ["12700"], "12700", True),
        ("F-7", "HUF", "none", ["12700"], "12701", False),
        ("F-8", "HUF", "one", ["12700.4"], "12700", True),
        ("F-9", "EUR", "none", ["60.10", "39.90"], "100.00", True),
        ("F-10", "EUR", "none", ["100.00"], "100.01", False),
        ("F-11", "HUF", "none", ["-5000"], "-5000", True),  # a cancellation
    ]
    outcome = _items_add_up_of(engine, company.id, [(number, currency, rounding, amounts, gross)
                                                  for number, currency, rounding, amounts, gross, _ in cases])
    failing = {example.split(":")[0] for example in outcome.figures["examples"]}
    assert failing == {number for number, *_, adds_up in cases if not adds_up}
    assert (outcome.passed, outcome.figures["invoices_checked"], outcome.figures["mismatching_invoices"]) == (False, 11, 4)


def _items_add_up_of(engine, company_id: int, cases):
    """``check_items_add_up`` over invoices written from (number, currency, rounding, item gross amounts, gross_total)."""
    invoice_rows, item_rows = [], []
    for document_id, (number, currency, rounding, amounts, gross) in enumerate(cases, start=1):
        invoice_rows.append({"document_id": document_id, "invoice_number": number, "currency": currency, "rounding": rounding,
                             "gross_total": Decimal(gross), "source_hash": "h" * 64, "cancelled": False})
        item_rows.extend({"document_id": document_id, "position": p, "gross_amount": Decimal(a)} for p, a in enumerate(amounts, 1))
    with engine.begin() as conn:
        store.write_invoices_with_items(conn, company_id, invoice_rows, item_rows, utcnow())
    with engine.connect() as conn:
        return check_items_add_up(conn, company_id)


def test_the_database_allows_the_same_differences_as_python(engine):
    cases = [(currency, rounding) for currency in [*ZERO_DECIMAL_CURRENCIES, "huf", "EUR", "", None]
             for rounding in [*CASH_ROUNDING_UNITS, "FIVE", "none", "", None]]
    with engine.connect() as conn:
        for currency, rounding in cases:
            expression = allowed_difference_sql(sa.literal(currency, sa.String), sa.literal(rounding, sa.String))
            assert conn.execute(sa.select(expression)).scalar_one() == float(allowed_difference(currency, rounding)), (currency, rounding)


def test_items_add_up_exactly_where_floats_cannot_tell(engine):
    # At 10^13 a binary float's spacing is about 0.002: as floats, a one-cent mismatch and an exact
    # match look alike, and half a cent and a bit look like less than half a cent. The check still
    # tells them apart.
    company = company_store.add_company(engine, "acme", "Acme")
    cases = [  # (number, item gross amounts, gross_total)
        ("B-1", ["9999999999999.99", "0.01"], "10000000000000.00"),
        ("B-2", ["9999999999999.99", "0.01"], "10000000000000.01"),
        ("B-3", ["4999999999999.50305", "4999999999999.50305"], "9999999999999.001"),  # 0.0051 apart, 0.0039 as floats
        ("B-4", ["0.1"] * 30, "3.00"),
    ]
    outcome = _items_add_up_of(engine, company.id, [(number, "EUR", "none", amounts, gross) for number, amounts, gross in cases])
    assert (outcome.figures["invoices_checked"], outcome.figures["mismatching_invoices"]) == (4, 2)
    assert [example.split(":")[0] for example in outcome.figures["examples"]] == ["B-2", "B-3"]
    assert outcome.figures["examples"][0] == "B-2: gross_total 10000000000000.01 vs items 10000000000000 EUR (rounding none)"


def test_freshness_is_reported_without_a_run_and_stored_with_the_newest_sync(engine, warehouse_url, simulator, instance, fernet_key):
    _add(engine, simulator, "acme", seed=25, documents=10)
    _add(engine, simulator, "globex", seed=26, documents=10)
    _add(engine, simulator, "initech", seed=27, documents=10)
    for slug in ("acme", "globex"):
        _materialize(instance, warehouse_url, simulator, slug)
    globex = company_store.get_company(engine, "globex")
    with engine.begin() as conn:  # globex's last success ended 30 h ago; initech never synced
        conn.execute(sync_log.update().where(sync_log.c.company_id == globex.id)
                     .values(finished_at=utcnow() - dt.timedelta(hours=30)))
    resources = {"warehouse": WarehouseResource(url=warehouse_url)}
    assert sync_health_report_sensor.default_status == dg.DefaultSensorStatus.RUNNING

    result = _report(instance, resources)
    [health, freshness] = result.asset_events
    assert isinstance(health, dg.AssetMaterialization) and health.asset_key == SYNC_HEALTH
    assert {k: health.metadata[k].value for k in ("companies", "green", "yellow", "red")} == {"companies": 3, "green": 1, "yellow": 1, "red": 1}
    assert isinstance(freshness, dg.AssetCheckEvaluation) and freshness.check_name == FRESHNESS
    assert not freshness.passed and freshness.severity == dg.AssetCheckSeverity.ERROR
    assert freshness.metadata["failing_companies"].value == ["globex", "initech"]
    assert freshness.metadata["never_synced_companies"].value == 1
    assert 29.9 < freshness.metadata["oldest_last_success_hours"].value < 30.1

    # The daemon stores what a sensor reports; the UI then shows it as the check's latest result.
    for event in result.asset_events:
        instance.report_runless_asset_event(event)
    key = CHECKS[FRESHNESS].key
    latest = instance.event_log_storage.get_latest_asset_check_execution_by_key([key])[key]
    assert latest.event.asset_check_evaluation.passed is False

    with engine.connect() as conn:
        stored = dict(conn.execute(
            sa.select(companies.c.slug, sync_log.c.check_results).join(companies, companies.c.id == sync_log.c.company_id)
        ).all())
    assert stored["acme"][FRESHNESS]["passed"] is True
    assert (stored["globex"][FRESHNESS]["passed"], stored["globex"][FRESHNESS]["severity"]) == (False, WARN)
    assert stored["globex"][ITEMS_ADD_UP]["passed"] is True  # the sync's own results stay

    # Nothing changed: no new report within the hour; a change reports again.
    again = _report(instance, resources, result.cursor)
    assert isinstance(again, dg.SkipReason)
    company_store.update_company(engine, "initech", billingo_sync_enabled=False)
    changed = _report(instance, resources, result.cursor)
    assert changed.asset_events[0].metadata["companies"].value == 2


def test_check_results_merge_per_check(engine):
    company = company_store.add_company(engine, "acme", "Acme")
    with engine.begin() as conn:
        sync_id = conn.execute(sync_log.insert().values(company_id=company.id, run_id="r", trigger="t", status="COMPLETED",
                                                        started_at=utcnow(), errors=[]).returning(sync_log.c.id)).scalar_one()
    record_check_results(engine, sync_id, {"a": {"passed": True, "figures": {"x": 1}}})
    record_check_results(engine, sync_id, {"b": {"passed": False}})
    record_check_results(engine, sync_id, {"a": {"passed": False, "figures": {}}})
    with engine.connect() as conn:
        stored = conn.execute(sa.select(sync_log.c.check_results)).scalar_one()
    assert stored == {"a": {"passed": False, "figures": {}}, "b": {"passed": False}}
    with pytest.raises(ValueError):
        record_check_results(engine, sync_id, {"bad'name": {}})


def test_check_results_refuse_a_dialect_the_warehouse_does_not_run_on():
    # No silent fallback: the warehouse is SQLite or PostgreSQL only.
    mysql = sa.create_mock_engine("mysql://", lambda *args, **kwargs: None)
    with pytest.raises(ValueError, match="unsupported warehouse dialect 'mysql'"):
        record_check_results(mysql, 1, {"a": {"passed": True}})


def test_migration_0008_carries_the_stored_outcomes_of_the_renamed_checks(engine):
    """The two checks once named after their thresholds: their stored history follows the rename
    (and back on a downgrade); the other checks' entries are left as they are."""
    from alembic import command

    from billingo_pipeline.warehouse.engine import alembic_config, upgrade_to_head

    company = company_store.add_company(engine, "acme", "Acme Kft.")
    sync_id = start_sync(engine, company.id, "run-before-the-rename", "cli")
    old_entries = {
        "error_rate_below_1_percent": {"passed": False, "severity": "WARN", "figures": {"error_rate": 0.02}},
        "invoices_per_api_call_at_least_50": {"passed": True, "severity": "WARN", "figures": {"invoices_per_api_call": 61.5}},
        PARTNER_NAME: {"passed": True, "severity": "ERROR", "figures": {}},
    }
    record_check_results(engine, sync_id, old_entries)
    config = alembic_config(engine)
    try:
        command.downgrade(config, "0007")  # the stored names are the old ones, as before 0008
        assert set(_stored(engine, "run-before-the-rename")) == set(old_entries)
        command.upgrade(config, "head")
        assert _stored(engine, "run-before-the-rename") == {
            ERROR_RATE: old_entries["error_rate_below_1_percent"],
            INVOICES_PER_CALL: old_entries["invoices_per_api_call_at_least_50"],
            PARTNER_NAME: old_entries[PARTNER_NAME],
        }
        command.downgrade(config, "0007")
        assert _stored(engine, "run-before-the-rename") == old_entries
    finally:
        upgrade_to_head(engine)


def test_payment_histories_must_add_up_to_the_payment_status(engine, warehouse_url, simulator, instance, fernet_key):
    from billingo_pipeline.defs.billingo.checks import check_payments_add_up
    from billingo_pipeline.warehouse import payments as payment_store
    from billingo_pipeline.warehouse.schema import billingo_document_payments as payments

    api_key = _add(engine, simulator, "acme", seed=7, documents=120)
    result = _materialize(instance, warehouse_url, simulator, "acme")
    assert _evaluations(result)[PAYMENTS_ADD_UP].passed
    company_id = company_store.get_company(engine, "acme").id
    documents = simulator.documents(api_key)
    partial = next(d for d in documents if d["payment_status"] == "partially_paid")
    with engine.connect() as conn:
        # A paid HUF invoice without cash rounding: its allowance is half a forint.
        paid_id = conn.execute(
            sa.select(billingo_invoices.c.document_id).where(
                billingo_invoices.c.company_id == company_id, billingo_invoices.c.payment_status == "paid",
                billingo_invoices.c.currency == "HUF", sa.not_(billingo_invoices.c.cancelled),
                sa.func.coalesce(billingo_invoices.c.rounding, "none") == "none",
            ).limit(1)
        ).scalar_one()
    paid = next(d for d in documents if d["id"] == paid_id)
    with engine.connect() as conn:
        before = check_payments_add_up(conn, company_id)
    assert before.passed and before.figures["histories_checked"] >= 1

    def store(document_id, prices):
        rows = [{"payment_date": dt.date(2026, 11, 2), "price": Decimal(p), "payment_method": "cash", "voucher_number": None,
                 "conversion_rate": None} for p in prices]
        with engine.begin() as conn:
            payment_store.replace_payments(conn, company_id, None, document_id, rows, utcnow())

    gross_paid = Decimal(str(paid["gross_total"]))
    with engine.begin() as conn:
        # A paid document's fetched history: within half a forint of its gross passes, a forint off fails.
        conn.execute(sa.insert(payment_store.state).values(company_id=company_id, document_id=paid["id"], fetched_at=utcnow()))
    store(paid["id"], [str(gross_paid - Decimal("0.4"))])
    with engine.connect() as conn:
        assert check_payments_add_up(conn, company_id).passed
    store(paid["id"], [str(gross_paid - 1)])
    store(partial["id"], [str(Decimal(str(partial["gross_total"])))])  # "partially" paid in full
    with engine.connect() as conn:
        outcome = check_payments_add_up(conn, company_id)
    assert not outcome.passed and outcome.severity == ERROR
    assert outcome.figures["mismatching_histories"] == 2 and outcome.figures["histories_checked"] == before.figures["histories_checked"] + 1
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(payments).where(payments.c.document_id == paid["id"])).scalar_one() == 1
