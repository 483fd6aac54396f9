"""Environment settings, read in one place so every entry point (Dagster, CLI, demo) agrees."""

from __future__ import annotations

import os
from pathlib import Path

from dotenv import load_dotenv

FERNET_KEY_ENV = "BILLINGO_FERNET_KEY"
WAREHOUSE_URL_ENV = "BILLINGO_WAREHOUSE_URL"
API_BASE_URL_ENV = "BILLINGO_API_BASE_URL"
SYNC_STALE_AFTER_ENV = "BILLINGO_SYNC_STALE_AFTER_SECONDS"
SYNC_HEARTBEAT_ENV = "BILLINGO_SYNC_HEARTBEAT_SECONDS"
FULL_SWEEP_EVERY_ENV = "BILLINGO_FULL_SWEEP_EVERY_DAYS"
INCREMENTAL_OVERLAP_ENV = "BILLINGO_INCREMENTAL_OVERLAP_MINUTES"
PAYMENT_HISTORIES_PER_SYNC_ENV = "BILLINGO_PAYMENT_HISTORIES_PER_SYNC"

DEFAULT_API_BASE_URL = "https://api.billingo.hu/v3"
# Embedded default: a SQLite file in the working directory, so nothing needs a server.
DEFAULT_WAREHOUSE_PATH = Path("billingo_warehouse.db")
# Settings for commands run in a directory (`make demo` writes one); Dagster reads the same file.
DOTENV_FILE = ".env"


# A RUNNING sync refreshes its heartbeat this often; one silent for the stale bound is dead (its
# process is gone) and the next sync takes it over. Ten heartbeats' margin for a busy machine.
DEFAULT_SYNC_HEARTBEAT_SECONDS = 30.0
DEFAULT_SYNC_STALE_AFTER_SECONDS = 300.0


class SettingsError(ValueError):
    """An environment setting has a value that cannot be used; the message names the variable."""


def _positive_seconds(name: str, default: float) -> float:
    return _positive_number(name, default, unit="seconds", at_most=7 * 24 * 3600)


def sync_heartbeat_seconds() -> float:
    return _positive_seconds(SYNC_HEARTBEAT_ENV, DEFAULT_SYNC_HEARTBEAT_SECONDS)


def sync_stale_after_seconds() -> float:
    """How old a RUNNING row's heartbeat may get before the next sync takes the row over."""
    stale_after = _positive_seconds(SYNC_STALE_AFTER_ENV, DEFAULT_SYNC_STALE_AFTER_SECONDS)
    if stale_after <= sync_heartbeat_seconds():
        raise SettingsError(f"{SYNC_STALE_AFTER_ENV} must be longer than {SYNC_HEARTBEAT_ENV}: a live sync would look dead")
    return stale_after


# Incremental syncs ask for documents modified since the cursor minus this overlap: Billingo does
# not document whether last_modified_date means "at or after", its resolution is a second, and a
# document saved while the previous sync started may carry a time just before its cursor.
DEFAULT_INCREMENTAL_OVERLAP_MINUTES = 10.0
# Only a full sweep sees deleted drafts and repairs anything an incremental sync could miss.
DEFAULT_FULL_SWEEP_EVERY_DAYS = 7.0


def _positive_number(name: str, default: float, *, unit: str, at_most: float) -> float:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not 0 < value <= at_most:  # also false for NaN
        raise SettingsError(f"{name} must be a number of {unit} above 0 and at most {at_most:g}, got {raw!r}")
    return value


def full_sweep_every_days() -> float:
    return _positive_number(FULL_SWEEP_EVERY_ENV, DEFAULT_FULL_SWEEP_EVERY_DAYS, unit="days", at_most=366)


def incremental_overlap_minutes() -> float:
    return _positive_number(INCREMENTAL_OVERLAP_ENV, DEFAULT_INCREMENTAL_OVERLAP_MINUTES, unit="minutes", at_most=7 * 24 * 60)


# One request per document whose payment history is due: at Billingo's ~300 requests a minute a
# sync spends at most about 40 seconds of its key's budget on them; the rest wait for the next sync.
DEFAULT_PAYMENT_HISTORIES_PER_SYNC = 200


def payment_histories_per_sync() -> int:
    """How many payment histories (``GET /documents/{id}/payments``) one sync fetches at most."""
    return max(1, int(_positive_number(PAYMENT_HISTORIES_PER_SYNC_ENV, DEFAULT_PAYMENT_HISTORIES_PER_SYNC, unit="requests", at_most=100_000)))


def load_dotenv_file(directory: Path | None = None) -> Path | None:
    """Put the variables of ``directory``/.env (default: the working directory) into the
    environment, as `dagster dev` does; a variable the environment already sets keeps its value,
    so a one-off ``BILLINGO_WAREHOUSE_URL=... billingo-pipeline ...`` still wins. Returns the
    file read, or None when there is none."""
    path = (directory or Path.cwd()) / DOTENV_FILE
    if not path.is_file():
        return None
    load_dotenv(path, override=False)
    return path


def warehouse_url() -> str:
    return os.environ.get(WAREHOUSE_URL_ENV) or f"sqlite:///{DEFAULT_WAREHOUSE_PATH.resolve()}"


def api_base_url() -> str:
    return os.environ.get(API_BASE_URL_ENV) or DEFAULT_API_BASE_URL
