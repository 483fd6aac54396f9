"""What every benchmark shares: the simulator in its own process, throwaway warehouses, child
processes with their own peak memory, and the sync called through its public entry point.

Where things run, and why
- The simulator runs in a child process of its own (``SimulatorProcess``). In the syncing process
  it would compete for the GIL: its JSON encoding of each page would be charged to the sync, and
  the fetch floor measured against it would be slower than the network Billingo really is. In its
  own process it gets the second core of a 2-core machine, as a remote server would. The fetch
  floor, the sync and dlt all read from the same simulator process, so they pay the same cost.
- Every measured sync, load or floor runs in a fresh child process (``run_child``), so one
  measurement's caches, engines and memory never help or hurt the next, and ``os.wait4`` gives
  the child's own peak RSS. Times are taken inside the child, around the call being measured
  (interpreter start and imports are not part of it); the child's whole wall is kept too.
- PostgreSQL figures use a throwaway database on the shared server (created, then dropped WITH
  (FORCE)); SQLite figures a file in a temporary folder.

Simulated keys are generated for the benchmark; they still never reach a command line: a child's
arguments arrive on its standard input.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

REPO_ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN_URL = os.environ.get("BILLINGO_BENCH_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
DIALECTS = ("sqlite", "postgresql")
# High enough that the simulator never answers 429: every second measured is ours, not a rate limit's.
UNLIMITED_RATE = 1_000_000
_RESULT_MARK = "BENCH_RESULT "
# Longer than the incremental overlap (BILLINGO_INCREMENTAL_OVERLAP_MINUTES, 10 by default).
HISTORY_AGE = dt.timedelta(hours=1)


# -- the simulator in its own process ------------------------------------------------------------

def _simulator_main(conn, rate_limit: int) -> None:
    from billingo_pipeline.simulator import BillingoSimulator
    from billingo_pipeline.simulator.data import UNPAID_STATUSES

    simulator = BillingoSimulator(rate_limit_per_minute=rate_limit)
    conn.send(simulator.start())
    while True:
        command, kwargs = conn.recv()
        if command == "stop":
            simulator.stop()
            conn.send(None)
            return
        try:
            if command == "add_organization":
                simulator.add_organization(**kwargs)
                # A generated history ends a minute before it was made; a real company's first
                # sync does not start minutes after its last document. Billingo's clock moves on
                # by more than the incremental overlap, so a nightly meets only what changed.
                simulator.shift_clock(HISTORY_AGE)
                reply: Any = kwargs["document_count"]
            elif command == "pay_unpaid":
                # Invoices still open, oldest first: what a nightly finds paid since the last sync.
                candidates = [
                    d["id"] for d in reversed(simulator.documents(kwargs["api_key"]))
                    if d["payment_status"] in UNPAID_STATUSES and d["type"] == "invoice" and not d.get("cancelled")
                ][: kwargs["count"]]
                for document_id in candidates:
                    simulator.pay_document(kwargs["api_key"], document_id)
                reply = candidates
            else:
                raise ValueError(f"unknown simulator command {command!r}")
        except Exception as exc:  # the parent raises it with the simulator's own words
            reply = RuntimeError(f"simulator: {type(exc).__name__}: {exc}")
        conn.send(reply)


class SimulatorProcess:
    """``BillingoSimulator`` served from a child process; the calls a benchmark needs go over a pipe."""

    def __init__(self, rate_limit: int = UNLIMITED_RATE):
        context = multiprocessing.get_context("spawn")
        self._conn, child_conn = context.Pipe()
        self._process = context.Process(target=_simulator_main, args=(child_conn, rate_limit), daemon=True,
                                        name="billingo-simulator")
        self._process.start()
        self.base_url: str = self._conn.recv()

    def _call(self, command: str, **kwargs: Any) -> Any:
        self._conn.send((command, kwargs))
        reply = self._conn.recv()
        if isinstance(reply, Exception):
            raise reply
        return reply

    def add_organization(self, api_key: str, *, name: str, seed: int | str, document_count: int) -> int:
        return self._call("add_organization", api_key=api_key, name=name, seed=seed, document_count=document_count)

    def pay_unpaid(self, api_key: str, count: int) -> list[int]:
        """``pay_document`` on ``count`` open invoices; returns their ids."""
        return self._call("pay_unpaid", api_key=api_key, count=count)

    def stop(self) -> None:
        if self._process.is_alive():
            with contextlib.suppress(EOFError, BrokenPipeError):
                self._call("stop")
        self._process.join(timeout=10)

    def __enter__(self) -> SimulatorProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


# -- warehouses ----------------------------------------------------------------------------------

@contextlib.contextmanager
def throwaway_warehouse(dialect: str, folder: Path, tag: str) -> Iterator[str]:
    """An empty warehouse URL: a SQLite file in ``folder``, or a new PostgreSQL database dropped after."""
    if dialect == "sqlite":
        yield f"sqlite:///{folder / f'{tag}.db'}"
        return
    if dialect != "postgresql":
        raise ValueError(f"unknown dialect {dialect!r}; expected one of {', '.join(DIALECTS)}")
    name = f"billingo_bench_{tag.replace('-', '_')}_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as exc:
        admin.dispose()
        raise SystemExit(f"error: PostgreSQL at {PG_ADMIN_URL} is unreachable ({type(exc.orig).__name__}); "
                         "run with --dialects sqlite to measure SQLite alone") from None
    try:
        yield sa.make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        from billingo_pipeline.warehouse.engine import dispose_engines

        dispose_engines()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def ensure_fernet_key() -> None:
    """Children inherit the environment: one generated Fernet key for the whole benchmark."""
    from billingo_pipeline.credentials import generate_fernet_key
    from billingo_pipeline.settings import FERNET_KEY_ENV

    os.environ.setdefault(FERNET_KEY_ENV, generate_fernet_key())


@dataclass(frozen=True)
class BenchCompany:
    slug: str
    api_key: str
    document_count: int


def make_company(simulator: SimulatorProcess, slug: str, document_count: int) -> BenchCompany:
    from billingo_pipeline.simulator import generate_api_key

    api_key = generate_api_key(f"bench:{slug}")
    simulator.add_organization(api_key, name=f"{slug.capitalize()} Kft.", seed=f"bench:{slug}",
                               document_count=document_count)
    return BenchCompany(slug, api_key, document_count)


def register(warehouse_url: str, simulator: SimulatorProcess, companies: Sequence[BenchCompany]) -> None:
    """Store the companies in the warehouse as an operator would (``admin.register_company``)."""
    from billingo_pipeline.admin import register_company
    from billingo_pipeline.warehouse.engine import get_engine

    ensure_fernet_key()
    engine = get_engine(warehouse_url)
    for company in companies:
        register_company(engine, company.slug, f"{company.slug.capitalize()} Kft.", company.api_key,
                         api_base_url=simulator.base_url, verify=False)


# -- child processes -----------------------------------------------------------------------------

@dataclass
class ChildResult:
    value: dict[str, Any]
    peak_rss_mb: float
    process_wall_seconds: float


def run_child(function: str, **kwargs: Any) -> ChildResult:
    """Run ``bench.MODULE.FUNCTION(**kwargs)`` in a fresh interpreter; its JSON result, peak RSS and wall."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    env.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")  # dlt: no telemetry attempts from a benchmark
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        process = subprocess.Popen([sys.executable, "-m", "bench.common", function], stdin=subprocess.PIPE,
                                   stdout=out, stderr=err, cwd=REPO_ROOT, env=env, text=True)
        process.stdin.write(json.dumps(kwargs))
        process.stdin.close()
        # wait4, not wait: the rusage of this child alone (RUSAGE_CHILDREN would mix all children).
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        lines = [line for line in out.read().splitlines() if line.startswith(_RESULT_MARK)]
        if process.returncode != 0 or not lines:
            tail = err.read().strip().splitlines()[-12:]
            raise RuntimeError(f"{function} failed (exit {process.returncode}):\n  " + "\n  ".join(tail))
    # Linux reports ru_maxrss in KiB.
    return ChildResult(json.loads(lines[-1][len(_RESULT_MARK):]), usage.ru_maxrss / 1024, wall)


def _child_main(function: str) -> None:
    import importlib

    module_name, _, function_name = function.partition(":")
    kwargs = json.loads(sys.stdin.read() or "{}")
    value = getattr(importlib.import_module(module_name), function_name)(**kwargs)
    print(_RESULT_MARK + json.dumps(value, default=str), flush=True)


# -- the sync through its public entry point (runs in a child) -----------------------------------

SYNC_LOG_FIGURES = ("status", "duration_seconds", "api_calls", "pages_fetched", "documents_fetched",
                    "invoices_created", "invoices_updated", "invoices_skipped", "invoices_failed", "items_written")
# Columns of later schemas (migration 0006: full | incremental); reported when the schema has them.
# (migration 0011: payment histories, fetched after the sweep and counted apart from its api_calls).
SYNC_LOG_OPTIONAL = ("mode", "payment_history_calls", "payment_histories_fetched", "payment_histories_deferred")


def sync_once(warehouse_url: str, base_url: str, slug: str) -> dict[str, Any]:
    """One ``sync_company`` of ``slug``, as the asset calls it; its wall and its sync-log row."""
    from billingo_pipeline.resources import BillingoResource
    from billingo_pipeline.sync import sync_company
    from billingo_pipeline.warehouse.companies import get_company
    from billingo_pipeline.warehouse.engine import get_engine
    from billingo_pipeline.warehouse.schema import sync_log

    engine = get_engine(warehouse_url)  # migrated here, before the clock starts
    company = get_company(engine, slug)
    open_client = BillingoResource(base_url=base_url).client_for
    started = time.perf_counter()
    result = sync_company(engine, company, run_id=f"bench-{uuid.uuid4().hex}", trigger="cli", open_client=open_client)
    wall = time.perf_counter() - started
    with engine.connect() as conn:
        row = conn.execute(sa.select(sync_log).where(sync_log.c.id == result.sync_id)).mappings().one()
        # The endpoints after the documents (migration 0010): their API calls, by endpoint; and
        # the documents' own sweep (its pages fetched and written), which the fetch floor and dlt
        # are compared with: they read the documents only.
        endpoint_calls, documents_seconds = {}, None
        if sa.inspect(conn).has_table("sync_log_endpoints"):
            endpoints = conn.execute(sa.text(
                "SELECT endpoint, api_calls, duration_seconds FROM sync_log_endpoints WHERE sync_id = :id ORDER BY id"
            ), {"id": result.sync_id}).all()
            endpoint_calls = {e.endpoint: e.api_calls for e in endpoints if e.endpoint != "documents"}
            documents_seconds = next((e.duration_seconds for e in endpoints if e.endpoint == "documents"), None)
    figures = {name: row[name] for name in SYNC_LOG_FIGURES}
    figures.update({name: row[name] for name in SYNC_LOG_OPTIONAL if name in row})
    return {"wall": wall, **figures, "endpoint_calls": endpoint_calls,
            "documents_seconds": wall if documents_seconds is None else documents_seconds}


# -- reporting -----------------------------------------------------------------------------------

@dataclass
class Report:
    """Rows of (measurement, figure, target, verdict), printed as a markdown table."""

    title: str
    rows: list[tuple[str, str, str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, measurement: str, figure: str, target: str = "", met: bool | None = None) -> None:
        verdict = "" if met is None else ("met" if met else "MISSED")
        self.rows.append((measurement, figure, target, verdict))
        print(f"  {measurement}: {figure}" + (f"  [target {target}: {verdict}]" if target else ""), flush=True)

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(f"  note: {text}", flush=True)

    def markdown(self) -> str:
        lines = [f"#### {self.title}", "", "| measurement | figure | target | |", "| --- | --- | --- | --- |"]
        lines += [f"| {m} | {f} | {t} | {v} |" for m, f, t, v in self.rows]
        if self.notes:
            lines += [""] + [f"- {n}" for n in self.notes]
        return "\n".join(lines)


def seconds(value: float) -> str:
    return f"{value:.2f} s"


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else float("inf")


def machine_line() -> str:
    import platform

    return (f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}, {platform.system()} {platform.release()}")


if __name__ == "__main__":
    _child_main(sys.argv[1])
