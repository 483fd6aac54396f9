"""Environment settings, read in one place so every entry point (Dagster, CLI, demo) agrees."""

from __future__ import annotations

import os
from pathlib import Path

FERNET_KEY_ENV = "BILLINGO_FERNET_KEY"
WAREHOUSE_URL_ENV = "BILLINGO_WAREHOUSE_URL"
API_BASE_URL_ENV = "BILLINGO_API_BASE_URL"

DEFAULT_API_BASE_URL = "https://api.billingo.hu/v3"
# Embedded default: a SQLite file in the working directory, so nothing needs a server.
DEFAULT_WAREHOUSE_PATH = Path("billingo_warehouse.db")


def warehouse_url() -> str:
    return os.environ.get(WAREHOUSE_URL_ENV) or f"sqlite:///{DEFAULT_WAREHOUSE_PATH.resolve()}"


def api_base_url() -> str:
    return os.environ.get(API_BASE_URL_ENV) or DEFAULT_API_BASE_URL
