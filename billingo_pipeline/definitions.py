"""The code location's single entry point (see workspace.yaml)."""

import os

import dagster as dg

from .assets import billingo_assets
from .assets.reporting import reporting_assets
from .health import sync_health_asset
from .jobs import billingo_sync_job
from .resources import BillingoResource, WarehouseResource
from .schedules import daily_sync_schedule
from .sensors import (
    company_partitions_sensor,
    sync_health_report_sensor,
    sync_run_canceled_sensor,
    sync_run_failure_sensor,
)
from .settings import API_BASE_URL_ENV, WAREHOUSE_URL_ENV, api_base_url, warehouse_url


def _from_env_or_default(env_name: str, default: str):
    # EnvVar keeps the value (a PostgreSQL URL may hold a password) out of the UI's resource config.
    return dg.EnvVar(env_name) if os.environ.get(env_name) else default


defs = dg.Definitions(
    assets=[*billingo_assets, *reporting_assets, sync_health_asset],
    jobs=[billingo_sync_job],
    schedules=[daily_sync_schedule],
    sensors=[
        company_partitions_sensor,
        sync_health_report_sensor,
        sync_run_failure_sensor,
        sync_run_canceled_sensor,
        # Requests the aging report after every sync: sync runs record per-company materializations, never outputs.
        dg.AutomationConditionSensorDefinition(
            "billingo_reporting_after_sync",
            target=dg.AssetSelection.groups("reporting"),
            default_status=dg.DefaultSensorStatus.RUNNING,
        ),
    ],
    resources={
        "billingo": BillingoResource(base_url=_from_env_or_default(API_BASE_URL_ENV, api_base_url())),
        "warehouse": WarehouseResource(url=_from_env_or_default(WAREHOUSE_URL_ENV, warehouse_url())),
    },
)
