"""Writes of a list endpoint's raw and normalized rows (partners, spendings, blocks, bank accounts;
the raw documents too): bulk, idempotent, one company at a time, never deleting."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from . import bulk

if TYPE_CHECKING:
    from .documents import RawDocument

# Columns a normalized row keeps from its first write.
NORMALIZED_UPDATE_EXCLUDED = ("id", "company_id", "first_seen_at")


@dataclass(frozen=True)
class EntityTables:
    """A raw table (``schema.raw_entity_table``) and the normalized table built from it, both keyed
    by (``company_id``, ``id_column``)."""

    raw: sa.Table
    normalized: sa.Table
    id_column: str

    def raw_id(self) -> sa.Column:
        return self.raw.c[self.id_column]

    def normalized_id(self) -> sa.Column:
        return self.normalized.c[self.id_column]


def entity_states(conn: Connection, tables: EntityTables, company_id: int, ids: Sequence[int]) -> dict[int, sa.Row]:
    """For one page: each stored entity's raw hash and missing mark, and the hash and deleted mark
    of the normalized row built from it (``entity_id``, ``content_hash``, ``missing_since``,
    ``source_hash``, ``deleted_in_source_at``)."""
    if not ids:
        return {}
    raw, normalized = tables.raw, tables.normalized
    joined = raw.outerjoin(
        normalized, sa.and_(normalized.c.company_id == raw.c.company_id, tables.normalized_id() == tables.raw_id())
    )
    rows = conn.execute(
        sa.select(
            tables.raw_id().label("entity_id"), raw.c.content_hash, raw.c.missing_since,
            normalized.c.source_hash, normalized.c.deleted_in_source_at,
        )
        .select_from(joined)
        .where(raw.c.company_id == company_id, tables.raw_id().in_(list(ids)))
    ).all()
    return {row.entity_id: row for row in rows}


def upsert_raw(
    conn: Connection, tables: EntityTables, company_id: int, sync_id: int, entities: Sequence[RawDocument],
    now: dt.datetime, *, new: bool = False,
) -> None:
    """Store payloads (``documents.raw_document``) as received; re-seen ones lose ``missing_since``.
    ``new``: none of them is stored yet, as far as the caller has just read."""
    rows = [
        {
            "company_id": company_id,
            tables.id_column: entity.document_id,
            # The text raw_document made: JSONB parses it into the value a bound dict would give,
            # SQLite stores it; never serialized a second time.
            "payload": bulk.JsonText(entity.text) if entity.text is not None else entity.stored,
            "payload_verbatim": entity.verbatim,
            "content_hash": entity.content_hash,
            "first_fetched_at": now,
            "last_fetched_at": now,
            "last_seen_sync_id": sync_id,
            "missing_since": None,
        }
        for entity in entities
    ]
    bulk.upsert_many(
        conn, tables.raw, rows,
        conflict_columns=("company_id", tables.id_column),
        update_columns=("payload", "payload_verbatim", "content_hash", "last_fetched_at", "last_seen_sync_id", "missing_since"),
        new_keys=new,
    )
    if bulk.is_postgresql(conn):
        bulk.ensure_planner_statistics(conn, (tables.raw,))  # for the next page's reads of raw rows


def upsert_normalized(
    conn: Connection, tables: EntityTables, company_id: int, rows: Sequence[dict], now: dt.datetime, *, new: bool = False
) -> None:
    """Upsert normalized rows (each with its id column and ``source_hash``); a row written again is
    no longer deleted in source."""
    if not rows:
        return
    values = [
        {**row, "company_id": company_id, "first_seen_at": now, "last_changed_at": now, "deleted_in_source_at": None}
        for row in rows
    ]
    bulk.upsert_many(
        conn, tables.normalized, values,
        conflict_columns=("company_id", tables.id_column),
        update_columns=[c.name for c in tables.normalized.columns if c.name not in (*NORMALIZED_UPDATE_EXCLUDED, tables.id_column)],
        new_keys=new,
    )


def touch_raw(conn: Connection, tables: EntityTables, company_id: int, sync_id: int, ids: Sequence[int], now: dt.datetime) -> None:
    """Unchanged entities seen again: only when and by which sync they were last seen."""
    if ids:
        conn.execute(
            tables.raw.update()
            .where(tables.raw.c.company_id == company_id, tables.raw_id().in_(list(ids)))
            .values(last_seen_sync_id=sync_id, last_fetched_at=now)
        )


def stores_no_raw(conn: Connection, tables: EntityTables, company_id: int) -> bool:
    """Whether the company has no raw row at all (missing ones included): its first sync."""
    return conn.execute(sa.select(sa.exists().where(tables.raw.c.company_id == company_id))).scalar_one() is False


def mark_unseen_raw(conn: Connection, tables: EntityTables, company_id: int, sync_id: int, now: dt.datetime) -> int:
    """After a complete sweep: what it did not return is missing in Billingo from now on."""
    raw = tables.raw
    return conn.execute(
        raw.update()
        .where(
            raw.c.company_id == company_id,
            raw.c.missing_since.is_(None),
            sa.or_(raw.c.last_seen_sync_id.is_(None), raw.c.last_seen_sync_id != sync_id),
        )
        .values(missing_since=now)
    ).rowcount


def mark_raw_missing(conn: Connection, tables: EntityTables, company_id: int, ids: Sequence[int], now: dt.datetime) -> int:
    """Mark these missing in Billingo from now on (those not marked already)."""
    if not ids:
        return 0
    raw = tables.raw
    return conn.execute(
        raw.update()
        .where(raw.c.company_id == company_id, tables.raw_id().in_(list(ids)), raw.c.missing_since.is_(None))
        .values(missing_since=now)
    ).rowcount


def mark_normalized_of_missing(conn: Connection, tables: EntityTables, company_id: int, now: dt.datetime) -> int:
    """Normalized rows whose raw row is missing in Billingo become deleted in source (once)."""
    raw, normalized = tables.raw, tables.normalized
    missing = sa.select(tables.raw_id()).where(raw.c.company_id == company_id, raw.c.missing_since.is_not(None))
    return conn.execute(
        normalized.update()
        .where(
            normalized.c.company_id == company_id,
            normalized.c.deleted_in_source_at.is_(None),
            tables.normalized_id().in_(missing),
        )
        .values(deleted_in_source_at=now, last_changed_at=now)
    ).rowcount


def unseen_where(
    conn: Connection, tables: EntityTables, company_id: int, sync_id: int, condition: sa.ColumnElement[bool]
) -> list[int]:
    """Ids of the company's live normalized rows matching ``condition`` whose raw row this sync has
    not seen (an incremental sync's subset that no longer returned them)."""
    raw, normalized = tables.raw, tables.normalized
    joined = normalized.join(raw, sa.and_(raw.c.company_id == normalized.c.company_id, tables.raw_id() == tables.normalized_id()))
    return list(conn.execute(
        sa.select(tables.normalized_id())
        .select_from(joined)
        .where(
            normalized.c.company_id == company_id,
            normalized.c.deleted_in_source_at.is_(None),
            raw.c.missing_since.is_(None),
            sa.or_(raw.c.last_seen_sync_id.is_(None), raw.c.last_seen_sync_id != sync_id),
            condition,
        )
        .order_by(tables.normalized_id())
    ).scalars())
