"""Many companies through the schedule's run layout: total wall and Dagster's share of it.

    .venv/bin/python -m bench.many_companies [--companies 200] [--documents 500] [--layout schedule]

Two passes over the same companies in one child process with a throwaway Dagster instance
(``dg.instance_for_test``, its own temporary DAGSTER_HOME): the first loads them, the second is
the nightly the target is about.

Layouts (``--layout``; add one to ``LAYOUTS`` to measure a new run model):
- ``schedule``: the daily schedule evaluated for real (``build_daily_sync_schedule``), and each of
  its run requests (a partition range of up to ``COMPANIES_PER_RUN`` companies) executed in turn
  with ``billingo_sync_job.execute_in_process`` and the request's tags, as the daemon would launch
  them one after another. In-process execution leaves out the run launcher's process start and
  code load, so this is Dagster's share at its smallest.
- ``runner``: ``runner.run_company_syncs`` over all companies, the call ``billingo-pipeline sync
  --all`` makes (today one run per company; few concurrent runs once that lands).

Dagster's share = (total wall - the time in which at least one company sync was running) / total
wall, where a company sync's time is its sync-log row's [started_at, finished_at]. The union of the
intervals, not the sum of ``duration_seconds``, so that concurrent syncs inside a run are not
counted twice; the sum is reported next to it (equal to the union when syncs run one at a time).

Dagster's floor: the same nightly layout with nothing of ours in it, ``FLOOR_ASSETS`` no-op assets
partitioned by company (raw documents, invoices and line items: the three the project's shape asks
of every company), each run a range of ``COMPANIES_PER_RUN`` companies yielding one materialization
per asset and company, as ``billingo_sync`` does, on the same instance after the nights. No engine
on this shape can spend less in Dagster, so floor / (floor + the nightly's syncs) is the smallest
share any sync could reach against this simulator. A second floor, with as many no-op assets as
the sync materializes for a company (``sync_asset_count``), shows how much of the time outside the
syncs is Dagster's own cost per asset and company (``--floor-assets`` chooses the counts).

Where the rest goes (``--breakdown``, printed under each nightly): the time outside every sync,
split by the phase of the run it falls in, from the runs' own event timestamps: creating the run
(Dagster writes a planned event per asset and partition before anything executes), the run and
step starting up to the run's first sync, gaps between its syncs, everything after its last sync
(the events still queued, the check results, the run's end), and outside any run (the schedule's
evaluation, building the job, the runner's report runs). With the events the runs wrote, per
company: one event costs Dagster's storage a few milliseconds, whoever emits it. And the CPU time
of the process over the night: near 100% of the wall, the night is bound by one interpreter's
GIL, and any CPU saved (ours or Dagster's) shortens it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.common import DIALECTS, SimulatorProcess, make_company, register, run_child, seconds, throwaway_warehouse

MAX_DAGSTER_SHARE = 0.10
FLOOR_ASSETS = 3  # raw documents, invoices, line items: the assets every company must have
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def _schedule_layout(instance, warehouse_url: str, base_url: str, slugs: Sequence[str], night: int) -> list[str]:
    import dagster as dg

    from billingo_pipeline.defs.billingo.assets import billingo_assets
    from billingo_pipeline.defs.reporting.assets import reporting_assets
    from billingo_pipeline.defs.billingo.jobs import billingo_sync_job
    from billingo_pipeline.resources import BillingoResource, FernetKeyResource, WarehouseResource
    from billingo_pipeline.defs.billingo.schedules import build_daily_sync_schedule

    resources = {"billingo": BillingoResource(base_url=base_url), "warehouse": WarehouseResource(url=warehouse_url),
                 "fernet": FernetKeyResource()}
    job = dg.Definitions(assets=[*billingo_assets, *reporting_assets], jobs=[billingo_sync_job],
                         resources=resources).resolve_job_def(billingo_sync_job.name)
    tick = dt.datetime(2026, 11, 1, 2, 0, tzinfo=dt.timezone.utc) + dt.timedelta(days=night)
    with dg.build_schedule_context(instance=instance, scheduled_execution_time=tick,
                                   resources={"warehouse": resources["warehouse"]}) as context:
        requests = build_daily_sync_schedule().evaluate_tick(context).run_requests or []
    run_ids = []
    for request in requests:
        result = job.execute_in_process(instance=instance, tags=request.tags, run_config=QUIET, raise_on_error=False)
        if not result.success:
            raise RuntimeError(f"the run for {request.run_key} failed")
        run_ids.append(result.run_id)
    return run_ids


def _runner_layout(instance, warehouse_url: str, base_url: str, slugs: Sequence[str], night: int) -> list[str]:
    from billingo_pipeline.resources import BillingoResource
    from billingo_pipeline.runner import run_company_syncs

    results = run_company_syncs(slugs, warehouse_url=warehouse_url, billingo=BillingoResource(base_url=base_url),
                                instance=instance, trigger="schedule")
    failed = [r.company for r in results if not r.success]
    if failed:
        raise RuntimeError(f"{len(failed)} companies failed, first {failed[0]}")
    return sorted({r.run_id for r in results})


LAYOUTS: dict[str, Callable[..., list[str]]] = {"schedule": _schedule_layout, "runner": _runner_layout}


def sync_asset_count() -> int:
    """Assets a company materializes in the sync's runs today (``billingo_sync``'s keys)."""
    from billingo_pipeline.defs.billingo.assets import billingo_sync

    return len(billingo_sync.keys)


def dagster_floor(instance, slugs: Sequence[str], asset_count: int = FLOOR_ASSETS) -> dict[str, Any]:
    """Wall of the nightly's run layout with no work in it: ``asset_count`` no-op assets partitioned
    by company, materialized for every company of ``slugs`` in runs of ``COMPANIES_PER_RUN``."""
    import dagster as dg

    from billingo_pipeline.defs.billingo.assets import COMPANIES_PER_RUN
    from billingo_pipeline.partitions import COMPANY_PARTITIONS_NAME, company_partitions, plan_sync_chunks

    specs = [dg.AssetSpec(f"dagster_floor_{number}_of_{asset_count}", skippable=True) for number in range(asset_count)]

    @dg.multi_asset(name=f"dagster_floor_of_{asset_count}", specs=specs, partitions_def=company_partitions,
                    backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=COMPANIES_PER_RUN))
    def no_op(context):
        for slug in context.partition_keys:
            for spec in specs:
                yield dg.AssetMaterialization(asset_key=spec.key, partition=slug)

    job = dg.Definitions(assets=[no_op], jobs=[dg.define_asset_job("dagster_floor_job", selection=[no_op])]) \
        .resolve_job_def("dagster_floor_job")
    # The schedule's own chunks: partition ranges of at most COMPANIES_PER_RUN companies.
    chunks = plan_sync_chunks(instance.get_dynamic_partitions(COMPANY_PARTITIONS_NAME), slugs, COMPANIES_PER_RUN)
    started = time.perf_counter()
    for chunk in chunks:
        result = job.execute_in_process(instance=instance, tags=chunk.tags, run_config=QUIET, raise_on_error=False)
        if not result.success:
            raise RuntimeError("a run of the Dagster floor failed")
    return {"wall": time.perf_counter() - started, "runs": len(chunks), "assets": asset_count}


def _busy_seconds(intervals: list[tuple[dt.datetime, dt.datetime]]) -> float:
    """Length of the union of the intervals."""
    busy = 0.0
    current_start = current_end = None
    for start, end in sorted(intervals):
        if current_end is None or start > current_end:
            if current_end is not None:
                busy += (current_end - current_start).total_seconds()
            current_start, current_end = start, end
        else:
            current_end = max(current_end, end)
    if current_end is not None:
        busy += (current_end - current_start).total_seconds()
    return busy


def _merged(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    merged: list[list[float]] = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(start, end) for start, end in merged]


def _overlap(intervals: list[tuple[float, float]], start: float, end: float) -> float:
    return sum(max(0.0, min(end, b) - max(start, a)) for a, b in intervals)


# Phases of the time outside every sync, in run order (see the module docstring).
PHASES = ("run creation", "run start", "between syncs", "after last sync", "outside runs")


def non_sync_breakdown(
    night: tuple[float, float],
    syncs_by_run: dict[str, list[tuple[float, float]]],
    runs: dict[str, tuple[float, float, float]],
) -> dict[str, float]:
    """Seconds of ``night`` (start, end) outside every sync, by phase. ``syncs_by_run``: each
    run's sync intervals; ``runs``: each run's (first event, run start, last event) timestamps."""
    gaps, cursor = [], night[0]
    for start, end in _merged([i for intervals in syncs_by_run.values() for i in intervals]):
        if start > cursor:
            gaps.append((cursor, min(start, night[1])))
        cursor = max(cursor, end)
    if cursor < night[1]:
        gaps.append((cursor, night[1]))
    phases = dict.fromkeys(PHASES, 0.0)
    for run_id, (first_event, run_start, last_event) in runs.items():
        syncs = syncs_by_run.get(run_id) or [(last_event, last_event)]
        first_sync, last_sync = min(s for s, _ in syncs), max(e for _, e in syncs)
        phases["run creation"] += _overlap(gaps, first_event, run_start)
        phases["run start"] += _overlap(gaps, run_start, first_sync)
        phases["between syncs"] += _overlap(gaps, first_sync, last_sync)
        phases["after last sync"] += _overlap(gaps, last_sync, last_event)
    phases["outside runs"] = max(0.0, sum(b - a for a, b in gaps) - sum(phases.values()))
    return phases


def _event_kind(entry) -> str:
    kind = entry.dagster_event.event_type_value if entry.dagster_event else "LOG"
    return {"ASSET_MATERIALIZATION_PLANNED": "planned", "ASSET_CHECK_EVALUATION_PLANNED": "planned",
            "ASSET_MATERIALIZATION": "materializations", "LOG": "logs"}.get(kind, "other")


def _run_figures(instance, run_ids: list[str]) -> tuple[dict[str, tuple[float, float, float]], dict[str, int]]:
    """Each run's (first event, run start, last event) timestamps, and the runs' event counts by kind."""
    runs, counts = {}, dict.fromkeys(("planned", "materializations", "logs", "other"), 0)
    for run_id in run_ids:
        entries = instance.all_logs(run_id)
        starts = [e.timestamp for e in entries if e.dagster_event and e.dagster_event.event_type_value == "PIPELINE_START"]
        runs[run_id] = (entries[0].timestamp, starts[0] if starts else entries[0].timestamp, entries[-1].timestamp)
        for entry in entries:
            counts[_event_kind(entry)] += 1
    return runs, counts


def run_passes(warehouse_url: str, base_url: str, slugs: list[str], layout: str, passes: int = 2,
               floor_assets: Sequence[int] | None = None) -> list[dict[str, Any]]:
    """Child: ``passes`` nights of ``slugs`` through ``layout``; wall, sync time and runs of each;
    then Dagster's floor with each of ``floor_assets`` no-op assets a company (by default
    ``FLOOR_ASSETS`` and ``sync_asset_count()``; the first is the one ``smallest_share`` uses)."""
    import dagster as dg
    import sqlalchemy as sa

    from billingo_pipeline.partitions import ensure_company_partitions
    from billingo_pipeline.warehouse.engine import get_engine
    from billingo_pipeline.warehouse.schema import sync_log

    engine = get_engine(warehouse_url)
    figures = []
    with dg.instance_for_test() as instance:
        ensure_company_partitions(instance, slugs)  # what the partition sensor does before the first night
        for night in range(passes):
            started, started_at, cpu = time.perf_counter(), time.time(), time.process_time()
            run_ids = LAYOUTS[layout](instance, warehouse_url, base_url, slugs, night)
            wall = time.perf_counter() - started
            cpu = time.process_time() - cpu
            night_window = (started_at, started_at + wall)
            with engine.connect() as conn:
                rows = conn.execute(
                    sa.select(sync_log.c.run_id, sync_log.c.started_at, sync_log.c.finished_at,
                              sync_log.c.duration_seconds, sync_log.c.status, sync_log.c.api_calls)
                    .where(sync_log.c.run_id.in_(run_ids))
                ).all()
            if len(rows) != len(slugs) or any(r.status != "COMPLETED" for r in rows):
                raise RuntimeError(f"night {night}: {len(rows)} sync-log rows for {len(slugs)} companies, "
                                   f"statuses {sorted({r.status for r in rows})}")
            busy = _busy_seconds([(r.started_at, r.finished_at) for r in rows])
            syncs_by_run: dict[str, list[tuple[float, float]]] = {}
            for r in rows:
                syncs_by_run.setdefault(r.run_id, []).append((r.started_at.timestamp(), r.finished_at.timestamp()))
            runs, events = _run_figures(instance, run_ids)
            figures.append({
                "wall": wall, "runs": len(run_ids), "sync_busy": busy,
                "sync_sum": sum(r.duration_seconds for r in rows), "api_calls": sum(r.api_calls for r in rows),
                "dagster_share": (wall - busy) / wall,
                "outside_syncs": non_sync_breakdown(night_window, syncs_by_run, runs),
                "events": events, "companies": len(slugs), "cpu": cpu,
            })
        counts = floor_assets or (FLOOR_ASSETS, sync_asset_count())
        figures[-1]["dagster_floors"] = [dagster_floor(instance, slugs, count) for count in counts]
    return figures


def measure(warehouse_url: str, simulator: SimulatorProcess, companies, layout: str,
            floor_assets: Sequence[int] | None = None) -> list[dict[str, Any]]:
    register(warehouse_url, simulator, companies)
    child = run_child("bench.many_companies:run_passes", warehouse_url=warehouse_url, base_url=simulator.base_url,
                      slugs=[c.slug for c in companies], layout=layout, floor_assets=floor_assets)
    return child.value


def make_companies(simulator: SimulatorProcess, count: int, documents: int):
    return [make_company(simulator, f"co{number:04d}x{documents}", documents) for number in range(count)]


def describe(night: dict[str, Any]) -> str:
    return (f"{seconds(night['wall'])} in {night['runs']} runs, syncs busy {seconds(night['sync_busy'])} "
            f"(sum {seconds(night['sync_sum'])}), Dagster {night['dagster_share']:.0%}")


def smallest_share(night: dict[str, Any]) -> float:
    """The share Dagster would have if the runs cost only its floor: floor / (floor + syncs)."""
    floor = night["dagster_floors"][0]["wall"]
    return floor / (floor + night["sync_busy"])


def describe_floor(night: dict[str, Any]) -> str:
    floors = ", ".join(f"{seconds(floor['wall'])} in {floor['runs']} runs with {floor['assets']} no-op assets a company"
                       for floor in night["dagster_floors"])
    return (f"{floors}; with {night['dagster_floors'][0]['assets']}, Dagster's share could not be under "
            f"{smallest_share(night):.0%} with these syncs")


def describe_breakdown(night: dict[str, Any]) -> str:
    """Where the time outside every sync went, and the events the runs wrote per company."""
    phases = ", ".join(f"{name} {seconds(value)}" for name, value in night["outside_syncs"].items())
    events = night["events"]
    per_company = ", ".join(f"{kind} {count / night['companies']:.1f}" for kind, count in events.items())
    return (f"outside syncs: {phases}; events {sum(events.values())}, per company: {per_company}; "
            f"CPU of the process {seconds(night['cpu'])} ({night['cpu'] / night['wall']:.0%} of the wall)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--companies", type=int, default=200)
    parser.add_argument("--documents", type=int, default=500, help="documents per company")
    parser.add_argument("--layout", choices=sorted(LAYOUTS), default="schedule")
    parser.add_argument("--dialects", nargs="+", choices=DIALECTS, default=list(DIALECTS))
    parser.add_argument("--breakdown", action="store_true", help="where each nightly's time outside the syncs went")
    parser.add_argument("--floor-assets", type=int, nargs="+",
                        help=f"no-op assets a company in Dagster's floor, one floor each (default {FLOOR_ASSETS} "
                             "and the sync's own count)")
    args = parser.parse_args()
    with SimulatorProcess() as simulator, tempfile.TemporaryDirectory(prefix="billingo-bench-") as folder:
        companies = make_companies(simulator, args.companies, args.documents)
        for dialect in args.dialects:
            with throwaway_warehouse(dialect, Path(folder), f"many-{dialect}") as url:
                first, nightly = measure(url, simulator, companies, args.layout, args.floor_assets)
            print(f"{dialect}: first load {describe(first)}; nightly {describe(nightly)}")
            print(f"  Dagster's floor: {describe_floor(nightly)}")
            if args.breakdown:
                print(f"  nightly {describe_breakdown(nightly)}")


if __name__ == "__main__":
    main()
