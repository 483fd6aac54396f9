"""The daily schedule's run layout, a real multi-company range run, the one-sync-per-company guard
and the partition sensor; warehouse tests on SQLite and on the real PostgreSQL."""

from __future__ import annotations

import datetime as dt
import uuid
from zoneinfo import ZoneInfo

import dagster as dg
import pytest
import sqlalchemy as sa

from billingo_pipeline.admin import register_company
from billingo_pipeline.defs.billingo.assets import SYNC_TABLES, billingo_assets
from billingo_pipeline.defs.billingo.jobs import billingo_sync_job
from billingo_pipeline.partitions import COMPANY_PARTITIONS_NAME, RANGE_END_TAG, RANGE_START_TAG, plan_sync_chunks
from billingo_pipeline.resources import BillingoResource, FernetKeyResource, WarehouseResource
from billingo_pipeline.defs.billingo.schedules import (
    DAILY_SYNC_SCHEDULE,
    SYNC_TIMEZONE_ENV,
    build_daily_sync_schedule,
)
from billingo_pipeline.defs.billingo.sensors import company_partitions_sensor
from billingo_pipeline.simulator import generate_api_key
from billingo_pipeline.warehouse import companies as company_store
from billingo_pipeline.warehouse.schema import sync_log
from billingo_pipeline.warehouse.sync_log import (
    COMPLETED,
    FAILED,
    RUNNING,
    SyncAlreadyRunningError,
    fail_running_syncs_of_run,
    start_sync,
    utcnow,
)

BUDAPEST = ZoneInfo("Europe/Budapest")


def _company(engine, slug, *, enabled=True, active=True, key=True):
    return company_store.add_company(
        engine, slug, slug.title(),
        api_key_encrypted="token" if key else None, api_key_fingerprint="fp" if key else None,
        billingo_sync_enabled=enabled, is_active=active,
    )


def _evaluate(schedule, instance, warehouse_url, when):
    # As a context manager: the context may open its own instance from the ref, closed on exit.
    with dg.build_schedule_context(
        instance=instance, scheduled_execution_time=when, resources={"warehouse": WarehouseResource(url=warehouse_url)}
    ) as context:
        return schedule.evaluate_tick(context)


def test_plan_sync_chunks_keeps_partition_order_and_ends_on_syncable_companies():
    keys = ["a", "off1", "b", "c", "off2", "d", "e"]
    chunks = plan_sync_chunks(keys, {"e", "a", "b", "c", "d"}, 2)
    assert [(c.first, c.last, c.companies) for c in chunks] == [
        ("a", "b", ("a", "b")), ("c", "d", ("c", "d")), ("e", "e", ("e",)),
    ]
    assert plan_sync_chunks(keys, set(), 25) == []


def test_schedule_launches_few_runs_with_stable_run_keys(engine, warehouse_url, instance):
    for slug in ("alpha", "bravo", "charlie", "golf"):
        _company(engine, slug)
    _company(engine, "delta", enabled=False)
    _company(engine, "echo", key=False)
    _company(engine, "foxtrot", active=False)
    # delta (disabled) still has a partition between alpha and bravo; golf has none yet.
    instance.add_dynamic_partitions(COMPANY_PARTITIONS_NAME, ["alpha", "delta", "bravo", "charlie"])
    schedule = build_daily_sync_schedule(companies_per_run=2)
    tick = dt.datetime(2026, 11, 25, 2, 0, tzinfo=BUDAPEST)

    first = _evaluate(schedule, instance, warehouse_url, tick)
    requests = first.run_requests
    assert [(r.tags[RANGE_START_TAG], r.tags[RANGE_END_TAG]) for r in requests] == [("alpha", "bravo"), ("charlie", "golf")]
    assert [r.run_key for r in requests] == ["2026-11-25:alpha..bravo", "2026-11-25:charlie..golf"]
    assert all(r.tags["dagster/schedule_name"] == DAILY_SYNC_SCHEDULE and r.partition_key is None for r in requests)
    # The missing partition was added (at the end); the disabled, keyless and inactive are not synced.
    assert instance.get_dynamic_partitions(COMPANY_PARTITIONS_NAME) == ["alpha", "delta", "bravo", "charlie", "golf"]

    again = _evaluate(schedule, instance, warehouse_url, tick)
    assert [r.run_key for r in again.run_requests] == [r.run_key for r in requests]
    tomorrow = _evaluate(schedule, instance, warehouse_url, tick + dt.timedelta(days=1))
    assert [r.run_key for r in tomorrow.run_requests] == ["2026-11-26:alpha..bravo", "2026-11-26:charlie..golf"]


def test_schedule_skips_when_nothing_is_syncable(engine, warehouse_url, instance):
    _company(engine, "delta", enabled=False)
    data = _evaluate(build_daily_sync_schedule(), instance, warehouse_url, dt.datetime(2026, 11, 25, 2, 0, tzinfo=BUDAPEST))
    assert data.run_requests == [] and "no company" in data.skip_message


def test_schedule_runs_daily_at_two_in_budapest_by_default_and_is_configurable(monkeypatch, tmp_path, instance):
    schedule = build_daily_sync_schedule()
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("0 2 * * *", "Europe/Budapest")
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert schedule.job_name == billingo_sync_job.name
    monkeypatch.setenv(SYNC_TIMEZONE_ENV, "UTC")
    assert build_daily_sync_schedule().execution_timezone == "UTC"
    assert build_daily_sync_schedule(timezone="America/New_York", cron_schedule="30 4 * * *").cron_schedule == "30 4 * * *"
    with pytest.raises(Exception):
        build_daily_sync_schedule(timezone="Mars/Olympus_Mons")

    # The run key's date is the tick's date in the schedule's zone, not UTC's.
    url = f"sqlite:///{tmp_path / 'w.db'}"
    from billingo_pipeline.warehouse.engine import get_engine

    _company(get_engine(url), "alpha")
    late_utc = dt.datetime(2026, 11, 25, 23, 30, tzinfo=dt.timezone.utc)
    [request] = _evaluate(build_daily_sync_schedule(timezone="Europe/Budapest"), instance, url, late_utc).run_requests
    assert request.run_key == "2026-11-26:alpha..alpha"


def test_one_run_syncs_a_range_of_companies_and_skips_a_disabled_one(engine, warehouse_url, simulator, instance, fernet_key):
    for seed, slug in enumerate(("acme", "stale", "globex", "initech"), start=40):
        api_key = generate_api_key(seed)
        simulator.add_organization(api_key, name=slug.title(), seed=seed, document_count=12)
        register_company(engine, slug, slug.title(), api_key, api_base_url=simulator.base_url)
    instance.add_dynamic_partitions(COMPANY_PARTITIONS_NAME, ["acme", "stale", "globex", "initech"])
    company_store.update_company(engine, "stale", billingo_sync_enabled=False)  # disabled after its partition exists

    [request] = _evaluate(
        build_daily_sync_schedule(), instance, warehouse_url, dt.datetime(2026, 11, 25, 2, tzinfo=BUDAPEST)
    ).run_requests
    assert (request.tags[RANGE_START_TAG], request.tags[RANGE_END_TAG]) == ("acme", "initech")
    calls_before = len(simulator.requests_log)

    job = dg.Definitions(
        assets=billingo_assets,
        jobs=[billingo_sync_job],
        resources={
            "billingo": BillingoResource(base_url=simulator.base_url, backoff_seconds=0.01),
            "fernet": FernetKeyResource(),
            "warehouse": WarehouseResource(url=warehouse_url),
        },
    ).resolve_job_def(billingo_sync_job.name)
    result = job.execute_in_process(instance=instance, tags=request.tags)

    assert result.success
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT c.slug, s.status, s.run_id, s.trigger FROM sync_log s JOIN companies c ON c.id = s.company_id ORDER BY c.slug")
        ).all()
    assert [(r.slug, r.status, r.run_id, r.trigger) for r in rows] == [
        (slug, COMPLETED, result.run_id, "schedule") for slug in ("acme", "globex", "initech")
    ]
    # One step synced the three companies; each got its own partition materializations.
    steps = {e.step_key for e in result.all_events if e.is_step_success}
    assert steps == {"billingo_sync"}
    materialized = {(m.asset_key.to_user_string(), m.partition) for m in result.asset_materializations_for_node("billingo_sync")}
    assert materialized == {(key.to_user_string(), slug) for key in SYNC_TABLES for slug in ("acme", "globex", "initech")}
    # Billingo's clock and one page of each endpoint (a first sync is a full sweep), then the
    # payment histories of partially paid documents, counted apart; none for the disabled company.
    requests = sorted((r.organization, r.path) for r in simulator.requests_log[calls_before:] if not r.path.endswith("/payments"))
    paths = ("/v3/bank-accounts", "/v3/document-blocks", "/v3/documents", "/v3/partners", "/v3/spendings", "/v3/utils/time")
    assert requests == [(slug.title(), path) for slug in ("acme", "globex", "initech") for path in paths]
    logs = "\n".join(str(e.message) for e in instance.all_logs(result.run_id))
    assert "company 'stale': skipped" in logs and "BILLINGO_SYNC feature flag off" in logs
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert checks["items_add_up_to_totals"].metadata["companies_checked"].value == 3
    assert all(e.passed for e in checks.values())


def test_a_second_sync_of_a_running_company_fails_clearly_and_stale_rows_are_taken_over(engine):
    acme = _company(engine, "acme")
    held = start_sync(engine, acme.id, "run-a", "schedule")
    with pytest.raises(SyncAlreadyRunningError, match=r"company 'acme' is already being synced by run run-a"):
        start_sync(engine, acme.id, "run-b", "manual")
    assert start_sync(engine, acme.id, "run-a", "schedule") == held  # the holder's own re-execution

    # The index itself refuses a second RUNNING row, whoever writes it.
    with pytest.raises(sa.exc.IntegrityError):
        with engine.begin() as conn:
            conn.execute(sync_log.insert().values(company_id=acme.id, run_id="raw", trigger="x", status=RUNNING,
                                                  started_at=utcnow(), errors=[]))

    with engine.begin() as conn:  # run-a's process died 7 minutes ago without finalizing its row
        conn.execute(sync_log.update().where(sync_log.c.id == held).values(heartbeat_at=utcnow() - dt.timedelta(minutes=7)))
    taken = start_sync(engine, acme.id, "run-b", "manual")
    with engine.connect() as conn:
        rows = {r.run_id: r for r in conn.execute(sa.select(sync_log))}
    assert rows["run-a"].status == FAILED and "abandoned" in rows["run-a"].error_message and "run-b" in rows["run-a"].error_message
    assert rows["run-b"].status == RUNNING and rows["run-b"].id == taken

    globex = _company(engine, "globex")
    start_sync(engine, globex.id, "run-b", "manual")
    assert fail_running_syncs_of_run(engine, "run-b", "run run-b failed: killed") == 2
    assert fail_running_syncs_of_run(engine, "run-b", "again") == 0
    with engine.connect() as conn:
        failed = conn.execute(sa.select(sync_log.c.status, sync_log.c.error_message).where(sync_log.c.run_id == "run-b")).all()
    assert set(failed) == {(FAILED, "run run-b failed: killed")}
    start_sync(engine, acme.id, "run-c", "manual")  # free again


def test_a_run_for_a_company_being_synced_elsewhere_fails_without_calling_billingo(
    engine, warehouse_url, simulator, instance, fernet_key
):
    api_key = generate_api_key(50)
    simulator.add_organization(api_key, name="Acme", seed=50, document_count=5)
    company, _ = register_company(engine, "acme", "Acme", api_key, api_base_url=simulator.base_url)
    start_sync(engine, company.id, "other-run", "schedule")
    instance.add_dynamic_partitions(COMPANY_PARTITIONS_NAME, ["acme"])
    calls_before = len(simulator.requests_log)
    result = dg.materialize(
        billingo_assets, partition_key="acme", instance=instance, raise_on_error=False,
        resources={
            "billingo": BillingoResource(base_url=simulator.base_url),
            "warehouse": WarehouseResource(url=warehouse_url),
            "fernet": FernetKeyResource(),
        },
    )
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    assert "already being synced by run other-run" in failure.step_failure_data.user_failure_data.description
    assert len(simulator.requests_log) == calls_before


def _sense(instance, resources):
    with dg.build_sensor_context(instance=instance, resources=resources) as context:
        return company_partitions_sensor(context)


def _apply(instance, sensor_result):
    for request in sensor_result.dynamic_partitions_requests:
        if isinstance(request, dg.AddDynamicPartitionsRequest):
            instance.add_dynamic_partitions(request.partitions_def_name, request.partition_keys)
        else:
            for key in request.partition_keys:
                instance.delete_dynamic_partition(request.partitions_def_name, key)


def test_partition_sensor_keeps_partitions_equal_to_enabled_companies(engine, warehouse_url, instance):
    _company(engine, "acme")
    _company(engine, "keyless", key=False)  # enabled: its partition exists, the schedule skips it
    _company(engine, "off", enabled=False)
    _company(engine, "closed", active=False)
    instance.add_dynamic_partitions(COMPANY_PARTITIONS_NAME, ["off", "gone"])
    resources = {"warehouse": WarehouseResource(url=warehouse_url)}
    assert company_partitions_sensor.default_status == dg.DefaultSensorStatus.RUNNING

    result = _sense(instance, resources)
    adds = [r for r in result.dynamic_partitions_requests if isinstance(r, dg.AddDynamicPartitionsRequest)]
    deletes = [r for r in result.dynamic_partitions_requests if isinstance(r, dg.DeleteDynamicPartitionsRequest)]
    assert [r.partition_keys for r in adds] == [["acme", "keyless"]]
    assert [sorted(r.partition_keys) for r in deletes] == [["gone", "off"]]
    _apply(instance, result)
    assert instance.get_dynamic_partitions(COMPANY_PARTITIONS_NAME) == ["acme", "keyless"]

    skipped = _sense(instance, resources)
    assert isinstance(skipped, dg.SkipReason)

    # Enabling is the only step; disabling removes the partition, unless an unfinished run
    # still has to resolve a range that ends on it.
    company_store.update_company(engine, "off", billingo_sync_enabled=True)
    company_store.update_company(engine, "acme", billingo_sync_enabled=False)
    instance.add_run(
        dg.DagsterRun(job_name=billingo_sync_job.name, run_id=str(uuid.uuid4()), status=dg.DagsterRunStatus.STARTED,
                      tags={RANGE_START_TAG: "acme", RANGE_END_TAG: "keyless"})
    )
    result = _sense(instance, resources)
    assert [type(r) for r in result.dynamic_partitions_requests] == [dg.AddDynamicPartitionsRequest]
    _apply(instance, result)
    assert instance.get_dynamic_partitions(COMPANY_PARTITIONS_NAME) == ["acme", "keyless", "off"]

    for record in instance.get_run_records():
        instance.report_run_canceled(record.dagster_run)
    result = _sense(instance, resources)
    _apply(instance, result)
    assert instance.get_dynamic_partitions(COMPANY_PARTITIONS_NAME) == ["keyless", "off"]


def test_the_code_location_wires_the_schedule_sensors_and_checks():
    from billingo_pipeline.defs.billingo.checks import CHECKS
    from billingo_pipeline.definitions import defs
    from billingo_pipeline.asset_keys import SYNC_HEALTH

    assert defs.resolve_schedule_def(DAILY_SYNC_SCHEDULE).execution_timezone
    for name in ("billingo_company_partitions", "billingo_sync_health_report"):
        assert defs.resolve_sensor_def(name).default_status == dg.DefaultSensorStatus.RUNNING
    graph = defs.resolve_asset_graph()
    assert {d.key for d in CHECKS.values()} <= set(graph.asset_check_keys)
    assert SYNC_HEALTH in graph.get_all_asset_keys()
