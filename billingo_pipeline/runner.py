"""Running syncs through Dagster from outside the UI (the CLI and the demo).

Every sync goes through Dagster, whoever starts it, so the UI shows CLI and demo runs like
scheduled ones, with the same metadata and the same sync-log rows.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import dagster as dg
from sqlalchemy.exc import SQLAlchemyError

from .alerts import run_error_message
from .assets import billingo_assets
from .assets.reporting import reporting_assets
from .assets.billingo import TRIGGER_TAG
from .partitions import COMPANY_PARTITIONS_NAME
from .resources import BillingoResource, WarehouseResource
from .warehouse.engine import get_engine, warehouse_error_summary
from .warehouse.sync_log import FAILED, PARTIAL, sync_rows


def dagster_instance() -> dg.DagsterInstance:
    """The persistent instance under DAGSTER_HOME, or a throwaway one when it is not set."""
    if os.environ.get("DAGSTER_HOME"):
        return dg.DagsterInstance.get()
    return dg.DagsterInstance.ephemeral()


def ensure_company_partitions(instance: dg.DagsterInstance, slugs: Sequence[str]) -> list[str]:
    """Add the slugs that are not partitions yet; returns the ones added."""
    existing = set(instance.get_dynamic_partitions(COMPANY_PARTITIONS_NAME))
    missing = [slug for slug in slugs if slug not in existing]
    if missing:
        instance.add_dynamic_partitions(COMPANY_PARTITIONS_NAME, missing)
    return missing


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


def run_company_syncs(
    slugs: Sequence[str],
    *,
    warehouse_url: str,
    billingo: BillingoResource,
    instance: dg.DagsterInstance,
    trigger: str = "cli",
    console_log_level: str = "WARNING",
    on_result: Callable[[SyncRunResult], None] | None = None,
) -> list[SyncRunResult]:
    """One Dagster run per company; a failing company does not stop the others, an interrupted
    one stops the loop (``SyncRunResult.interrupted``). ``on_result`` sees each as it ends."""
    ensure_company_partitions(instance, slugs)
    resources = {"billingo": billingo, "warehouse": WarehouseResource(url=warehouse_url)}
    engine = get_engine(warehouse_url)
    results = []
    for slug in slugs:
        result = dg.materialize(
            [*billingo_assets, *reporting_assets],
            partition_key=slug,
            instance=instance,
            resources=resources,
            tags={TRIGGER_TAG: trigger},
            # The event log keeps everything; the terminal only needs warnings and errors.
            run_config=dg.RunConfig(loggers={"console": {"config": {"log_level": console_log_level}}}),
            raise_on_error=False,
        )
        error = None
        if not result.success:
            error = run_error_message([e for e in result.all_events if e.is_step_failure], None)
        try:
            rows = sync_rows(engine, company_slug=slug, run_id=result.run_id, limit=1)
        except SQLAlchemyError as exc:  # the warehouse went away during the sync: the error says so
            rows = []
            error = error or f"the warehouse cannot be read: {warehouse_error_summary(exc)}"
            unreadable = True
        else:
            unreadable = False
        row = rows[0] if rows else None
        if row is not None and row["error_message"]:
            error = row["error_message"]  # our own one line, rather than Dagster's exception text
        elif row is not None and row["status"] == PARTIAL and row["errors"]:
            first = row["errors"][0]
            error = f"first failed document {first.get('document_id')}: {first.get('message')}"
        sync_result = SyncRunResult(
            company=slug,
            run_id=result.run_id,
            success=result.success,
            # A sync whose row cannot be read back failed: its row is taken over by the next sync.
            sync_status=row["status"] if row else (FAILED if unreadable else None),
            error=error,
            counts={name: row[column] for name, column in RESULT_COUNTS} if row else {},
            interrupted=_interrupted(result),
        )
        results.append(sync_result)
        if on_result is not None:
            on_result(sync_result)
        if sync_result.interrupted:
            break
    return results


# (label, sync_log column) of what a finished sync reports on its line.
RESULT_COUNTS = (
    ("created", "invoices_created"),
    ("updated", "invoices_updated"),
    ("unchanged", "invoices_skipped"),
    ("failed", "invoices_failed"),
    ("API calls", "api_calls"),
)
