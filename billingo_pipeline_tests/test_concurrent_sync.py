"""Many companies in few runs, at the same time: one execution model for every run.

A range run syncs its companies concurrently (each with its own client and key), yields the
same per-company ``AssetMaterialization``s whatever its size, isolates a failing or busy company,
and lets Dagster's log be written from the worker threads. ``run_company_syncs`` lays runs out as
the schedule does. Every test runs on SQLite and PostgreSQL; none asserts a duration.
"""

from __future__ import annotations

import contextlib
import itertools
import signal
import threading

import dagster as dg
import pytest
import sqlalchemy as sa

from billingo_pipeline.admin import register_company
from billingo_pipeline.defs.billingo.assets import billingo_assets
from billingo_pipeline.defs.billingo.assets import ERRORS_BY_COMPANY, FULL_SWEEP_TAG, SYNC_TABLES, TRIGGER_TAG
from billingo_pipeline.defs.reporting.assets import billingo_aging_report, reporting_assets
from billingo_pipeline.asset_keys import RAW
from billingo_pipeline.concurrency import run_concurrently
from billingo_pipeline.partitions import COMPANY_PARTITIONS_NAME, RANGE_END_TAG, RANGE_START_TAG, SyncChunk, plan_sync_chunks
from billingo_pipeline.resources import BillingoResource, FernetKeyResource, WarehouseResource
from billingo_pipeline.runner import (
    company_results,
    execute_sync_range,
    run_company_syncs,
    sync_job,
)
from billingo_pipeline.simulator import generate_api_key
from billingo_pipeline.warehouse import companies as company_store
from billingo_pipeline.warehouse.schema import sync_log
from billingo_pipeline.warehouse.sync_log import COMPLETED, start_sync

# Every table a company's sync writes: the documents' three, the payments and each other endpoint's two.
SYNC_KEYS = tuple(key.to_user_string() for key in SYNC_TABLES)


def _add(engine, simulator, slug: str, *, documents: int = 12, known_to_billingo: bool = True) -> str:
    api_key = generate_api_key(f"concurrent-{slug}")
    if known_to_billingo:
        simulator.add_organization(api_key, name=slug.title(), seed=f"concurrent-{slug}", document_count=documents)
    register_company(engine, slug, slug.title(), api_key, api_base_url=simulator.base_url, verify=known_to_billingo)
    return api_key


def _resources(simulator, warehouse_url, **billingo) -> dict:
    return {
        "billingo": BillingoResource(base_url=simulator.base_url, backoff_seconds=0.01, **billingo),
        "fernet": FernetKeyResource(),
        "warehouse": WarehouseResource(url=warehouse_url),
    }


def _statuses(engine, run_id: str) -> dict[str, str]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT c.slug, s.status FROM sync_log s JOIN companies c ON c.id = s.company_id WHERE s.run_id = :r"),
            {"r": run_id},
        ).all()
    return dict(rows)


def _materialized(result) -> list[tuple[str, str]]:
    return sorted((m.asset_key.to_user_string(), m.partition) for m in result.asset_materializations_for_node("billingo_sync"))


def test_four_companies_of_a_range_sync_at_the_same_time(engine, warehouse_url, simulator, instance, fernet_key):
    slugs = ["alfa", "bravo", "charlie", "delta"]
    for slug in slugs:
        _add(engine, simulator, slug)
    instance.add_dynamic_partitions(COMPANY_PARTITIONS_NAME, slugs)
    # Each company's first page waits until all four are being fetched: sequential syncs would
    # break the barrier (its timeout is a safety bound, not a measurement).
    barrier, broken, counter, lock = threading.Barrier(4, timeout=60), [], itertools.count(), threading.Lock()

    def hold(request):
        if request.path == "/v3/documents":
            with lock:
                number = next(counter)
            if number < 4:
                try:
                    barrier.wait()
                except threading.BrokenBarrierError:
                    broken.append(number)

    simulator.on_request(hold)
    result = execute_sync_range(
        sync_job(_resources(simulator, warehouse_url, max_concurrent_companies=4)),
        SyncChunk("alfa", "delta", tuple(slugs)), instance=instance, trigger="test",
    )
    assert result.success and broken == []
    assert _statuses(engine, result.run_id) == dict.fromkeys(slugs, COMPLETED)  # concurrent writers on this dialect
    assert _materialized(result) == sorted((key, slug) for key in SYNC_KEYS for slug in slugs)
    with engine.connect() as conn:
        counts = dict(conn.execute(sa.text(
            "SELECT c.slug, count(*) FROM billingo_invoices i JOIN companies c ON c.id = i.company_id GROUP BY c.slug"
        )).all())
    assert counts == dict.fromkeys(slugs, 12)  # every row carries its own company


def test_one_company_or_many_the_run_records_the_same_events(engine, warehouse_url, simulator, instance, fernet_key):
    for slug in ("alfa", "bravo"):
        _add(engine, simulator, slug)
    instance.add_dynamic_partitions(COMPANY_PARTITIONS_NAME, ["alfa", "bravo"])
    job = sync_job(_resources(simulator, warehouse_url))
    alone = execute_sync_range(job, SyncChunk("alfa", "alfa", ("alfa",)), instance=instance, trigger="test")
    both = execute_sync_range(job, SyncChunk("alfa", "bravo", ("alfa", "bravo")), instance=instance, trigger="test")
    for result, slugs in ((alone, ["alfa"]), (both, ["alfa", "bravo"])):
        assert result.success
        assert _materialized(result) == sorted((key, slug) for key in SYNC_KEYS for slug in slugs)
        # No asset outputs: an output would stand for every partition of the range.
        outputs = {e.step_output_data.output_name for e in result.all_events if e.is_successful_output}
        assert not outputs & {key for key in SYNC_KEYS}


def test_a_range_run_logs_one_status_line_for_its_companies(engine, warehouse_url, simulator, instance, fernet_key):
    _add(engine, simulator, "alfa")
    _add(engine, simulator, "bravo", known_to_billingo=False)  # Billingo answers 401
    _add(engine, simulator, "charlie")
    instance.add_dynamic_partitions(COMPANY_PARTITIONS_NAME, ["alfa", "bravo", "charlie"])
    job = sync_job(_resources(simulator, warehouse_url))
    many = execute_sync_range(job, SyncChunk("alfa", "charlie", ("alfa", "bravo", "charlie")), instance=instance, trigger="test")
    alone = execute_sync_range(job, SyncChunk("alfa", "alfa", ("alfa",)), instance=instance, trigger="test")

    def messages(result) -> list[str]:
        return [e.user_message for e in instance.all_logs(result.run_id) if not e.is_dagster_event]

    # Each company's status is on its materializations; the step's log says it once for all.
    assert "2 of 3 companies synced: 2 COMPLETED, 1 failed (bravo)" in messages(many)
    assert not [m for m in messages(many) if m.startswith("company 'alfa': sync ")]
    alfa = [m for m in many.asset_materializations_for_node("billingo_sync") if m.partition == "alfa"]
    assert len(alfa) == len(SYNC_KEYS) and {m.metadata["sync_status"].value for m in alfa} == {COMPLETED}
    # A one-company run keeps its line, with how it fetched; a range run says it per company on
    # the raw documents' materialization, not in an event of its own.
    assert "company 'alfa': sync COMPLETED (incremental sync: documents modified since the cursor)" in messages(alone)
    assert not [m for m in messages(many) if "sync: " in m]
    [raw] = [m for m in alfa if m.asset_key == RAW]
    assert raw.metadata["sync_mode"].value == "full (no complete full sweep yet)"
    [again] = [m for m in alone.asset_materializations_for_node("billingo_sync") if m.asset_key == RAW]
    assert again.metadata["sync_mode"].value == "incremental (documents modified since the cursor)"


def test_the_aging_report_follows_a_range_run_like_any_sync(engine, warehouse_url, simulator, instance, fernet_key):
    for slug in ("alfa", "bravo"):
        _add(engine, simulator, slug)
    instance.add_dynamic_partitions(COMPANY_PARTITIONS_NAME, ["alfa", "bravo"])
    resources = _resources(simulator, warehouse_url)
    defs = dg.Definitions(assets=[*billingo_assets, *reporting_assets], resources=resources)
    before = dg.evaluate_automation_conditions(defs, instance)
    run = execute_sync_range(sync_job(resources), SyncChunk("alfa", "bravo", ("alfa", "bravo")), instance=instance, trigger="test")
    assert run.success
    after = dg.evaluate_automation_conditions(defs, instance, cursor=before.cursor)
    assert after.get_requested_partitions(billingo_aging_report.key) == {"alfa", "bravo"}


def test_a_failing_or_busy_company_is_refused_alone_and_workers_write_dagsters_log(
    engine, warehouse_url, simulator, instance, fernet_key
):
    slugs = ["alfa", "bravo", "charlie", "delta"]
    _add(engine, simulator, "alfa")
    _add(engine, simulator, "bravo", known_to_billingo=False)  # Billingo answers 401
    _add(engine, simulator, "charlie")
    flaky_key = _add(engine, simulator, "delta")
    start_sync(engine, company_store.get_company(engine, "charlie").id, "someone-else", "schedule")
    simulator.inject_fault("server_error", times=1, api_key=flaky_key)
    instance.add_dynamic_partitions(COMPANY_PARTITIONS_NAME, slugs)

    result = execute_sync_range(
        sync_job(_resources(simulator, warehouse_url)), SyncChunk("alfa", "delta", tuple(slugs)), instance=instance, trigger="test"
    )
    assert not result.success
    assert _materialized(result) == sorted((key, slug) for key in SYNC_KEYS for slug in ("alfa", "delta"))
    [failure] = [e for e in result.all_events if e.is_step_failure]
    errors = failure.step_failure_data.user_failure_data.metadata[ERRORS_BY_COMPANY].value
    assert sorted(errors) == ["bravo", "charlie"]
    assert "HTTP 401" in errors["bravo"] and "already being synced by run someone-else" in errors["charlie"]
    logs = "\n".join(str(e.message) for e in instance.all_logs(result.run_id))
    assert "for company 'delta'; retry 1/3" in logs  # the client's warning, logged from a worker thread

    by_company = {r.company: r for r in company_results(engine, result, slugs)}
    assert [by_company[s].sync_status for s in slugs] == [COMPLETED, "FAILED", None, COMPLETED]
    assert by_company["charlie"].error.startswith("company 'charlie' is already being synced by run someone-else")
    assert not by_company["bravo"].success and by_company["delta"].success


def test_cli_runs_are_laid_out_like_the_schedules_and_report_every_company(engine, warehouse_url, simulator, instance, fernet_key):
    slugs = ["alfa", "bravo", "charlie", "delta", "echo"]
    for slug in slugs:
        _add(engine, simulator, slug, documents=3)
    instance.add_dynamic_partitions(COMPANY_PARTITIONS_NAME, slugs)
    seen = []
    results = run_company_syncs(
        ["echo", "alfa", "bravo", "delta"], warehouse_url=warehouse_url, billingo=_resources(simulator, warehouse_url)["billingo"],
        instance=instance, trigger="test", on_result=seen.append, full=True, companies_per_run=2,
    )
    # charlie was not asked for: no range passes over it. alfa..bravo, then delta..echo.
    assert [r.company for r in results] == [r.company for r in seen] == ["alfa", "bravo", "delta", "echo"]
    assert all(r.sync_status == COMPLETED and r.success for r in results)
    run_ids = list(dict.fromkeys(r.run_id for r in results))
    assert len(run_ids) == 2
    runs = [instance.get_run_by_id(run_id) for run_id in run_ids]
    assert [(run.tags[RANGE_START_TAG], run.tags[RANGE_END_TAG]) for run in runs] == [("alfa", "bravo"), ("delta", "echo")]
    assert all(run.tags[FULL_SWEEP_TAG] == "true" and run.tags[TRIGGER_TAG] == "test" for run in runs)
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(sync_log)).scalar() == 4
    assert instance.get_materialized_partitions(billingo_aging_report.key) == {"alfa", "bravo", "delta", "echo"}


def test_run_plans_never_span_a_company_nobody_asked_for():
    keys = ["a", "b", "c", "d", "e", "f"]
    assert plan_sync_chunks(keys, ["a", "c", "d", "f"], 25) == [SyncChunk("a", "f", ("a", "c", "d", "f"))]
    assert plan_sync_chunks(keys, ["a", "c", "d", "f"], 25, outside=["b", "e"]) == [
        SyncChunk("a", "a", ("a",)), SyncChunk("c", "d", ("c", "d")), SyncChunk("f", "f", ("f",)),
    ]
    assert plan_sync_chunks(keys, keys, 4) == [SyncChunk("a", "d", ("a", "b", "c", "d")), SyncChunk("e", "f", ("e", "f"))]
    with pytest.raises(ValueError):
        plan_sync_chunks(keys, keys, 0)


def test_the_pool_hands_back_every_outcome_and_stops_the_rest_when_closed():
    stop = threading.Event()
    release = threading.Event()

    def work(n: int) -> int:
        if n == 2:
            raise ValueError("two")
        if n >= 3:
            release.wait(timeout=60)
        return n * 10

    outcomes = run_concurrently([0, 1, 2, 3, 4, 5], work, max_workers=2, stop=stop)
    seen = [next(outcomes) for _ in range(3)]
    assert sorted((o.item, o.result, type(o.error).__name__ if o.error else None) for o in seen) == [
        (0, 0, None), (1, 10, None), (2, None, "ValueError"),
    ]
    release.set()
    outcomes.close()  # as an interrupted step does: the rest never start
    assert stop.is_set()


INTERRUPTED = "interrupted (Ctrl-C, SIGTERM, or the Dagster run was terminated) before the sync finished"


def test_an_interrupted_range_run_finalizes_every_company_being_synced(engine, warehouse_url, simulator, fernet_key, tmp_path):
    import signal

    from billingo_pipeline_tests.faults.cli_subprocess import cli_environment, start_cli, wait_until

    slugs = ["alfa", "bravo", "charlie"]
    for slug in slugs:
        # Three slow pages each: the signal lands while every company still has pages to ask for
        # (one interrupted after its last request would finish and complete).
        api_key = _add(engine, simulator, slug, documents=250)
        simulator.inject_fault("slow", times=5, delay_seconds=1, api_key=api_key)
    env = cli_environment(warehouse_url, simulator.base_url, tmp_path / "dagster_home")
    process = start_cli(env, "sync", *slugs)

    def running() -> int:
        with engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(sync_log).where(sync_log.c.status == "RUNNING")).scalar()

    wait_until(lambda: running() == 3, what="three companies syncing at once")
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    lines = stdout.splitlines()
    assert [line.split(" · ")[0] for line in lines] == [f"{slug}: FAILED" for slug in slugs]
    assert all(INTERRUPTED in line for line in lines) and "Traceback" not in stderr
    with engine.connect() as conn:
        rows = conn.execute(sa.select(sync_log.c.status, sync_log.c.error_message, sync_log.c.finished_at)).all()
    assert len(rows) == 3 and all(r.status == "FAILED" and r.error_message.startswith(INTERRUPTED) and r.finished_at for r in rows)


def test_an_interruption_while_the_workers_start_still_stops_and_waits_for_them():
    """The caller's thread may get the interpreter back only once the first workers run: an
    interruption raised then (in its first wait) stops them all and waits for them."""
    stop = threading.Event()
    started, finished = [], []
    main = threading.main_thread().ident

    def work(n: int) -> int:
        started.append(n)
        if n == 0:
            signal.pthread_kill(main, signal.SIGUSR1)  # raises in the caller's thread
        stop.wait(timeout=10)  # a sync ends at its next request once stop is set
        finished.append(n)
        return n

    def interrupted(signo, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGUSR1, interrupted)
    try:
        with pytest.raises(KeyboardInterrupt):
            with contextlib.closing(run_concurrently([0, 1, 2], work, max_workers=3, stop=stop)) as outcomes:
                for _ in outcomes:
                    pass
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert stop.is_set() and sorted(finished) == sorted(started) and started


def test_a_caller_interrupted_while_it_handles_an_outcome_stops_the_rest_on_closing():
    stop = threading.Event()
    started, finished = [], []

    def work(n: int) -> int:
        started.append(n)
        if n > 0:
            stop.wait(timeout=10)
        finished.append(n)
        return n

    with pytest.raises(KeyboardInterrupt):
        with contextlib.closing(run_concurrently([0, 1, 2], work, max_workers=3, stop=stop)) as outcomes:
            for outcome in outcomes:
                assert outcome.item == 0
                raise KeyboardInterrupt  # while the step handles company 0's outcome
    # Closing waited for the others that had started (the rest never start): each saw stop and
    # ended before the with block was left.
    assert stop.is_set() and sorted(finished) == sorted(started) and 0 in finished
