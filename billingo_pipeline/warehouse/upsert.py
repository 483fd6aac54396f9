"""INSERT ... ON CONFLICT DO UPDATE of a batch, the fastest way each warehouse dialect takes it."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from . import bulk


def upsert(
    conn: Connection,
    table: sa.Table,
    rows: Sequence[dict],
    *,
    conflict_columns: Iterable[str],
    update_columns: Iterable[str],
) -> None:
    """Insert ``rows``; where the unique key exists, overwrite ``update_columns`` only.

    One statement for the whole batch: SQLAlchemy sends it as multi-row VALUES on both dialects.
    """
    if not rows:
        return
    insert = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}[conn.dialect.name](table)
    update_columns = list(update_columns)
    statement = insert.on_conflict_do_update(
        index_elements=list(conflict_columns),
        set_={name: insert.excluded[name] for name in update_columns},
    )
    conn.execute(statement, list(rows))


def write_upsert(
    conn: Connection,
    table: sa.Table,
    rows: Sequence[dict],
    *,
    conflict_columns: Sequence[str],
    update_columns: Iterable[str],
    new_keys: bool = False,
) -> None:
    """``upsert`` with the same outcome, the fastest way each dialect takes a page: COPY and one
    set-based upsert on PostgreSQL, one driver ``executemany`` on SQLite (``bulk.upsert_many``,
    which says what ``new_keys`` promises)."""
    bulk.upsert_many(
        conn, table, rows, conflict_columns=conflict_columns, update_columns=update_columns, new_keys=new_keys
    )
