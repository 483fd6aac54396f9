"""INSERT ... ON CONFLICT DO UPDATE of a batch by SQLAlchemy's own statement: the reference the page
writers (``bulk.upsert_many``) are tested and measured against."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection


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
