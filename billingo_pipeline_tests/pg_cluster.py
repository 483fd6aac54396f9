"""A throwaway PostgreSQL cluster that a test may stop and start: the shared server must never go down.

Tests of a warehouse outage need a server they own. This module runs PostgreSQL's own ``initdb``
and ``pg_ctl`` (from Debian's versioned folder, ``/usr/lib/postgresql/<major>/bin``) on a temporary
data directory, a free port on 127.0.0.1 only, trust authentication and no Unix socket outside
the temporary directory.

``initdb`` refuses to run as root, and the tests run as root in CI: then every ``initdb``/``pg_ctl``
call runs as an unprivileged user (``runuser -u USER --``, or ``setpriv`` where ``runuser`` is
missing) and the temporary directory belongs to that user. The user is ``BILLINGO_TEST_PG_OS_USER``
when set, else ``billingo-pgtest``, created once (``useradd --system``) under a file lock so that
parallel xdist workers do not race each other.

API::

    from billingo_pipeline_tests.pg_cluster import PostgresCluster, throwaway_cluster

    with throwaway_cluster() as cluster:          # initdb + start; always stopped and removed
        url = cluster.create_database("warehouse")  # postgresql+psycopg://postgres@127.0.0.1:PORT/warehouse
        ...                                      # use url (e.g. as the warehouse URL of a sync)
        cluster.stop()                           # pg_ctl stop -m immediate: clients now get
                                                 # "connection refused" (like a crashed server)
        cluster.start()                          # same port, same data (committed rows survive)
        cluster.restart()                        # stop (immediate) + start
        cluster.is_running()                     # the postmaster answers on the port
        cluster.url                              # the URL of the "postgres" database
        cluster.database_url("x")                # the URL of database "x" (not created)
        cluster.log_text()                       # the server log, for assertion messages

``PostgresCluster(...).setup()`` / ``.teardown()`` do the same without the context manager (for a
module- or session-scoped fixture: ``faults/conftest.py`` has ``pg_cluster``). ``teardown`` is safe
to call at any point and twice; it stops the server (immediate; SIGKILL of the postmaster's pid as
a last resort) and removes the directory. Nothing here touches the shared server on 5432.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa

OS_USER_ENV = "BILLINGO_TEST_PG_OS_USER"
BIN_DIR_ENV = "BILLINGO_TEST_PG_BIN"
DEFAULT_OS_USER = "billingo-pgtest"
PREFERRED_MAJOR = "15"
# Superuser of the new cluster (initdb -U): the same name as on the shared server, so URLs look alike.
SUPERUSER = "postgres"
_USER_LOCK = Path(tempfile.gettempdir()) / "billingo-pgtest-user.lock"


class ClusterError(RuntimeError):
    """The throwaway cluster could not be created, started or stopped; the message says which step."""


def find_bin_dir() -> Path:
    """The folder holding ``initdb`` and ``pg_ctl``: ``$BILLINGO_TEST_PG_BIN``, else Debian's
    ``/usr/lib/postgresql/15/bin`` (else the newest major there), else ``pg_config --bindir``,
    else wherever ``initdb`` is on the PATH."""
    candidates: list[Path] = []
    if os.environ.get(BIN_DIR_ENV):
        candidates.append(Path(os.environ[BIN_DIR_ENV]))
    candidates.append(Path(f"/usr/lib/postgresql/{PREFERRED_MAJOR}/bin"))
    versioned = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: _major(p), reverse=True)
    candidates.extend(Path(p) for p in versioned)
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            bindir = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=True, timeout=10)
            candidates.append(Path(bindir.stdout.strip()))
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).parent)
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    raise ClusterError(
        "no PostgreSQL server binaries (initdb, pg_ctl) found: looked in "
        + ", ".join(str(c) for c in dict.fromkeys(candidates))
        + f"; install postgresql-{PREFERRED_MAJOR} or set {BIN_DIR_ENV}"
    )


def _major(path: str) -> int:
    part = Path(path).parent.name
    return int(part) if part.isdigit() else -1


def unprivileged_user() -> str | None:
    """The OS user that runs the cluster: None when we are not root (we run it ourselves)."""
    if os.geteuid() != 0:
        return None
    name = os.environ.get(OS_USER_ENV) or DEFAULT_OS_USER
    if _user_exists(name):
        return name
    if os.environ.get(OS_USER_ENV):
        raise ClusterError(f"{OS_USER_ENV} names OS user {name!r}, which does not exist")
    # xdist workers start at the same moment: one creates the user, the others find it.
    with open(_USER_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _user_exists(name):
            useradd = shutil.which("useradd") or "/usr/sbin/useradd"
            result = subprocess.run(
                [useradd, "--system", "--no-create-home", "--home-dir", "/nonexistent",
                 "--shell", "/usr/sbin/nologin", "--user-group", name],
                capture_output=True, text=True, timeout=30,
            )
            if result.returncode != 0 and not _user_exists(name):
                raise ClusterError(f"could not create OS user {name!r} for initdb: {result.stderr.strip()}")
    return name


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _as_user(user: str | None, argv: list[str]) -> list[str]:
    if user is None:
        return argv
    runuser = shutil.which("runuser") or ("/usr/sbin/runuser" if Path("/usr/sbin/runuser").exists() else None)
    if runuser:
        return [runuser, "-u", user, "--", *argv]
    setpriv = shutil.which("setpriv")
    if setpriv:
        entry = pwd.getpwnam(user)
        return [setpriv, f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--init-groups", *argv]
    raise ClusterError("running as root, and neither runuser nor setpriv is available to drop privileges for initdb")


def free_port() -> int:
    """A port nobody listens on right now (another process may still take it: start() retries)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PostgresCluster:
    """One throwaway cluster; see the module docstring for the API."""

    def __init__(self, *, start_timeout_seconds: int = 30):
        self.bin_dir = find_bin_dir()
        self.os_user = unprivileged_user()
        self.start_timeout_seconds = start_timeout_seconds
        self.base_dir: Path | None = None
        self.port: int | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def setup(self) -> PostgresCluster:
        """Create the data directory (initdb) and start the server."""
        self.base_dir = Path(tempfile.mkdtemp(prefix="billingo-pg-"))
        if self.os_user is not None:
            entry = pwd.getpwnam(self.os_user)
            os.chown(self.base_dir, entry.pw_uid, entry.pw_gid)
        self._run(
            "initdb",
            ["-D", str(self.data_dir), "-U", SUPERUSER, "--auth=trust", "--encoding=UTF8", "--locale=C",
             "--no-sync", "--no-instructions"],
        )
        self.port = free_port()
        self.start()
        return self

    def start(self) -> None:
        """Start the server on its port (a new free port if another process took it meanwhile)."""
        if self.base_dir is None:
            raise ClusterError("the cluster is not set up: call setup() first")
        for attempt in range(3):
            try:
                self._pg_ctl_start()
                return
            except ClusterError:
                # The port may have been taken since we picked it; a fresh one is worth a try.
                if attempt == 2 or self.is_running():
                    raise
                self.port = free_port()

    def stop(self) -> None:
        """``pg_ctl stop -m immediate``: the postmaster and every backend go at once, no checkpoint,
        the way a crashed or killed server goes; committed data survives (WAL replay on start)."""
        if self.base_dir is None or not (self.data_dir / "postmaster.pid").exists():
            return
        self._run("pg_ctl", ["-D", str(self.data_dir), "-m", "immediate", "-w", "-t", str(self.start_timeout_seconds), "stop"])

    def restart(self) -> None:
        self.stop()
        self.start()

    def teardown(self) -> None:
        """Stop (whatever state it is in) and remove every file. Safe to call twice."""
        if self.base_dir is None:
            return
        try:
            self.stop()
        except (ClusterError, subprocess.SubprocessError, OSError):
            self._kill_postmaster()
        shutil.rmtree(self.base_dir, ignore_errors=True)
        self.base_dir = None

    def __enter__(self) -> PostgresCluster:
        return self.setup()

    def __exit__(self, *exc_info: object) -> None:
        self.teardown()

    # -- addresses ---------------------------------------------------------------------------

    @property
    def data_dir(self) -> Path:
        if self.base_dir is None:
            raise ClusterError("the cluster is not set up: call setup() first")
        return self.base_dir / "data"

    @property
    def log_file(self) -> Path:
        return self.data_dir.parent / "server.log"

    def database_url(self, database: str = "postgres") -> str:
        """``postgresql+psycopg://postgres@127.0.0.1:PORT/<database>`` (trust auth: no password)."""
        if self.port is None:
            raise ClusterError("the cluster has no port yet: call setup() first")
        return sa.URL.create("postgresql+psycopg", username=SUPERUSER, host="127.0.0.1", port=self.port,
                             database=database).render_as_string(hide_password=False)

    @property
    def url(self) -> str:
        return self.database_url()

    def create_database(self, name: str) -> str:
        """Create database ``name`` (the cluster must be running); returns its URL."""
        engine = sa.create_engine(self.url, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        finally:
            engine.dispose()
        return self.database_url(name)

    def is_running(self) -> bool:
        """Whether something accepts connections on the cluster's port."""
        if self.port is None:
            return False
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.settimeout(1.0)
            return probe.connect_ex(("127.0.0.1", self.port)) == 0

    def log_text(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except OSError:
            return ""

    # -- internals ---------------------------------------------------------------------------

    def _pg_ctl_start(self) -> None:
        options = " ".join([
            f"-p {self.port}",
            "-c listen_addresses=127.0.0.1",
            f"-c unix_socket_directories={self.base_dir}",
            # A test cluster: nothing here has to survive a power cut, only a server stop.
            "-c fsync=off",
            "-c full_page_writes=off",
        ])
        self._run(
            "pg_ctl",
            ["-D", str(self.data_dir), "-l", str(self.log_file), "-o", options, "-w",
             "-t", str(self.start_timeout_seconds), "start"],
        )

    def _run(self, program: str, args: list[str]) -> None:
        argv = _as_user(self.os_user, [str(self.bin_dir / program), *args])
        try:
            result = subprocess.run(argv, capture_output=True, text=True, cwd=self.base_dir,
                                    timeout=self.start_timeout_seconds + 30)
        except subprocess.TimeoutExpired as exc:
            raise ClusterError(f"{program} {args[-1]} did not finish in time") from exc
        if result.returncode != 0:
            tail = "\n".join(self.log_text().splitlines()[-10:])
            raise ClusterError(
                f"{program} {args[-1]} failed (exit {result.returncode}): {result.stderr.strip() or result.stdout.strip()}"
                + (f"\nserver log:\n{tail}" if tail else "")
            )

    def _kill_postmaster(self) -> None:
        """Last resort when pg_ctl cannot stop it: SIGKILL the pid our own server wrote."""
        with contextlib.suppress(OSError, ValueError, ClusterError):
            pid = int((self.data_dir / "postmaster.pid").read_text().splitlines()[0])
            os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def throwaway_cluster(**kwargs) -> Iterator[PostgresCluster]:
    """A running throwaway cluster for the ``with`` block; stopped and removed afterwards, always."""
    cluster = PostgresCluster(**kwargs)
    try:
        yield cluster.setup()
    finally:
        cluster.teardown()
