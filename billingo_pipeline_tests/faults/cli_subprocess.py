"""`billingo-pipeline` as its own process, for faults that need a real process: signals, kills,
a database that goes away under it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from billingo_pipeline.settings import API_BASE_URL_ENV, FERNET_KEY_ENV, WAREHOUSE_URL_ENV
from billingo_pipeline_tests.conftest import write_dagster_home

CLI = [sys.executable, "-m", "billingo_pipeline.cli"]


def cli_environment(warehouse_url: str, api_base_url: str, dagster_home: Path, **extra: str) -> dict[str, str]:
    """The environment of a CLI process: this test's warehouse, simulator, Fernet key and a
    persistent Dagster home (so a later sync can look the run up)."""
    write_dagster_home(dagster_home)
    return {
        **os.environ,
        WAREHOUSE_URL_ENV: warehouse_url,
        API_BASE_URL_ENV: api_base_url,
        FERNET_KEY_ENV: os.environ[FERNET_KEY_ENV],
        "DAGSTER_HOME": str(dagster_home),
        **extra,
    }


def start_cli(env: dict[str, str], *args: str) -> subprocess.Popen:
    return subprocess.Popen([*CLI, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_cli(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=timeout)


def wait_until(condition: Callable[[], bool], *, timeout: float = 60, what: str = "the condition") -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` seconds (a bound, not a measurement)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


PROGRESS_LINE = re.compile(r"^[a-z0-9-]+: page [0-9,]+(/[0-9,]+)? · ")


def without_progress(stderr: str) -> str:
    """``stderr`` of a CLI sync without its progress lines (``acme: page 2/3 · ...``), which
    every sync prints there when stderr is not a terminal."""
    return "".join(line for line in stderr.splitlines(keepends=True) if not PROGRESS_LINE.match(line))
