"""Connecting to the warehouse and bringing its schema to the newest migration."""

from __future__ import annotations

import functools
import threading
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

from .collation import COLLATION_NAME, compare_hungarian

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
WAREHOUSE_BACKENDS = ("sqlite", "postgresql")

_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


def parse_warehouse_url(url: str) -> sa.URL:
    """``url`` parsed; one that cannot be parsed raises an error that does not quote it.

    The usual culprit is an unescaped ``@`` in the password, and then what SQLAlchemy or the
    driver would say quotes the rest of the password: ``postgresql://u:pa@ss:word@host:5432/db``
    fails with ``invalid literal for int() with base 10: 'word@host:5432'``, and
    ``postgresql://u:pa@ss@host/db`` parses with the host ``ss@host``, which the connection
    error then names.
    """
    try:
        parsed = sa.make_url(url)
    except (sa.exc.ArgumentError, ValueError):
        parsed = None
    if parsed is None or "@" in (parsed.host or ""):
        raise sa.exc.ArgumentError(
            "the warehouse URL is not a valid SQLAlchemy URL (not shown: it may hold a password; "
            "special characters in the password must be %-escaped)"
        )
    # The upserts, views and migrations are written for these two; say so before a driver is looked for.
    if parsed.get_backend_name() not in WAREHOUSE_BACKENDS:
        raise sa.exc.ArgumentError(
            f"the warehouse runs on SQLite or PostgreSQL, not '{parsed.get_backend_name()}' "
            "(sqlite:///path.db or postgresql+psycopg://user@host/db)"
        )
    return parsed


def url_without_password(url: str) -> str:
    """``url`` as a message may show it."""
    try:
        return parse_warehouse_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "(an unparseable URL)"


def create_warehouse_engine(url: str) -> Engine:
    """A new engine for ``url``; SQLite gets the settings a concurrent writer needs."""
    url_obj = parse_warehouse_url(url)
    if url_obj.get_backend_name() == "sqlite":
        if url_obj.database and url_obj.database != ":memory:":
            Path(url_obj.database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url_obj, connect_args={"timeout": 30})

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):
            cursor = dbapi_connection.cursor()
            # Foreign keys are off by default in SQLite; WAL lets the UI read while a sync writes.
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            # In WAL mode NORMAL syncs at checkpoints instead of at every commit (a sync commits
            # a page at a time): still never corrupt, and a power cut loses at most the last
            # pages committed, whole, which the next sync fetches again (its cursor only moves
            # with a committed sync-log row).
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()
            # PostgreSQL has this collation from ICU (migration 0007); SQLite needs it per connection.
            dbapi_connection.create_collation(COLLATION_NAME, compare_hungarian)

        return engine
    engine = sa.create_engine(url_obj, pool_pre_ping=True)

    @sa.event.listens_for(engine, "connect")
    def _postgresql_session(dbapi_connection, _record):
        # Raw payloads are large JSONB values, compressed into TOAST as they are written: lz4
        # does that several times faster than the default pglz (and reads back faster). A server
        # built without lz4 refuses the setting and keeps its default.
        try:
            with dbapi_connection.cursor() as cursor:
                cursor.execute("SET default_toast_compression = 'lz4'")
            dbapi_connection.commit()
        except Exception:
            dbapi_connection.rollback()

    return engine


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["engine"] = engine
    return config


def upgrade_to_head(engine: Engine) -> None:
    command.upgrade(alembic_config(engine), "head")


@functools.cache
def _migration_heads() -> frozenset[str]:
    """The newest revision(s) of the migrations shipped with this code (read once per process)."""
    return frozenset(ScriptDirectory(str(MIGRATIONS_DIR)).get_heads())


def is_at_head(engine: Engine) -> bool:
    """Whether the database records exactly the newest revision(s); an empty one records none."""
    with engine.connect() as conn:
        return frozenset(MigrationContext.configure(conn).get_current_heads()) == _migration_heads()


def get_engine(url: str) -> Engine:
    """The process-wide engine for ``url``, migrated to the newest schema on first use."""
    with _engines_lock:
        engine = _engines.get(url)
        if engine is None:
            engine = create_warehouse_engine(url)
            # At the newest revision there is nothing to do, and one query says so; a no-op
            # ``alembic upgrade`` would load its environment and every script first (tens of
            # milliseconds per database opened). Older, empty or unknown goes to Alembic.
            if not is_at_head(engine):
                upgrade_to_head(engine)
            _engines[url] = engine
        return engine


def dispose_engines() -> None:
    with _engines_lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()


def warehouse_error_summary(exc: BaseException) -> str:
    """One line on what the database (or its driver) said, never the SQL, its parameters or a
    DETAIL line (those quote the rows: payload text, amounts)."""
    original = getattr(exc, "orig", None) or exc
    diag = getattr(original, "diag", None)  # psycopg: the server's primary message alone
    text = getattr(diag, "message_primary", None) if diag is not None else None
    if not text:
        text = str(original).splitlines()[0] if str(original) else ""
    text = " ".join(text.split())
    if len(text) > 200:
        text = text[:197] + "..."
    return f"{type(original).__name__}: {text}" if text else type(original).__name__
