"""Bulk writes of one page (raw rows, invoices, items): COPY and one set-based upsert on PostgreSQL,
one prepared ``executemany`` on SQLite; both bind every value exactly as an ``INSERT`` would.

On SQLite, ``conn.execute(insert, rows)`` spends more time in SQLAlchemy (compiling, building and
processing each row's parameters by name) than SQLite spends writing; ``upsert_many`` and
``insert_many`` bind the rows to tuples once (``bound_rows``) and hand them to the driver's own
``executemany`` of one statement.

Why PostgreSQL needs more than an ``executemany``: the item foreign key is checked by a trigger per
row, and PostgreSQL plans that check once per session and keeps the plan. Planned while the
invoices table holds the first page (a fresh warehouse, or one whose tables were never analyzed:
autovacuum may be off, and runs at most once a minute when on), the kept plan walks every invoice
of the company through the ``(company_id, payment_status, due_date)`` index for each item, so a
first load grows with invoices x items (~80 s for 20,000 documents). The same holds for the
statements psycopg prepares (the items DELETE). ``ensure_planner_statistics`` analyzes a table
the planner knows nothing about, which also makes PostgreSQL drop the plans it kept.

Then rows go in by COPY (psycopg escapes every value; nothing is rendered into SQL) into a
session-scoped staging table emptied at each commit, and one ``INSERT ... SELECT ... ON CONFLICT``
moves them into the target; items are inserted by COPY straight into their table. Values pass
through each column's own SQLAlchemy bind processor first, so COPY receives exactly what an
``INSERT`` would (``ExactDecimal``'s quantization, aware UTC timestamps, JSON serialization).
Everything runs on the caller's connection, inside the caller's transaction.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .schema import ExactDecimal

# Page-sized writes only: staging tables exist for these targets.
STAGING_PREFIX = "staging_"


def is_postgresql(conn: Connection) -> bool:
    return conn.dialect.name == "postgresql"


def ensure_planner_statistics(conn: Connection, tables: Iterable[sa.Table]) -> list[str]:
    """ANALYZE those of ``tables`` whose statistics PostgreSQL lacks or has outgrown (never
    analyzed, emptied by TRUNCATE, or at least twice the pages it was analyzed at); returns
    their names. One catalog read when there is nothing to do; while a table grows from empty to
    N pages, about log2(N) ANALYZEs, each of a sample of at most 30,000 rows.

    Runs in the caller's transaction, so the statistics count the rows it has written and vanish
    with it on rollback. Tables are analyzed in name order, so two writers that both start
    analyzing cannot wait on each other in a cycle.
    """
    names = sorted(table.name for table in tables)
    stale = conn.execute(
        sa.text(
            "SELECT relname FROM ("
            " SELECT c.relname, c.reltuples, c.relpages,"
            "  pg_relation_size(c.oid) / current_setting('block_size')::int AS pages"
            " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = current_schema() AND c.relname IN :names) t "
            "WHERE pages > 0 AND (reltuples < 0 OR pages >= 2 * relpages) ORDER BY relname"
        ).bindparams(sa.bindparam("names", expanding=True)),
        {"names": names},
    ).scalars().all()
    by_name = {table.name: table for table in tables}
    for name in stale:
        columns = ", ".join(_quoted(_planned_columns(by_name[name])))
        conn.exec_driver_sql(f'ANALYZE "{name}" ({columns})')
    return list(stale)


def _planned_columns(table: sa.Table) -> list[str]:
    """The columns of the table's keys and indexes: what the writers' and the per-page reads'
    plans depend on. Sampling only these keeps an ANALYZE of the raw table from reading (and
    decompressing) 30,000 JSON payloads; the table's size is recorded all the same."""
    names: set[str] = set()
    for constraint in table.constraints:
        names.update(column.name for column in getattr(constraint, "columns", ()))
    for index in table.indexes:
        names.update(column.name for column in index.columns)
    return [column.name for column in table.columns if column.name in names]


# SQLAlchemy's default storage format of SQLite's DATE: what ``date.isoformat`` writes.
_SQLITE_DATE_FORMAT = "%(year)04d-%(month)02d-%(day)02d"


class JsonText(str):
    """JSON text already serialized for a JSON column: sent as it is, not serialized again."""


def _converter(conn: Connection, column: sa.Column) -> Callable[[Any], Any] | None:
    """What an INSERT's bind step does to a value of ``column``; None: nothing."""
    if isinstance(column.type, ExactDecimal):
        # One call a value instead of SQLAlchemy's chain of three; as plain digits on both
        # dialects ("0.00000001", never "1E-8"): what SQLite stores, and what COPY sends.
        return column.type.exact_value(as_text=True)
    impl = column.type.dialect_impl(conn.dialect)
    process = impl.bind_processor(conn.dialect)
    if process is None:
        return None
    if isinstance(impl, sa.Date) and getattr(impl, "_storage_format", None) == _SQLITE_DATE_FORMAT:
        # SQLite's DATE text, written by the date itself (3x faster than the format string);
        # anything but a plain date still goes through SQLAlchemy's own processor.
        def bound_date(value: Any, process=process) -> Any:
            return value.isoformat() if type(value) is dt.date else process(value)

        return bound_date

    def bound(value: Any, process=process) -> Any:
        return str(value) if type(value) is JsonText else process(value)

    return bound


def bound_rows(conn: Connection, columns: Sequence[sa.Column], rows: Sequence[Mapping[str, Any]]) -> list[tuple]:
    """``rows`` as tuples of ``columns``, each value through its column's bind processor (what an
    INSERT would send). A value the processor refuses raises ``StatementError``, as an INSERT
    would, so the caller's per-document refusal handling still applies."""
    names = [column.name for column in columns]
    converters = [(index, convert) for index, column in enumerate(columns) if (convert := _converter(conn, column)) is not None]
    # The bind processors are pure, and a page's rows share many value objects (the page's
    # timestamp, the company's id): the value just converted in a column is not converted again.
    last_in: list[Any] = [_NOTHING] * len(columns)
    last_out: list[Any] = [None] * len(columns)
    out: list[tuple] = []
    for row in rows:
        try:
            values = [row[name] for name in names]
        except KeyError as missing:
            raise sa.exc.StatementError(
                f"A value is required for column {missing.args[0]!r} (rows must share their keys)",
                f"COPY {columns[0].table.name}", None, None,
            ) from None
        for index, convert in converters:
            value = values[index]
            if value is last_in[index]:
                values[index] = last_out[index]
                continue
            try:
                converted = convert(value)
            except Exception as exc:
                raise sa.exc.StatementError(
                    f"({type(exc).__name__}) {exc}", f"COPY {columns[index].table.name} ({names[index]})", None, exc
                ) from exc
            last_in[index], last_out[index] = value, converted
            values[index] = converted
        out.append(tuple(values))
    return out


_NOTHING = object()


def _dbapi_error(exc: Exception, statement: str, conn: Connection) -> sa.exc.DBAPIError:
    """A psycopg error as SQLAlchemy's own exception (``DataError``, ``IntegrityError``,
    ``OperationalError``...), as if ``conn.execute`` had raised it."""
    dbapi = conn.dialect.loaded_dbapi
    return sa.exc.DBAPIError.instance(statement, None, exc, dbapi.Error, ismulti=False)


def _copy(conn: Connection, target: str, column_names: Sequence[str], values: Sequence[tuple]) -> None:
    statement = f'COPY "{target}" ({", ".join(_quoted(column_names))}) FROM STDIN'
    dbapi_connection = conn.connection.dbapi_connection
    dbapi = conn.dialect.loaded_dbapi
    try:
        with dbapi_connection.cursor() as cursor:
            with cursor.copy(statement) as copy:
                for row in values:
                    copy.write_row(row)
    except dbapi.Error as exc:
        raise _dbapi_error(exc, statement, conn) from exc


def _quoted(names: Iterable[str]) -> list[str]:
    return [f'"{name}"' for name in names]


def _columns_of(table: sa.Table, rows: Sequence[Mapping[str, Any]]) -> list[sa.Column]:
    # The first row's keys decide the columns, as for ``conn.execute(insert, rows)``.
    keys = rows[0].keys()
    return [column for column in table.columns if column.name in keys]


def insert_many(conn: Connection, table: sa.Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert ``rows`` into ``table``: COPY on PostgreSQL, one ``executemany`` on SQLite."""
    if is_postgresql(conn):
        copy_insert(conn, table, rows)
    elif rows:
        columns = _columns_of(table, rows)
        names = [c.name for c in columns]
        statement = f'INSERT INTO "{table.name}" ({", ".join(_quoted(names))}) VALUES ({", ".join("?" * len(names))})'
        conn.exec_driver_sql(statement, bound_rows(conn, columns, rows))


class AssumedNewKeysExist(Exception):
    """A write told that none of its keys existed (``new_keys``) met one that does: the
    transaction is spoiled; the caller writes the batch again without assuming new keys
    (``refusals.write_isolating_refusals`` does). Not a row refusal: nothing is wrong with a row."""


def upsert_many(
    conn: Connection,
    table: sa.Table,
    rows: Sequence[Mapping[str, Any]],
    *,
    conflict_columns: Sequence[str],
    update_columns: Iterable[str],
    new_keys: bool = False,
) -> bool:
    """``rows`` into ``table``; where the unique key exists, overwrite ``update_columns`` only.
    ``copy_upsert`` on PostgreSQL; one ``executemany`` of ``INSERT ... ON CONFLICT`` on SQLite.

    ``new_keys``: the caller has just read that none of the keys exist (a first load). PostgreSQL
    then COPYs the rows straight into the table (half the work of staging them first), and raises
    ``AssumedNewKeysExist`` if the database refuses them (a key stored after all, by a concurrent
    writer). No savepoint guards the COPY: two round trips more for every table of every page, for
    a case a first load almost never meets, and one the caller recovers from by writing again.

    Returns whether the rows were inserted as new keys, all of them (PostgreSQL's COPY path):
    the caller then knows nothing of theirs existed before, so nothing needs replacing.
    """
    if is_postgresql(conn):
        if new_keys and rows:
            try:
                copy_insert(conn, table, rows)
            except sa.exc.IntegrityError as exc:
                # Whatever the constraint: written again as an upsert, a row the database still
                # refuses is refused as it would have been without the assumption.
                raise AssumedNewKeysExist(f"{table.name}: a key assumed new exists") from exc
            return True
        copy_upsert(conn, table, rows, conflict_columns=conflict_columns, update_columns=update_columns)
        return False
    if not rows:
        return False
    columns = _columns_of(table, rows)
    names = [c.name for c in columns]
    updates = ", ".join(f'"{name}" = excluded."{name}"' for name in update_columns)
    statement = (
        f'INSERT INTO "{table.name}" ({", ".join(_quoted(names))}) VALUES ({", ".join("?" * len(names))}) '
        f'ON CONFLICT ({", ".join(_quoted(conflict_columns))}) DO UPDATE SET {updates}'
    )
    conn.exec_driver_sql(statement, bound_rows(conn, columns, rows))
    return False


def copy_insert(conn: Connection, table: sa.Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert ``rows`` into ``table`` by COPY (PostgreSQL only)."""
    if not rows:
        return
    columns = _columns_of(table, rows)
    _copy(conn, table.name, [c.name for c in columns], bound_rows(conn, columns, rows))


def copy_upsert(
    conn: Connection,
    table: sa.Table,
    rows: Sequence[Mapping[str, Any]],
    *,
    conflict_columns: Sequence[str],
    update_columns: Iterable[str],
) -> None:
    """``rows`` into ``table``; where the unique key exists, overwrite ``update_columns`` only
    (PostgreSQL only). COPY into a staging table, then one INSERT ... SELECT ... ON CONFLICT."""
    if not rows:
        return
    columns = _columns_of(table, rows)
    names = [c.name for c in columns]
    listed = ", ".join(_quoted(names))
    # Created once per session and column list (a column the rows leave out keeps the target's
    # default), with the target's column types and no constraints or defaults, so no sequence
    # value is drawn for it; ON COMMIT DELETE ROWS empties it whenever the caller commits, and
    # the DELETE covers a second use inside one transaction.
    staging = f"{STAGING_PREFIX}{table.name}_{hashlib.sha1(listed.encode()).hexdigest()[:8]}"
    conn.exec_driver_sql(
        f'CREATE TEMP TABLE IF NOT EXISTS "{staging}" ON COMMIT DELETE ROWS AS '
        f'SELECT {listed} FROM "{table.name}" WITH NO DATA; DELETE FROM "{staging}"'
    )
    _copy(conn, staging, names, bound_rows(conn, columns, rows))
    updates = ", ".join(f'"{name}" = EXCLUDED."{name}"' for name in update_columns)
    conflict = ", ".join(_quoted(conflict_columns))
    # ORDER BY the key: concurrent writers of overlapping keys lock rows in the same order.
    conn.exec_driver_sql(
        f'INSERT INTO "{table.name}" ({listed}) SELECT {listed} FROM "{staging}" ORDER BY {conflict} '
        f"ON CONFLICT ({conflict}) DO UPDATE SET {updates}"
    )
