"""Bulk writes of one page (raw rows, invoices, items) on PostgreSQL: planner statistics, COPY, one set-based upsert.

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
    for name in stale:
        conn.exec_driver_sql(f'ANALYZE "{name}"')
    return list(stale)


class JsonText(str):
    """JSON text already serialized for a JSON column: COPY sends it as it is."""


def _column_processors(conn: Connection, columns: Sequence[sa.Column]) -> list[Callable[[Any], Any] | None]:
    dialect = conn.dialect
    return [column.type.dialect_impl(dialect).bind_processor(dialect) for column in columns]


def bound_rows(conn: Connection, columns: Sequence[sa.Column], rows: Sequence[Mapping[str, Any]]) -> list[tuple]:
    """``rows`` as tuples of ``columns``, each value through its column's bind processor (what an
    INSERT would send). A value the processor refuses raises ``StatementError``, as an INSERT
    would, so the caller's per-document refusal handling still applies."""
    processors = _column_processors(conn, columns)
    decimals = [isinstance(column.type, ExactDecimal) for column in columns]
    out: list[tuple] = []
    for row in rows:
        values = []
        for column, process, is_decimal in zip(columns, processors, decimals):
            try:
                value = row[column.name]
            except KeyError:
                raise sa.exc.StatementError(
                    f"A value is required for column {column.name!r} (rows must share their keys)",
                    f"COPY {column.table.name}", None, None,
                ) from None
            if process is not None and not isinstance(value, JsonText):
                try:
                    value = process(value)
                except Exception as exc:
                    raise sa.exc.StatementError(
                        f"({type(exc).__name__}) {exc}", f"COPY {column.table.name} ({column.name})", None, exc
                    ) from exc
            if is_decimal and value is not None:
                # The quantized Decimal as plain digits ("0.00000001", never "1E-8"): the text
                # SQLite stores for the same value.
                value = format(value, "f")
            elif type(value) is JsonText:
                value = str(value)
            values.append(value)
        out.append(tuple(values))
    return out


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
