"""Shared fixtures: a warehouse on SQLite *and* on the real PostgreSQL, the simulator, a Fernet key.

PostgreSQL is never skipped: when the server on 127.0.0.1:5432 cannot be reached the tests that
need it fail, because a skipped PostgreSQL test would hide exactly what CI is there to check.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import socket
import tempfile
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa
import yaml

from billingo_pipeline.admin import register_company
from billingo_pipeline.credentials import generate_fernet_key
from billingo_pipeline.simulator import generate_api_key
from billingo_pipeline.settings import API_BASE_URL_ENV, FERNET_KEY_ENV, WAREHOUSE_URL_ENV
from billingo_pipeline.warehouse.engine import (
    create_warehouse_engine,
    dispose_engines,
    get_engine,
    upgrade_to_head,
)
from billingo_pipeline.warehouse.schema import metadata

# The tests' temporary files (SQLite warehouses, Dagster homes, demo checkouts, and those of the
# processes they start) go to /dev/shm when the machine has it and TMPDIR names no other place:
# they commit many thousands of small SQLite transactions, each a few fsyncs on a disk. Set here,
# on import, before pytest picks its base temporary directory. Dagster-heavy modules, A/B pairs:
# 0.83x the wall and half the system time.
_IN_MEMORY_TMP = Path("/dev/shm")
if "TMPDIR" not in os.environ and _IN_MEMORY_TMP.is_dir() and os.access(_IN_MEMORY_TMP, os.W_OK):
    os.environ["TMPDIR"] = str(_IN_MEMORY_TMP)
    tempfile.tempdir = None  # gettempdir() reads TMPDIR again

PG_ADMIN_URL = os.environ.get("BILLINGO_TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
DIALECTS = ("sqlite", "postgresql")


@contextlib.contextmanager
def throwaway_postgres_database(kind: str = "session") -> Iterator[str]:
    """The URL of a new, empty database on the real server, dropped at the end."""
    name = f"billingo_test_{kind}_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as exc:
        pytest.fail(f"PostgreSQL at {PG_ADMIN_URL} is required and unreachable: {exc}")
    try:
        yield sa.make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        dispose_engines()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextlib.contextmanager
def warehouse_of_its_own(dialect: str, tmp_path_factory, kind: str) -> Iterator[str]:
    """For a module-scoped fixture: the URL of a new SQLite file or PostgreSQL database, which
    no other test truncates (``warehouse_url``'s PostgreSQL database is shared by the session)."""
    if dialect == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp(kind) / 'warehouse.db'}"
    else:
        with throwaway_postgres_database(kind) as url:
            yield url


@pytest.fixture(scope="session")
def postgres_database_url() -> Iterator[str]:
    """A throwaway database on the real server for this test session (one per xdist worker)."""
    with throwaway_postgres_database() as url:
        yield url


_EMPTYING_STATEMENTS: dict[str, str] = {}


def _empty_all(url: str) -> None:
    """Every warehouse table emptied and every id sequence restarted: a fresh warehouse for the
    next test. DELETE, children first, not TRUNCATE: a test leaves a few rows, and TRUNCATE gives
    each of the tables new files (measured: 75 ms a test, against 9 ms)."""
    engine = get_engine(url)
    statement = _EMPTYING_STATEMENTS.get(url)
    if statement is None:
        with engine.connect() as conn:
            sequences = conn.execute(sa.text(
                "SELECT quote_ident(schemaname) || '.' || quote_ident(sequencename) FROM pg_sequences"
                " WHERE schemaname = current_schema()"
            )).scalars().all()
        statement = _EMPTYING_STATEMENTS[url] = "; ".join(
            [f'DELETE FROM "{table.name}"' for table in reversed(metadata.sorted_tables)]
            + [f"ALTER SEQUENCE {sequence} RESTART" for sequence in sequences]
        )
    with engine.begin() as conn:
        conn.exec_driver_sql(statement)


@pytest.fixture(scope="session")
def sqlite_warehouse_template(tmp_path_factory) -> Path:
    """An empty SQLite warehouse migrated once per session (one per xdist worker), for copying.

    Its engine is closed after a truncating WAL checkpoint, so the main file alone holds every
    page and a plain file copy is the whole database; nothing opens the template again.
    """
    path = tmp_path_factory.mktemp("sqlite_template") / "warehouse.db"
    engine = create_warehouse_engine(f"sqlite:///{path}")
    try:
        upgrade_to_head(engine)
        with engine.connect() as conn:
            busy, _, _ = conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").one()
        assert busy == 0, "the template's WAL checkpoint was blocked"
    finally:
        engine.dispose()
    wal = path.with_name(path.name + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0, "the template's WAL still holds pages"
    return path


@pytest.fixture(params=DIALECTS)
def warehouse_url(request, tmp_path) -> str:
    """An empty, migrated warehouse on each dialect (on SQLite a copy of the session's template)."""
    if request.param == "sqlite":
        path = tmp_path / "warehouse.db"
        shutil.copyfile(request.getfixturevalue("sqlite_warehouse_template"), path)
        url = f"sqlite:///{path}"
        get_engine(url)
        return url
    url = request.getfixturevalue("postgres_database_url")
    _empty_all(url)
    return url


@pytest.fixture
def engine(warehouse_url):
    return get_engine(warehouse_url)


@pytest.fixture
def fernet_key(monkeypatch) -> str:
    key = generate_fernet_key()
    monkeypatch.setenv(FERNET_KEY_ENV, key)
    return key


@pytest.fixture
def simulator():
    from billingo_pipeline.simulator import BillingoSimulator

    sim = BillingoSimulator()
    sim.start()
    yield sim
    sim.stop()
    for error in sim.handler_errors:  # the client retried, so the test may pass: say it anyway
        warnings.warn(f"the simulator failed to answer a request:\n{error}", stacklevel=1)


# Fixtures of the tests that sync (a simulator, a Dagster home or instance): seconds each, where
# most other tests take milliseconds (portfolio, many: module fixtures that sync).
SYNCING_FIXTURES = frozenset({"simulator", "rig", "instance", "dagster_home", "cli", "portfolio", "many"})


def _schedule_rank(item) -> int:
    if item.get_closest_marker("slow"):
        return 0
    return 1 if SYNCING_FIXTURES & set(getattr(item, "fixturenames", ())) else 2


def pytest_collection_modifyitems(items):
    """The slow tests (processes of their own, tens of seconds each) first, then those that sync,
    then the rest: pytest-xdist hands tests out in this order, so the long ones start at once and
    the many short ones fill the workers at the end, instead of a few long ones finishing alone
    (a stable sort: within a rank, the collection order)."""
    items.sort(key=_schedule_rank)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """In CI a skipped PostgreSQL test is a failed one: skipping would hide what CI is for."""
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") and report.skipped and "postgresql" in item.nodeid:
        report.outcome = "failed"
        report.longrepr = f"PostgreSQL test skipped in CI: {report.longrepr}"


def tests_instance_config(home: Path) -> dict:
    """The instance config of the tests' Dagster homes: telemetry off, and two choices that make
    a run cheaper without changing what it records (the Dagster-heavy tests: 0.77x the wall). The
    event log is one SQLite database (Dagster's ``ConsolidatedSqliteEventLogStorage``) instead of
    one per run: a new run's database costs ~130 ms of schema creation and every event opens two
    connections. No compute logs: each step would start two ``tail`` processes and two Python
    watchers to copy its stdout and stderr, which no test reads. The embedded instance of the
    checkout's ``dagster.yaml`` keeps Dagster's defaults (per-run databases, captured logs), which
    the UI test covers."""
    return {
        "telemetry": {"enabled": False},
        "event_log_storage": {
            "module": "dagster._core.storage.event_log",
            "class": "ConsolidatedSqliteEventLogStorage",
            "config": {"base_dir": str(home / "history")},
        },
        "compute_logs": {
            "module": "dagster._core.storage.noop_compute_log_manager",
            "class": "NoOpComputeLogManager",
        },
    }


def in_process_instance_config(home: Path) -> dict:
    """``tests_instance_config`` with Dagster's SQLite storages keeping one engine each
    (``dagster_storages``): the instances of this process, never a ``dagster.yaml``."""
    storages = "billingo_pipeline_tests.dagster_storages"
    return {
        **tests_instance_config(home),
        "run_storage": {"module": storages, "class": "OneEngineRunStorage", "config": {"base_dir": str(home / "history")}},
        "schedule_storage": {"module": storages, "class": "OneEngineScheduleStorage", "config": {"base_dir": str(home / "schedules")}},
        "event_log_storage": {"module": storages, "class": "OneEngineEventLogStorage", "config": {"base_dir": str(home / "history")}},
    }


_instance_template: Path | None = None


def dagster_home_template() -> Path:
    """A Dagster home on ``tests_instance_config`` whose SQLite storages (runs, schedules, event
    log) exist at Dagster's schema head, made once per process: creating them costs 0.3-0.6 s of
    schema creation and migration stamps for every new instance, copying them 80 ms."""
    global _instance_template
    if _instance_template is None:
        home = Path(tempfile.mkdtemp(prefix="dagster-home-template-"))
        atexit.register(shutil.rmtree, home, ignore_errors=True)
        with dg.instance_for_test(overrides=tests_instance_config(home), temp_dir=str(home)) as instance:
            instance.get_runs(limit=1)
        _instance_template = home
    return _instance_template


def write_dagster_home(home: Path, *, in_process: bool = False) -> Path:
    """``home`` made a Dagster home on ``tests_instance_config`` (``in_process_instance_config``
    when only this process opens it), its storages copied from ``dagster_home_template``."""
    shutil.copytree(dagster_home_template(), home, dirs_exist_ok=True, ignore=shutil.ignore_patterns("dagster.yaml"))
    config = in_process_instance_config(home) if in_process else tests_instance_config(home)
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    return home


@contextlib.contextmanager
def throwaway_instance() -> Iterator[dg.DagsterInstance]:
    """A throwaway Dagster instance (its own temporary DAGSTER_HOME, see ``write_dagster_home``)."""
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as home:
        write_dagster_home(Path(home), in_process=True)
        with dg.instance_for_test(overrides=in_process_instance_config(Path(home)), temp_dir=home) as instance:
            yield instance


@pytest.fixture
def instance():
    """A throwaway Dagster instance (its own temporary DAGSTER_HOME)."""
    with throwaway_instance() as instance:
        yield instance


@pytest.fixture
def dagster_home(tmp_path, monkeypatch) -> Path:
    """``DAGSTER_HOME`` set to a folder of this test's own: a CLI sync in this process keeps its
    run there."""
    home = write_dagster_home(tmp_path / "dagster_home", in_process=True)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home


def in_process_cli(monkeypatch, warehouse_url: str, api_base_url: str, *,
                   never_in_output: Sequence[str] = ()) -> Callable[..., object]:
    """``invoke(*args, input=None)``: `billingo-pipeline` run in this process with the warehouse
    and Billingo URL in the environment, as a user sets them (and no API key from the shell).
    No output may hold a string of ``never_in_output``, a list the test may still add to.

    ``catch_exceptions=False``: a traceback fails the test instead of hiding in
    ``result.exception``.
    """
    from click.testing import CliRunner

    from billingo_pipeline.cli import API_KEY_ENV, main

    monkeypatch.setenv(WAREHOUSE_URL_ENV, warehouse_url)
    monkeypatch.setenv(API_BASE_URL_ENV, api_base_url)
    monkeypatch.delenv(API_KEY_ENV, raising=False)
    runner = CliRunner()

    def invoke(*args: str, input: str | None = None):
        result = runner.invoke(main, list(args), input=input, catch_exceptions=False)
        for secret in never_in_output:
            assert secret not in result.output, f"key material in the output of {args}"
        return result

    return invoke


def cli_error_line(result, *, exit_code: int | None = None) -> str:
    """The one line a failing command prints on stderr, which starts ``error: ``; with
    ``exit_code``, the status it must exit with too."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert exit_code is None or result.exit_code == exit_code, result.output
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: ")
    return lines[0]


def invoke_cli(warehouse_url: str, *args: str):
    """`billingo-pipeline --warehouse-url URL ARGS...` in this process; a traceback fails the test."""
    from click.testing import CliRunner

    from billingo_pipeline.cli import main

    return CliRunner().invoke(main, ["--warehouse-url", warehouse_url, *args], catch_exceptions=False)


def sync_companies(instance: dg.DagsterInstance, warehouse_url: str, simulator, *slugs: str, full: bool = False,
                   page_size: int = 50) -> list:
    """The companies synced as `billingo-pipeline sync` does (``runner.run_company_syncs``), with
    small pages (several per company); their ``SyncRunResult``s, failed ones included."""
    from billingo_pipeline.resources import BillingoResource
    from billingo_pipeline.runner import run_company_syncs

    return run_company_syncs(
        list(slugs), warehouse_url=warehouse_url, instance=instance, trigger="test", full=full,
        billingo=BillingoResource(base_url=simulator.base_url, backoff_seconds=0.01, page_size=page_size),
    )


def sync_directly(engine, simulator, *slugs: str, full: bool = False, page_size: int = 50) -> list:
    """The companies synced by the engine alone: ``sync.sync_company`` with the
    ``BillingoResource``'s clients, what the sync asset runs for each company, without a Dagster
    run around it (a run costs a second or more of Dagster's storage writes). For the tests of what
    a sync fetches and writes; those of what a run records use ``sync_companies``. One
    ``runner.SyncRunResult`` per company, as ``sync_companies`` returns them, failed ones included."""
    from billingo_pipeline.resources import BillingoResource
    from billingo_pipeline.runner import RESULT_COUNTS, SyncRunResult
    from billingo_pipeline.sync import CompanySyncError, sync_company
    from billingo_pipeline.warehouse.companies import CompanyError, get_company
    from billingo_pipeline.warehouse.schema import sync_log
    from billingo_pipeline.warehouse.sync_log import COMPLETED, PARTIAL, SyncAlreadyRunningError

    billingo = BillingoResource(base_url=simulator.base_url, backoff_seconds=0.01, page_size=page_size)
    results = []
    for slug in slugs:
        run_id = f"test-{uuid.uuid4().hex}"
        error = None
        try:
            sync_company(engine, get_company(engine, slug), run_id=run_id, trigger="test",
                         open_client=billingo.client_for, full=full)
        except (CompanySyncError, CompanyError, SyncAlreadyRunningError) as exc:
            error = str(exc)
        with engine.connect() as conn:
            row = conn.execute(sa.select(sync_log).where(sync_log.c.run_id == run_id)).mappings().one_or_none()
        status = row["status"] if row is not None else None
        if error is None and status == PARTIAL and row["errors"]:
            error = str(row["errors"][0].get("message"))
        results.append(SyncRunResult(
            company=slug, run_id=run_id, success=status in (COMPLETED, PARTIAL), sync_status=status, error=error,
            counts={name: row[column] for name, column in RESULT_COUNTS} if row is not None else {},
        ))
    return results


def sync_through_dagster(warehouse_url: str, simulator, slug: str, *, instance: dg.DagsterInstance | None = None,
                         full: bool = False) -> None:
    """One company synced by a Dagster run, as `billingo-pipeline sync` starts it
    (``runner.run_company_syncs``), on ``instance`` or a throwaway one; a failed sync fails the test."""
    from billingo_pipeline.resources import BillingoResource
    from billingo_pipeline.runner import run_company_syncs

    with contextlib.ExitStack() as stack:
        if instance is None:
            instance = stack.enter_context(throwaway_instance())
        [result] = run_company_syncs(
            [slug], warehouse_url=warehouse_url, instance=instance, trigger="test", full=full,
            billingo=BillingoResource(base_url=simulator.base_url, backoff_seconds=0.01),
        )
    assert result.success, result.error


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on at the moment."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def add_simulated_company(engine, simulator, slug: str, *, seed, documents: int, **register_options) -> str:
    """A company known to the simulator (``documents`` generated from ``seed``) and registered in
    the warehouse with its key; returns the key."""
    api_key = generate_api_key(seed)
    simulator.add_organization(api_key, name=slug.title(), seed=seed, document_count=documents)
    register_company(engine, slug, slug.title(), api_key, api_base_url=simulator.base_url, **register_options)
    return api_key


def materialize_company(instance, warehouse_url: str, simulator, slug: str, *, selection=None, page_size: int = 100,
                        raise_on_error: bool = True):
    """The Billingo assets of one company partition, materialized in process against the simulator."""
    from billingo_pipeline.defs.billingo.assets import billingo_assets
    from billingo_pipeline.partitions import COMPANY_PARTITIONS_NAME
    from billingo_pipeline.resources import BillingoResource, FernetKeyResource, WarehouseResource

    instance.add_dynamic_partitions(COMPANY_PARTITIONS_NAME, [slug])
    return dg.materialize(
        billingo_assets,
        partition_key=slug,
        selection=selection,
        instance=instance,
        raise_on_error=raise_on_error,
        resources={
            "billingo": BillingoResource(base_url=simulator.base_url, backoff_seconds=0.01, page_size=page_size),
            "fernet": FernetKeyResource(),
            "warehouse": WarehouseResource(url=warehouse_url),
        },
    )
