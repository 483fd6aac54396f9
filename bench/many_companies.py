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
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def _schedule_layout(instance, warehouse_url: str, base_url: str, slugs: Sequence[str], night: int) -> list[str]:
    import dagster as dg

    from billingo_pipeline.assets import billingo_assets
    from billingo_pipeline.assets.reporting import reporting_assets
    from billingo_pipeline.jobs import billingo_sync_job
    from billingo_pipeline.resources import BillingoResource, WarehouseResource
    from billingo_pipeline.schedules import build_daily_sync_schedule

    resources = {"billingo": BillingoResource(base_url=base_url), "warehouse": WarehouseResource(url=warehouse_url)}
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


def run_passes(warehouse_url: str, base_url: str, slugs: list[str], layout: str, passes: int = 2) -> list[dict[str, Any]]:
    """Child: ``passes`` nights of ``slugs`` through ``layout``; wall, sync time and runs of each."""
    import dagster as dg
    import sqlalchemy as sa

    from billingo_pipeline.runner import ensure_company_partitions
    from billingo_pipeline.warehouse.engine import get_engine
    from billingo_pipeline.warehouse.schema import sync_log

    engine = get_engine(warehouse_url)
    figures = []
    with dg.instance_for_test() as instance:
        ensure_company_partitions(instance, slugs)  # what the partition sensor does before the first night
        for night in range(passes):
            started = time.perf_counter()
            run_ids = LAYOUTS[layout](instance, warehouse_url, base_url, slugs, night)
            wall = time.perf_counter() - started
            with engine.connect() as conn:
                rows = conn.execute(
                    sa.select(sync_log.c.started_at, sync_log.c.finished_at, sync_log.c.duration_seconds,
                              sync_log.c.status, sync_log.c.api_calls).where(sync_log.c.run_id.in_(run_ids))
                ).all()
            if len(rows) != len(slugs) or any(r.status != "COMPLETED" for r in rows):
                raise RuntimeError(f"night {night}: {len(rows)} sync-log rows for {len(slugs)} companies, "
                                   f"statuses {sorted({r.status for r in rows})}")
            busy = _busy_seconds([(r.started_at, r.finished_at) for r in rows])
            figures.append({
                "wall": wall, "runs": len(run_ids), "sync_busy": busy,
                "sync_sum": sum(r.duration_seconds for r in rows), "api_calls": sum(r.api_calls for r in rows),
                "dagster_share": (wall - busy) / wall,
            })
    return figures


def measure(warehouse_url: str, simulator: SimulatorProcess, companies, layout: str) -> list[dict[str, Any]]:
    register(warehouse_url, simulator, companies)
    child = run_child("bench.many_companies:run_passes", warehouse_url=warehouse_url, base_url=simulator.base_url,
                      slugs=[c.slug for c in companies], layout=layout)
    return child.value


def make_companies(simulator: SimulatorProcess, count: int, documents: int):
    return [make_company(simulator, f"co{number:04d}x{documents}", documents) for number in range(count)]


def describe(night: dict[str, Any]) -> str:
    return (f"{seconds(night['wall'])} in {night['runs']} runs, syncs busy {seconds(night['sync_busy'])} "
            f"(sum {seconds(night['sync_sum'])}), Dagster {night['dagster_share']:.0%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--companies", type=int, default=200)
    parser.add_argument("--documents", type=int, default=500, help="documents per company")
    parser.add_argument("--layout", choices=sorted(LAYOUTS), default="schedule")
    parser.add_argument("--dialects", nargs="+", choices=DIALECTS, default=list(DIALECTS))
    args = parser.parse_args()
    with SimulatorProcess() as simulator, tempfile.TemporaryDirectory(prefix="billingo-bench-") as folder:
        companies = make_companies(simulator, args.companies, args.documents)
        for dialect in args.dialects:
            with throwaway_warehouse(dialect, Path(folder), f"many-{dialect}") as url:
                first, nightly = measure(url, simulator, companies, args.layout)
            print(f"{dialect}: first load {describe(first)}; nightly {describe(nightly)}")


if __name__ == "__main__":
    main()
