"""The daily sync of every syncable company, in few runs.

Run layout
- At 02:00 (Europe/Budapest unless ``BILLINGO_SYNC_TIMEZONE`` / ``BILLINGO_SYNC_CRON`` say
  otherwise) the schedule reads the syncable companies from the warehouse (flag on, active, key
  configured) and launches one run per chunk of up to ``COMPANIES_PER_RUN`` of them. A run carries
  its chunk as a partition *range* (tags ``dagster/asset_partition_range_start`` / ``_end``) over
  the dynamic partitions' order (the order they were added in), and the ``billingo_sync`` step
  syncs the companies of the range concurrently (``context.partition_keys``, up to
  ``BillingoResource.max_concurrent_companies`` at a time, default 4). 500
  companies are 10 runs, not 500: Dagster's per-run overhead (process start, code load, event
  writes) is paid per chunk. ``build_schedule_from_partitioned_job`` cannot be used: it refuses
  dynamic partitions.
- A range holds every partition between its two ends, so a company that is not syncable (its
  partition not yet removed by the partition sensor) may sit inside one: the step skips it with a
  log line. Chunk ends are always syncable companies.
- Run keys are ``{tick date}:{first}..{last}``: a re-evaluated tick (daemon restart, retried
  evaluation) launches nothing twice. If the set of companies changes between two evaluations of
  the same tick, chunks shift and a company may be synced twice that day, never missed; a second
  sync is idempotent and the sync-log guard keeps two syncs of one company from overlapping.

Concurrency and Billingo's rate limit (~300 requests/minute per API key)
- Within a run up to ``max_concurrent_companies`` companies sync at once, each with its own
  client and key; every request first passes its key's limiter (rate_limit.py), shared by all the
  clients of that key in the process (300 requests/minute unless configured; Billingo's
  ``X-RateLimit-*`` headers take precedence), so concurrent companies sharing a key share its budget.
  Runs in other processes do not see each other's limiters: Billingo's headers and its 429s
  (retried, ``Retry-After`` honoured) are what keeps them apart.
- The instance's run queue bounds the runs (``max_concurrent_runs`` in dagster.yaml) and keeps
  single-partition runs of one company apart (tag limit on ``dagster/partition``).
- Ranges carry no per-company tag, so the warehouse enforces the rest: at most one RUNNING
  sync-log row per company (``sync_log.start_sync``): a second sync of a company fails at once
  with the run that holds it, whatever started it (schedule, UI, backfill, CLI).
- Partitions missing for syncable companies (the sensor has not run yet) are added here first, so
  enabling a company in the warehouse is the only step even with the sensor stopped.
"""

from __future__ import annotations

import datetime as dt
import os
from zoneinfo import ZoneInfo

import dagster as dg

from ...partitions import COMPANY_PARTITIONS_NAME, SyncChunk, ensure_company_partitions, plan_sync_chunks
from ...resources import WarehouseResource
from ...warehouse.companies import syncable_company_slugs
from .assets import COMPANIES_PER_RUN
from .jobs import billingo_sync_job

SYNC_TIMEZONE_ENV = "BILLINGO_SYNC_TIMEZONE"
SYNC_CRON_ENV = "BILLINGO_SYNC_CRON"
DEFAULT_SYNC_TIMEZONE = "Europe/Budapest"
DEFAULT_SYNC_CRON = "0 2 * * *"
DAILY_SYNC_SCHEDULE = "billingo_daily_sync"

COMPANY_COUNT_TAG = "billingo/companies"


def sync_run_request(chunk: SyncChunk, tick_date: str) -> dg.RunRequest:
    return dg.RunRequest(
        run_key=f"{tick_date}:{chunk.first}..{chunk.last}",
        tags={**chunk.tags, COMPANY_COUNT_TAG: str(len(chunk.companies))},
    )


def sync_timezone() -> str:
    return os.environ.get(SYNC_TIMEZONE_ENV) or DEFAULT_SYNC_TIMEZONE


def sync_cron() -> str:
    return os.environ.get(SYNC_CRON_ENV) or DEFAULT_SYNC_CRON


def build_daily_sync_schedule(
    *,
    name: str = DAILY_SYNC_SCHEDULE,
    cron_schedule: str | None = None,
    timezone: str | None = None,
    companies_per_run: int = COMPANIES_PER_RUN,
) -> dg.ScheduleDefinition:
    cron_schedule = cron_schedule or sync_cron()
    timezone = timezone or sync_timezone()
    zone = ZoneInfo(timezone)  # an unknown zone fails when the code location loads, not at 02:00

    @dg.schedule(
        name=name,
        cron_schedule=cron_schedule,
        execution_timezone=timezone,
        job=billingo_sync_job,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=(
            f"Sync every company with Billingo sync enabled, active and a key ({cron_schedule}, {timezone}), "
            f"up to {companies_per_run} companies per run."
        ),
    )
    def daily_sync(context: dg.ScheduleEvaluationContext, warehouse: WarehouseResource):
        syncable = syncable_company_slugs(warehouse.get_engine())
        if not syncable:
            return dg.SkipReason("no company has Billingo sync enabled, is active and has an API key")
        added = ensure_company_partitions(context.instance, syncable)
        if added:
            context.log.info(f"added the missing company partitions: {', '.join(added)}")
        tick = context.scheduled_execution_time or dt.datetime.now(zone)
        if tick.tzinfo is None:
            tick = tick.replace(tzinfo=dt.timezone.utc)
        tick_date = tick.astimezone(zone).date().isoformat()
        chunks = plan_sync_chunks(context.instance.get_dynamic_partitions(COMPANY_PARTITIONS_NAME), syncable, companies_per_run)
        context.log.info(f"{len(syncable)} companies in {len(chunks)} run(s) for {tick_date}")
        return [sync_run_request(chunk, tick_date) for chunk in chunks]

    return daily_sync


daily_sync_schedule = build_daily_sync_schedule()
