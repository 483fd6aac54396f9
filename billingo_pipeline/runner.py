"""Running syncs through Dagster from outside the UI (the CLI, the demo, the benchmarks).

Every sync goes through Dagster, whoever starts it, so the UI shows CLI and demo runs like
scheduled ones, with the same metadata and the same sync-log rows. The runs are laid out as the
daily schedule lays them out: contiguous ranges of company partitions, up to
``COMPANIES_PER_RUN`` companies a run, each run a ``billingo_sync_job`` run whose step syncs its
companies concurrently (defs/billingo/assets.py). ``execute_sync_range`` is one such run.

The aging report follows every sync through its automation condition where a daemon runs; a run
started here has none, so ``run_company_syncs`` materializes the report of the companies it
synced right after their sync run (one report run per sync run).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import dagster as dg
from sqlalchemy.exc import SQLAlchemyError

from .alerts import run_error_message
from .defs.billingo.assets import COMPANIES_PER_RUN, ERRORS_BY_COMPANY, FULL_SWEEP_TAG, TRIGGER_TAG, billingo_assets
from .defs.billingo.jobs import billingo_sync_job
from .defs.reporting.assets import reporting_assets
from .partitions import COMPANY_PARTITIONS_NAME, SyncChunk, ensure_company_partitions, plan_sync_chunks
from .resources import BillingoResource, FernetKeyResource, WarehouseResource
from .sync import PROGRESS_RECORD_ATTR
from .warehouse.companies import syncable_company_slugs
from .warehouse.engine import get_engine, warehouse_error_summary
from .warehouse.sync_log import COMPLETED, FAILED, PARTIAL, SyncProgress, error_subject, sync_rows

# The run logger that hands each progress line's SyncProgress to ``run_company_syncs``' caller.
PROGRESS_LOGGER = "sync_progress"


def dagster_instance() -> dg.DagsterInstance:
    """The persistent instance under DAGSTER_HOME, or a throwaway one when it is not set."""
    if os.environ.get("DAGSTER_HOME"):
        return dg.DagsterInstance.get()
    return dg.DagsterInstance.ephemeral()


class _ProgressHandler(logging.Handler):
    def __init__(self, on_progress: Callable[[SyncProgress], None]):
        super().__init__(logging.INFO)
        self.on_progress = on_progress

    def emit(self, record: logging.LogRecord) -> None:
        progress = getattr(record, PROGRESS_RECORD_ATTR, None)
        if isinstance(progress, SyncProgress):
            self.on_progress(progress)


def progress_logger(on_progress: Callable[[SyncProgress], None]) -> dg.LoggerDefinition:
    """A run logger passing the sync's progress lines (their ``SyncProgress``) to ``on_progress``.
    Dagster hands a run's loggers every record of ``context.log`` with its ``extra``; the steps
    of an in-process run call it in this process, from the threads that sync."""

    def build(_init_context) -> logging.Logger:
        logger = logging.Logger(PROGRESS_LOGGER, level=logging.INFO)
        logger.addHandler(_ProgressHandler(on_progress))
        return logger

    return dg.LoggerDefinition(build, description="progress of each company's sync, to the CLI")


def sync_job(
    resources: Mapping[str, Any], *, on_progress: Callable[[SyncProgress], None] | None = None
) -> dg.JobDefinition:
    """``billingo_sync_job`` bound to these resources, as the schedule's runs execute it; with
    ``on_progress``, also the ``PROGRESS_LOGGER`` a run enables in its run config."""
    loggers = (
        {"console": dg.colored_console_logger, PROGRESS_LOGGER: progress_logger(on_progress)} if on_progress else None
    )
    return dg.Definitions(
        assets=billingo_assets, jobs=[billingo_sync_job], resources=resources, loggers=loggers
    ).resolve_job_def(billingo_sync_job.name)


def execute_sync_range(
    job: dg.JobDefinition,
    chunk: SyncChunk,
    *,
    instance: dg.DagsterInstance,
    trigger: str,
    full: bool = False,
    run_config: dg.RunConfig | None = None,
) -> dg.ExecuteInProcessResult:
    """One run of the schedule's layout: the chunk's partition range, in this process.

    The benchmarks call it as the schedule's runs would run: ``plan_sync_chunks(...)`` then, per
    chunk, ``execute_sync_range(sync_job(resources), chunk, instance=..., trigger="schedule")``.
    """
    tags = {**chunk.tags, TRIGGER_TAG: trigger, **({FULL_SWEEP_TAG: "true"} if full else {})}
    return job.execute_in_process(instance=instance, tags=tags, run_config=run_config, raise_on_error=False)


@dataclass(frozen=True)
class SyncRunResult:
    company: str
    run_id: str
    success: bool
    sync_status: str | None
    error: str | None
    counts: dict[str, int] = field(default_factory=dict)
    interrupted: bool = False


def _interrupted(result: dg.ExecuteInProcessResult) -> bool:
    return any(
        event.is_step_failure
        and event.step_failure_data.error is not None
        and event.step_failure_data.error.cls_name in INTERRUPTION_ERRORS
        for event in result.all_events
    )


# What a step's interruption (SIGINT inside Dagster's in-process executor) is recorded as.
INTERRUPTION_ERRORS = frozenset({"DagsterExecutionInterruptedError", "KeyboardInterrupt"})


def _errors_by_company(step_failures: Sequence[dg.DagsterEvent]) -> dict[str, str]:
    errors: dict[str, str] = {}
    for event in step_failures:
        data = event.step_failure_data.user_failure_data
        entry = data.metadata.get(ERRORS_BY_COMPANY) if data is not None else None
        if entry is not None and isinstance(entry.value, dict):
            errors.update({str(k): str(v) for k, v in entry.value.items()})
    return errors


def company_results(engine, result: dg.ExecuteInProcessResult, companies: Sequence[str]) -> list[SyncRunResult]:
    """One ``SyncRunResult`` per company of a sync run, from its sync-log rows and the step's failure."""
    step_failures = [e for e in result.all_events if e.is_step_failure]
    run_error = run_error_message(step_failures, None) if not result.success else None
    own_errors = _errors_by_company(step_failures)
    interrupted = _interrupted(result)
    try:
        rows = {row["company"]: row for row in reversed(sync_rows(engine, run_id=result.run_id, limit=10_000))}
        unreadable = None
    except SQLAlchemyError as exc:  # the warehouse went away during the sync: the error says so
        rows = {}
        unreadable = f"the warehouse cannot be read: {warehouse_error_summary(exc)}"
    results = []
    for slug in companies:
        row = rows.get(slug)
        error = own_errors.get(slug)
        if row is not None and row["error_message"]:
            error = row["error_message"]  # our own one line, rather than Dagster's exception text
        elif row is not None and row["status"] == PARTIAL and row["errors"]:
            first = row["errors"][0]
            error = f"first failed {error_subject(first)}: {first.get('message')}"
        elif error is None and row is None:
            error = unreadable or run_error
        # A sync whose row cannot be read back failed: its row is taken over by the next sync.
        status = row["status"] if row else (FAILED if unreadable else None)
        results.append(
            SyncRunResult(
                company=slug,
                run_id=result.run_id,
                success=status in (COMPLETED, PARTIAL),
                sync_status=status,
                error=error,
                counts={name: row[column] for name, column in RESULT_COUNTS} if row else {},
                interrupted=interrupted,
            )
        )
    return results


def run_company_syncs(
    slugs: Sequence[str],
    *,
    warehouse_url: str,
    billingo: BillingoResource,
    instance: dg.DagsterInstance,
    trigger: str = "cli",
    console_log_level: str = "WARNING",
    on_result: Callable[[SyncRunResult], None] | None = None,
    on_progress: Callable[[SyncProgress], None] | None = None,
    full: bool = False,
    companies_per_run: int = COMPANIES_PER_RUN,
) -> list[SyncRunResult]:
    """The companies in as few Dagster runs as the schedule's layout allows (ranges of up to
    ``companies_per_run``, concurrent inside); one ``SyncRunResult`` per company, in the order
    their runs end (partition order). A failing company does not stop the others; an interrupted
    run stops the loop (``SyncRunResult.interrupted``; companies of later runs get no result).
    ``on_result`` sees each result as its run ends; ``on_progress`` each progress line of the
    run's log (``sync.ProgressLog``), from the thread syncing that company."""
    ensure_company_partitions(instance, slugs)
    warehouse = WarehouseResource(url=warehouse_url)
    # The Fernet key is read from the environment when a key is decrypted, as everywhere in the CLI.
    resources = {"billingo": billingo, "warehouse": warehouse, "fernet": FernetKeyResource()}
    engine = get_engine(warehouse_url)
    wanted = list(dict.fromkeys(slugs))
    # The range may pass over partitions the step skips (not syncable), never over a syncable
    # company that was not asked for.
    outside = set(syncable_company_slugs(engine)) - set(wanted)
    chunks = plan_sync_chunks(instance.get_dynamic_partitions(COMPANY_PARTITIONS_NAME), wanted, companies_per_run, outside=outside)
    # The event log keeps everything; the terminal only needs warnings and errors.
    run_config = dg.RunConfig(loggers={"console": {"config": {"log_level": console_log_level}}})
    sync_run_config = (
        dg.RunConfig(loggers={**run_config.loggers, PROGRESS_LOGGER: {}}) if on_progress else run_config
    )
    job = sync_job(resources, on_progress=on_progress)
    results: list[SyncRunResult] = []
    for chunk in chunks:
        run = execute_sync_range(job, chunk, instance=instance, trigger=trigger, full=full, run_config=sync_run_config)
        chunk_results = company_results(engine, run, chunk.companies)
        results.extend(chunk_results)
        for company_result in chunk_results:
            if on_result is not None:
                on_result(company_result)
        if any(r.interrupted for r in chunk_results):
            break
        _materialize_aging_reports(
            [r.company for r in chunk_results if r.success], instance=instance, warehouse=warehouse, run_config=run_config
        )
    return results


def _materialize_aging_reports(
    synced: Sequence[str], *, instance: dg.DagsterInstance, warehouse: WarehouseResource, run_config
) -> None:
    """The aging report of the companies just synced, as the automation condition would request it."""
    partition_keys = instance.get_dynamic_partitions(COMPANY_PARTITIONS_NAME)
    not_synced = set(partition_keys) - set(synced)
    for report_chunk in plan_sync_chunks(partition_keys, synced, COMPANIES_PER_RUN, outside=not_synced):
        # A report that cannot be built fails its own run (visible in the UI); it never changes how the sync went.
        dg.materialize(
            reporting_assets,
            instance=instance,
            resources={"warehouse": warehouse},
            tags=report_chunk.tags,
            run_config=run_config,
            raise_on_error=False,
        )


# (label, sync_log column) of what a finished sync reports on its line.
RESULT_COUNTS = (
    ("created", "invoices_created"),
    ("updated", "invoices_updated"),
    ("unchanged", "invoices_skipped"),
    ("failed", "invoices_failed"),
    ("API calls", "api_calls"),
)
