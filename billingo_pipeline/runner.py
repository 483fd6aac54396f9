"""Running syncs through Dagster from outside the UI (the CLI and the demo).

Every sync goes through Dagster, whoever starts it, so the UI shows CLI and demo runs like
scheduled ones, with the same metadata and the same sync-log rows.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import dagster as dg

from .alerts import run_error_message
from .assets import billingo_assets
from .assets.reporting import reporting_assets
from .assets.billingo import TRIGGER_TAG
from .partitions import COMPANY_PARTITIONS_NAME
from .resources import BillingoResource, WarehouseResource
from .warehouse.engine import get_engine
from .warehouse.sync_log import sync_rows


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


def run_company_syncs(
    slugs: Sequence[str],
    *,
    warehouse_url: str,
    billingo: BillingoResource,
    instance: dg.DagsterInstance,
    trigger: str = "cli",
    console_log_level: str = "WARNING",
) -> list[SyncRunResult]:
    """One Dagster run per company; a failing company does not stop the others."""
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
        rows = sync_rows(engine, company_slug=slug, run_id=result.run_id, limit=1)
        results.append(
            SyncRunResult(
                company=slug,
                run_id=result.run_id,
                success=result.success,
                sync_status=rows[0]["status"] if rows else None,
                error=error,
            )
        )
    return results
