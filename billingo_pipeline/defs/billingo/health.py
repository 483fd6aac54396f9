"""The sync-health asset and the Dagster metadata of health and sync metrics (the rules: ``billingo_pipeline/health.py``)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence

import dagster as dg
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from ...asset_keys import INVOICES, SYNC_HEALTH
from ...health import GREEN, RED, YELLOW, CompanyHealth, SyncMetrics, company_health, sync_metrics
from ...warehouse.schema import sync_log
from ...warehouse.sync_log import utcnow

OPERATIONS_GROUP = "billingo_operations"
# Per-company numeric entries on the health asset (plottable per company); beyond this many
# companies the markdown table and the fleet figures carry the information.
MAX_PER_COMPANY_METADATA = 200


def metrics_metadata(metrics: SyncMetrics) -> dict[str, dg.MetadataValue]:
    """Numeric metadata the UI plots over time (only the figures that exist), named for the 30-day window."""
    values = {
        "success_rate_30d": metrics.success_rate,
        "median_sync_duration_seconds_30d": metrics.median_duration_seconds,
        "invoices_per_api_call_30d": metrics.invoices_per_api_call,
        "error_rate_30d": metrics.error_rate,
    }
    return {key: dg.MetadataValue.float(round(value, 6)) for key, value in values.items() if value is not None}


def company_health_metadata(health: CompanyHealth) -> dict[str, dg.MetadataValue]:
    """Health of one company, for its partition's materialization."""
    return {
        "health": dg.MetadataValue.text(health.health),
        "health_level": dg.MetadataValue.int(health.level),  # 0 GREEN, 1 YELLOW, 2 RED: plottable
        "health_reasons": dg.MetadataValue.text("; ".join(health.reasons) or "-"),
    }


def _cell(value) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def health_markdown(rows: Iterable[CompanyHealth]) -> str:
    lines = [
        "| company | health | API key | last sync | last success (UTC) | age (h) | failed / processed | reasons |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for h in rows:
        lines.append(
            "| "
            + " | ".join(
                _cell(v)
                for v in (
                    h.company_slug,
                    h.health,
                    "yes" if h.key_configured else "no",
                    (h.last_sync_status or "-") + (" (running now)" if h.running_since else ""),
                    h.last_success_at.strftime("%Y-%m-%d %H:%M") if h.last_success_at else "never",
                    f"{h.last_success_age_hours:.1f}" if h.last_success_age_hours is not None else "-",
                    f"{h.last_sync_failed_documents} / {h.last_sync_documents}" if h.last_sync_status else "-",
                    "; ".join(h.reasons) or "-",
                )
            )
            + " |"
        )
    return "\n".join(lines)


def health_report_metadata(rows: Sequence[CompanyHealth], fleet: SyncMetrics) -> dict[str, dg.MetadataValue]:
    """Metadata of the ``billingo_sync_health`` asset: the table, the counts, plottable figures."""
    counts = {level: sum(1 for h in rows if h.health == level) for level in (GREEN, YELLOW, RED)}
    metadata: dict[str, dg.MetadataValue] = {
        "companies": dg.MetadataValue.int(len(rows)),
        "green": dg.MetadataValue.int(counts[GREEN]),
        "yellow": dg.MetadataValue.int(counts[YELLOW]),
        "red": dg.MetadataValue.int(counts[RED]),
        "red_companies": dg.MetadataValue.json(sorted(h.company_slug for h in rows if h.health == RED)),
        "health": dg.MetadataValue.md(health_markdown(rows)),
        **metrics_metadata(fleet),
    }
    if len(rows) <= MAX_PER_COMPANY_METADATA:
        # One plottable series per company: a partitioned asset's plot over time mixes every
        # company, this unpartitioned report's keeps each apart.
        for h in rows:
            metadata[f"health_level/{h.company_slug}"] = dg.MetadataValue.int(h.level)
            if h.last_sync_started_at is not None and h.last_sync_finished_at is not None:
                seconds = (h.last_sync_finished_at - h.last_sync_started_at).total_seconds()
                metadata[f"sync_duration_seconds/{h.company_slug}"] = dg.MetadataValue.float(round(seconds, 3))
    return metadata


sync_health_asset = dg.AssetSpec(
    SYNC_HEALTH,
    deps=[INVOICES],
    group_name=OPERATIONS_GROUP,
    kinds={"sql"},
    description=(
        "GREEN / YELLOW / RED sync health of every company with the reasons, and the fleet's key "
        "metrics; reported by the billingo_sync_health_report sensor (no run), the same figures as "
        "the sync_health view and `billingo-pipeline health`."
    ),
)


def sync_operations_metadata(
    engine: Engine, *, company_id: int, company_slug: str, sync_id: int, now: dt.datetime | None = None
) -> dict[str, dg.MetadataValue]:
    """Plottable figures for one company's materialization after a sync: this sync's invoices per
    API call and error rate, the 30-day success rate / median duration / invoices per call / error
    rate, and the company's health (text, level 0-2 and reasons)."""
    now = now or utcnow()
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(sync_log.c.api_calls, sync_log.c.documents_fetched, sync_log.c.invoices_processed, sync_log.c.invoices_failed)
            .where(sync_log.c.id == sync_id)
        ).one()
    metadata: dict[str, dg.MetadataValue] = {}
    if row.api_calls:
        metadata["invoices_per_api_call"] = dg.MetadataValue.float(round(row.documents_fetched / row.api_calls, 6))
    if row.invoices_processed:
        metadata["error_rate"] = dg.MetadataValue.float(round(row.invoices_failed / row.invoices_processed, 6))
    metadata.update(metrics_metadata(sync_metrics(engine, company_id=company_id, now=now)))
    for health in company_health(engine, now=now, slugs=[company_slug]):
        metadata.update(company_health_metadata(health))
    return metadata
