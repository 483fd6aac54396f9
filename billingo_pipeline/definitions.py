"""The code location's single entry point (see workspace.yaml)."""

import os

import dagster as dg

from .assets import billingo_assets
from .jobs import billingo_sync_job
from .resources import BillingoResource, WarehouseResource
from .settings import API_BASE_URL_ENV, WAREHOUSE_URL_ENV, api_base_url, warehouse_url


def _from_env_or_default(env_name: str, default: str):
    # EnvVar keeps the value (a PostgreSQL URL may hold a password) out of the UI's resource config.
    return dg.EnvVar(env_name) if os.environ.get(env_name) else default


defs = dg.Definitions(
    assets=billingo_assets,
    jobs=[billingo_sync_job],
    resources={
        "billingo": BillingoResource(base_url=_from_env_or_default(API_BASE_URL_ENV, api_base_url())),
        "warehouse": WarehouseResource(url=_from_env_or_default(WAREHOUSE_URL_ENV, warehouse_url())),
    },
)
