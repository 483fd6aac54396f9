"""Sensors: company partitions follow the warehouse; sync health and freshness are reported without runs;
failed or canceled sync runs leave no RUNNING sync-log row, and failures are alerted (``billingo_pipeline/alerts.py``)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import dagster as dg
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from ...alerts import alert_failed_run, failed_run_alert, run_error_message
from ...asset_keys import SYNC_HEALTH
from ...health import company_health, sync_metrics
from ...partitions import COMPANY_PARTITIONS_NAME, PARTITION_TAG, RANGE_END_TAG, RANGE_START_TAG, company_partitions
from ...redaction import uuids_in
from ...resources import AlertChannelsResource, WarehouseResource
from ...warehouse.companies import list_companies
from ...warehouse.schema import companies, sync_log
from ...warehouse.sync_log import RUNNING, fail_running_syncs_of_run, sync_rows, utcnow
from .assets import billingo_sync
from .checks import FRESHNESS, check_evaluation, freshness_of, newest_sync_ids, store_freshness
from .health import health_report_metadata
from .jobs import billingo_sync_job

COMPANY_PARTITIONS_SENSOR = "billingo_company_partitions"
HEALTH_REPORT_SENSOR = "billingo_sync_health_report"
# Runs that may still resolve their partition range: a boundary of theirs must not be deleted.
IN_PROGRESS_STATUSES = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]
PARTITION_TAGS = (PARTITION_TAG, RANGE_START_TAG, RANGE_END_TAG)
# The health report: looked at every 5 minutes, sent when a sync finished or a company changed,
# and at least hourly (freshness ages while nothing happens).
HEALTH_CHECK_INTERVAL_SECONDS = 300
HEALTH_REPORT_MAX_AGE_SECONDS = 3600


def partition_keys_in_use(instance: dg.DagsterInstance) -> set[str]:
    keys = set()
    for record in instance.get_run_records(dg.RunsFilter(statuses=IN_PROGRESS_STATUSES)):
        tags = record.dagster_run.tags
        keys.update(tags[tag] for tag in PARTITION_TAGS if tag in tags)
    return keys


@dg.sensor(
    name=COMPANY_PARTITIONS_SENSOR,
    minimum_interval_seconds=120,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Keeps the billingo_companies partitions equal to the companies with Billingo sync enabled and "
        "active in the warehouse: enabling a company is the only step; a disabled one's partition goes."
    ),
)
def company_partitions_sensor(context: dg.SensorEvaluationContext, warehouse: WarehouseResource):
    wanted = [c.slug for c in list_companies(warehouse.get_engine()) if c.sync_allowed]
    existing = context.instance.get_dynamic_partitions(COMPANY_PARTITIONS_NAME)
    existing_keys, wanted_keys = set(existing), set(wanted)
    to_add = [slug for slug in wanted if slug not in existing_keys]
    stale = [key for key in existing if key not in wanted_keys]
    # A queued or running run resolves its partition range when its step starts: deleting one of
    # its ends would fail it, so such a partition goes at a later evaluation.
    in_use = partition_keys_in_use(context.instance) if stale else set()
    to_delete = [key for key in stale if key not in in_use]
    if deferred := [key for key in stale if key in in_use]:
        context.log.info(f"kept for now (an unfinished run uses them): {', '.join(deferred)}")
    requests = []
    if to_add:
        requests.append(company_partitions.build_add_request(to_add))
    if to_delete:
        requests.append(company_partitions.build_delete_request(to_delete))
    if not requests:
        return dg.SkipReason(f"partitions already match the {len(wanted)} enabled companies")
    context.log.info(f"adding {to_add or 'none'}; removing {to_delete or 'none'}")
    return dg.SensorResult(dynamic_partitions_requests=requests)


def _change_marker(engine: Engine) -> str:
    """Changes whenever a sync finishes or a company changes (the inputs of the health report)."""
    with engine.connect() as conn:
        finished = conn.execute(
            sa.select(sa.func.count(), sa.func.max(sync_log.c.finished_at)).where(sync_log.c.status != RUNNING)
        ).one()
        changed = conn.execute(sa.select(sa.func.count(), sa.func.max(companies.c.updated_at))).one()
    return json.dumps([finished[0], str(finished[1]), changed[0], str(changed[1])])


@dg.sensor(
    name=HEALTH_REPORT_SENSOR,
    minimum_interval_seconds=HEALTH_CHECK_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Reports billingo_sync_health (GREEN/YELLOW/RED per company, key metrics) and the freshness "
        "check of billingo_invoices without a run: after a sync finishes or a company changes, and hourly."
    ),
)
def sync_health_report_sensor(context: dg.SensorEvaluationContext, warehouse: WarehouseResource):
    engine = warehouse.get_engine()
    now = utcnow()
    marker = _change_marker(engine)
    cursor = json.loads(context.cursor) if context.cursor else {}
    if cursor.get("marker") == marker and now.timestamp() - cursor.get("reported_at", 0) < HEALTH_REPORT_MAX_AGE_SECONDS:
        return dg.SkipReason("nothing changed since the last report, which is less than an hour old")

    rows = company_health(engine, now=now)
    events: list = [dg.AssetMaterialization(asset_key=SYNC_HEALTH, metadata=health_report_metadata(rows, sync_metrics(engine, now=now)))]
    freshness = freshness_of(rows, now)
    if freshness:
        store_freshness(engine, freshness, newest_sync_ids(engine, {f.company_id for f in freshness.values()}), now)
        events.append(check_evaluation(FRESHNESS, {slug: f.check for slug, f in freshness.items()}))
    return dg.SensorResult(asset_events=events, cursor=json.dumps({"marker": marker, "reported_at": now.timestamp()}))


SYNC_RUN_FAILURE_SENSOR = "billingo_sync_run_failure"
SYNC_RUN_CANCELED_SENSOR = "billingo_sync_run_canceled"
SYNC_ASSET_KEYS = frozenset(billingo_sync.keys)


def is_sync_run(run: dg.DagsterRun) -> bool:
    """A run of billingo_sync_job, or any run of this code location that selected a sync asset: a
    materialization started from the UI or a backfill runs as the implicit asset job, not as
    billingo_sync_job, so the failure sensors watch the whole code location and pick runs here."""
    return run.job_name == billingo_sync_job.name or bool(SYNC_ASSET_KEYS & set(run.asset_selection or ()))


def run_companies(tags: Mapping[str, str], rows: Sequence[Mapping[str, Any]]) -> tuple[str, ...]:
    """The companies the run was about: those with a sync-log row, else its partition tags."""
    from_rows = [r["company"] for r in sorted(rows, key=lambda r: r.get("id") or 0)]
    if from_rows:
        return tuple(dict.fromkeys(from_rows))
    if PARTITION_TAG in tags:
        return (tags[PARTITION_TAG],)
    if RANGE_START_TAG in tags:
        start, end = tags[RANGE_START_TAG], tags.get(RANGE_END_TAG, tags[RANGE_START_TAG])
        return (start,) if start == end else (f"{start}..{end}",)
    return ()


def run_ids_named(instance: dg.DagsterInstance, texts: Iterable[str], own_run_id: str) -> list[str]:
    """The UUIDs in ``texts`` that are runs of this instance (a sync refused because "run ... holds
    the company"): the alert names them; any other UUID is scrubbed from it as a key."""
    candidates = {uuid for text in texts for uuid in uuids_in(text)} - {own_run_id.lower()}
    if not candidates:
        return []
    return [r.dagster_run.run_id for r in instance.get_run_records(dg.RunsFilter(run_ids=sorted(candidates)))]


@dg.run_failure_sensor(
    name=SYNC_RUN_FAILURE_SENSOR,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "When a sync run fails: marks the sync-log rows it left RUNNING FAILED with the run's error, "
        "then alerts through the configured channels (the alerts resource: BILLINGO_ALERT_WEBHOOK_URL, "
        "BILLINGO_ALERT_SMTP_*)."
    ),
)
def sync_run_failure_sensor(
    context: dg.RunFailureSensorContext, warehouse: WarehouseResource, alerts: AlertChannelsResource
):
    run = context.dagster_run
    if not is_sync_run(run):
        return dg.SkipReason(f"run {run.run_id} ({run.job_name}) is not a Billingo sync")
    engine = warehouse.get_engine()
    error_message = run_error_message(context.get_step_failure_events(), context.failure_event.message)
    # The rows first: they must not stay RUNNING even if every alert channel is down.
    marked = fail_running_syncs_of_run(engine, run.run_id, f"the Dagster run failed before this sync finished: {error_message}")
    if marked:
        context.log.warning(f"run {run.run_id}: {marked} sync-log row(s) left RUNNING were marked FAILED")
    rows = sync_rows(engine, run_id=run.run_id, limit=1000)
    alert = failed_run_alert(
        run_id=run.run_id,
        job_name=run.job_name,
        companies=run_companies(run.tags, rows),
        error_message=error_message,
        rows=rows,
        rows_marked_failed=marked,
        known_ids=run_ids_named(context.instance, [error_message, *(r.get("error_message") or "" for r in rows)], run.run_id),
        webserver_url=alerts.webserver_url,
    )
    outcomes = alert_failed_run(alert, alerts.channels(), context.log)
    delivered = [o.channel for o in outcomes if o.delivered]
    failed = [f"{o.channel} ({o.detail})" for o in outcomes if not o.delivered]
    context.log.info(
        f"run {run.run_id}: {marked} row(s) marked FAILED; alert sent by "
        f"{', '.join(delivered) or 'no channel'}{'; not sent by ' + ', '.join(failed) if failed else ''}"
    )
    return None


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.CANCELED,
    name=SYNC_RUN_CANCELED_SENSOR,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="When a sync run is canceled: marks the sync-log rows it left RUNNING FAILED (no alert: a person canceled it).",
)
def sync_run_canceled_sensor(context: dg.RunStatusSensorContext, warehouse: WarehouseResource):
    run = context.dagster_run
    if not is_sync_run(run):
        return dg.SkipReason(f"run {run.run_id} ({run.job_name}) is not a Billingo sync")
    marked = fail_running_syncs_of_run(
        warehouse.get_engine(), run.run_id, "the Dagster run was canceled before this sync finished"
    )
    context.log.info(f"run {run.run_id} canceled: {marked} sync-log row(s) left RUNNING were marked FAILED")
    return None
