"""Dagster's own SQLite storages, each keeping one SQLAlchemy engine: the storages of the tests'
in-process Dagster instances (``conftest.in_process_instance_config``).

Dagster's SQLite run, schedule and event-log storages build a new engine for every connection,
and SQLAlchemy's compiled-statement cache lives in the engine: every statement of every event is
compiled anew (a run of one company's sync stores ~60 events). These subclasses keep one engine
per storage, with Dagster's own ``NullPool`` and arguments, so each connection is still a fresh
SQLite connection to the same files, in the same transactions: what a run records is unchanged,
and one company's in-process sync run costs about 0.7x the time.

Only this process can load them (the tests package is not installed), so the ``dagster.yaml``
written for processes a test starts names Dagster's classes (``conftest.tests_instance_config``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property

import sqlalchemy as sa
from dagster._core.storage.event_log import ConsolidatedSqliteEventLogStorage
from dagster._core.storage.runs import SqliteRunStorage
from dagster._core.storage.schedules import SqliteScheduleStorage
from dagster._core.storage.sqlite import SQLITE_BUSY_TIMEOUT_SECONDS
from sqlalchemy.pool import NullPool


class _OneEngine:
    """``connect`` on one engine, for Dagster's SQLite run and schedule storages."""

    _conn_string: str

    @classmethod
    def from_config_value(cls, inst_data, config_value):
        # Dagster's classmethods build their own class by name, not ``cls``.
        return cls.from_local(inst_data=inst_data, **config_value)

    @cached_property
    def _one_engine(self) -> sa.Engine:
        return sa.create_engine(self._conn_string, poolclass=NullPool)

    @contextmanager
    def connect(self) -> Iterator[sa.Connection]:
        with self._one_engine.connect() as conn, conn.begin():
            yield conn


class OneEngineRunStorage(_OneEngine, SqliteRunStorage):
    pass


class OneEngineScheduleStorage(_OneEngine, SqliteScheduleStorage):
    pass


class OneEngineEventLogStorage(ConsolidatedSqliteEventLogStorage):
    @cached_property
    def _one_engine(self) -> sa.Engine:
        return sa.create_engine(
            self._conn_string, poolclass=NullPool, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS}
        )

    @contextmanager
    def _connect(self) -> Iterator[sa.Connection]:
        with self._one_engine.connect() as conn, conn.begin():
            yield conn
