"""The resources of the code location, from the environment (see the configuration table in README.md).

Values that can hold a secret come as ``dg.EnvVar`` when they are set: the UI shows the variable's
name, never its value. Unset, each resource keeps its default (the warehouse URL, the API base
URL) or its channel off (alerts); the Fernet key is then read when a key is decrypted and a sync
that needs it fails with what to set.
"""

import os

import dagster as dg

from ..resources import AlertChannelsResource, BillingoResource, FernetKeyResource, WarehouseResource
from ..settings import API_BASE_URL_ENV, FERNET_KEY_ENV, WAREHOUSE_URL_ENV, api_base_url, warehouse_url


def _from_env_or_default(env_name: str, default: str | None):
    return dg.EnvVar(env_name) if os.environ.get(env_name) else default


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(
        resources={
            "billingo": BillingoResource(base_url=_from_env_or_default(API_BASE_URL_ENV, api_base_url())),
            "warehouse": WarehouseResource(url=_from_env_or_default(WAREHOUSE_URL_ENV, warehouse_url())),
            "fernet": FernetKeyResource(fernet_key=_from_env_or_default(FERNET_KEY_ENV, None)),
            "alerts": AlertChannelsResource.from_environment(),
        }
    )
