"""Writes of raw documents, invoices and items: bulk, idempotent, one company at a time."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..canonical_json import orjson_canonical
from ..normalize import change_hash, paid_date_ignored
from .schema import billingo_documents_raw as raw
from .schema import billingo_invoice_items as items
from .schema import billingo_invoices as invoices
from . import bulk, entities

# Raw documents and the invoices built from them, as the generic writes of ``entities`` see them.
DOCUMENT_TABLES = entities.EntityTables(raw, invoices, "document_id")


def storable_payload(payload: Any) -> tuple[Any, str | None]:
    """``(payload for the JSON column, verbatim JSON text or None)``: lossless on both dialects.

    Billingo's JSON, as Python parses it, can hold what a database refuses: a NUL character
    (PostgreSQL's JSONB and text reject it), a lone surrogate such as ``"\\ud800"`` (not valid
    UTF-8, so neither driver can send it) and ``Infinity``/``NaN`` (not JSON at all). Such a payload
    is kept whole as ASCII JSON text (NUL and surrogates escaped, non-finite numbers as the tokens
    ``json.loads`` reads back), and the JSON column gets a stand-in for queries: those characters
    replaced by U+FFFD, non-finite numbers by null. Every other payload is stored as it is.
    """
    stored, verbatim, _ = _storable_json(payload)
    return stored, verbatim


def _storable_json(payload: Any) -> tuple[Any, str | None, str | None]:
    """``storable_payload`` plus the JSON text of the payload column when it came for free."""
    try:
        text = json.dumps(payload, ensure_ascii=False, allow_nan=False)
        text.encode("utf-8")
    except ValueError:  # a non-finite number, or a lone surrogate (UnicodeEncodeError)
        return _json_stand_in(payload), json.dumps(payload), None
    # Also true for a literal backslash-u0000 in a string: then kept verbatim needlessly, still lossless.
    if "\\u0000" in text:
        return _json_stand_in(payload), json.dumps(payload), None
    return payload, None, text


_UNSTORABLE_CHARACTERS = re.compile("[\x00\ud800-\udfff]")


def _json_stand_in(value: Any) -> Any:
    if isinstance(value, str):
        return _UNSTORABLE_CHARACTERS.sub("\ufffd", value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {_json_stand_in(str(key)): _json_stand_in(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_stand_in(item) for item in value]
    return value


class RawDocument(NamedTuple):
    """One document as its raw row stores it (``raw_document``)."""

    document_id: int
    payload: Any  # as received; what the JSON column gets is ``stored``
    content_hash: str  # normalize.change_hash of the payload
    stored: Any  # for the JSON column: the payload, or its stand-in when ``verbatim`` is set
    verbatim: str | None  # exact JSON text, only when the JSON column cannot hold the payload
    text: str | None  # the JSON column's text when it is already serialized


def raw_document(document_id: int, payload: Any) -> RawDocument:
    """``payload``'s change hash and its storable form from one serialization.

    The canonical JSON text ``normalize.content_hash`` hashes (sorted keys, no whitespace, UTF-8)
    is also valid text for the JSON column, so a payload is serialized once for both, not three
    times (hash, storability check, the column's bind), by orjson where it writes the stdlib's
    exact text (``canonical_json``). Only a document whose change hash leaves out the fake
    ``paid_date`` needs a second serialization, and one the warehouse cannot hold as it is
    (``storable_payload``) takes the careful path. ``payload`` is JSON as the client reads it: a
    non-finite number is a ``NonFiniteNumber`` (a plain float NaN would be written as null).
    """
    canonical = orjson_canonical(payload)
    if canonical is not None:
        text = canonical.decode("utf-8")
    else:
        try:
            text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
            canonical = text.encode("utf-8")
        except (ValueError, TypeError):  # a non-finite number, a lone surrogate, a non-dict mapping
            text = None
    if text is None or "\\u0000" in text:
        stored, verbatim, text = _storable_json(payload)
        return RawDocument(document_id, payload, change_hash(payload), stored, verbatim, text)
    if paid_date_ignored(payload):
        without_paid_date = {key: value for key, value in payload.items() if key != "paid_date"}
        canonical = orjson_canonical(without_paid_date)
        content_hash = change_hash(payload) if canonical is None else hashlib.sha256(canonical).hexdigest()
    else:
        content_hash = hashlib.sha256(canonical).hexdigest()
    return RawDocument(document_id, payload, content_hash, payload, None, text)


def stored_payload(payload: Any, verbatim: str | None) -> Any:
    """The payload exactly as Billingo sent it, from a raw row's two columns."""
    return json.loads(verbatim) if verbatim is not None else payload


def upsert_raw_documents(
    conn: Connection, company_id: int, sync_id: int, documents: Sequence[RawDocument], now: dt.datetime,
    *, new: bool = False,
) -> None:
    """Store documents (``raw_document``) as received; re-seen documents lose ``missing_since``.
    ``new``: none of them is stored yet, as far as the caller has just read."""
    entities.upsert_raw(conn, DOCUMENT_TABLES, company_id, sync_id, documents, now, new=new)


def stores_no_raw_documents(conn: Connection, company_id: int) -> bool:
    """Whether the company has no raw document at all (missing ones included): its first sync."""
    return entities.stores_no_raw(conn, DOCUMENT_TABLES, company_id)


def mark_unseen_raw_documents(conn: Connection, company_id: int, sync_id: int, now: dt.datetime) -> int:
    """After a complete fetch: documents it did not return are missing in Billingo from now on."""
    return entities.mark_unseen_raw(conn, DOCUMENT_TABLES, company_id, sync_id, now)


def mark_raw_documents_missing(conn: Connection, company_id: int, document_ids: Sequence[int], now: dt.datetime) -> int:
    """Mark these documents missing in Billingo from now on (those not marked already)."""
    return entities.mark_raw_missing(conn, DOCUMENT_TABLES, company_id, document_ids, now)


def _states_query(company_id: int) -> sa.Select:
    """Raw hash and missing mark, and the hash and deleted mark of the invoice built from it: all
    that deciding what to do with a document needs, without its payload."""
    joined = raw.outerjoin(
        invoices, sa.and_(invoices.c.company_id == raw.c.company_id, invoices.c.document_id == raw.c.document_id)
    )
    return (
        sa.select(
            raw.c.document_id,
            raw.c.content_hash,
            raw.c.missing_since,
            invoices.c.source_hash,
            invoices.c.deleted_in_source_at,
            # What the status history compares a new observation with.
            invoices.c.payment_status,
            invoices.c.paid_date,
            invoices.c.cancelled,
        )
        .select_from(joined)
        .where(raw.c.company_id == company_id)
    )


def raw_document_states(conn: Connection, company_id: int) -> list[sa.Row]:
    """One small row per raw document of the company."""
    return conn.execute(_states_query(company_id).order_by(raw.c.document_id)).all()


@dataclass(frozen=True)
class RawPayload:
    document_id: int
    payload: Any  # exactly as Billingo sent it
    content_hash: str


def raw_payloads(conn: Connection, company_id: int, document_ids: Iterable[int]) -> list[RawPayload]:
    rows = conn.execute(
        sa.select(raw.c.document_id, raw.c.payload, raw.c.payload_verbatim, raw.c.content_hash).where(
            raw.c.company_id == company_id, raw.c.document_id.in_(list(document_ids))
        )
    ).all()
    return [RawPayload(r.document_id, stored_payload(r.payload, r.payload_verbatim), r.content_hash) for r in rows]


INVOICE_UPDATE_EXCLUDED = ("id", "company_id", "document_id", "first_seen_at")


def write_invoices_with_items(
    conn: Connection, company_id: int, invoice_rows: Sequence[dict], item_rows: Sequence[dict], now: dt.datetime,
    *, new: bool = False,
) -> None:
    """Upsert invoices and replace their items, inside the caller's transaction. ``new``: none
    of the invoices is stored yet, as far as the caller has just read.

    Items are deleted and re-inserted per invoice rather than upserted by position: a document
    that lost an item must not keep the stale one, and the transaction means no reader ever sees
    an invoice without its items or with a mix of old and new ones.
    """
    if not invoice_rows:
        return
    rows = [
        {**row, "company_id": company_id, "first_seen_at": now, "last_changed_at": now, "deleted_in_source_at": None}
        for row in invoice_rows
    ]
    inserted_new = bulk.upsert_many(
        conn,
        invoices,
        rows,
        conflict_columns=("company_id", "document_id"),
        update_columns=[c.name for c in invoices.columns if c.name not in INVOICE_UPDATE_EXCLUDED],
        new_keys=new,
    )
    if bulk.is_postgresql(conn):
        # After the invoices, before the items: see bulk's docstring (a first load otherwise
        # checks each item's foreign key against every invoice of the company).
        bulk.ensure_planner_statistics(conn, (invoices, items))
    if not inserted_new:
        # Inserted as new keys, invoices have no items to replace (an item needs its invoice).
        document_ids = [row["document_id"] for row in invoice_rows]
        conn.execute(items.delete().where(items.c.company_id == company_id, items.c.document_id.in_(document_ids)))
    if item_rows:
        item_values = [{**row, "company_id": company_id} for row in item_rows]
        bulk.insert_many(conn, items, item_values)


def set_deleted_in_source(
    conn: Connection, company_id: int, document_ids: Sequence[int], deleted_at: dt.datetime | None, now: dt.datetime
) -> int:
    """Mark invoices Billingo no longer returns (``deleted_at``), or clear the mark (``None``) for
    ones it returns again. Rows already in that state are left alone; returns how many changed."""
    if not document_ids:
        return 0
    already = invoices.c.deleted_in_source_at.is_(None) if deleted_at is None else invoices.c.deleted_in_source_at.is_not(None)
    return conn.execute(
        invoices.update()
        .where(invoices.c.company_id == company_id, invoices.c.document_id.in_(list(document_ids)), sa.not_(already))
        .values(deleted_in_source_at=deleted_at, last_changed_at=now)
    ).rowcount


# --- what the one-pass sync reads and marks per page -------------------------------------------


def document_states(conn: Connection, company_id: int, document_ids: Sequence[int]) -> dict[int, sa.Row]:
    """For one page: what is stored of these documents, so unchanged ones are skipped before any write."""
    if not document_ids:
        return {}
    rows = conn.execute(_states_query(company_id).where(raw.c.document_id.in_(list(document_ids)))).all()
    return {row.document_id: row for row in rows}


def touch_raw_documents(conn: Connection, company_id: int, sync_id: int, document_ids: Sequence[int], now: dt.datetime) -> None:
    """Unchanged documents seen again: only when and by which sync they were last seen."""
    entities.touch_raw(conn, DOCUMENT_TABLES, company_id, sync_id, document_ids, now)


def mark_invoices_of_missing_documents(conn: Connection, company_id: int, now: dt.datetime) -> int:
    """Invoices whose raw document is missing in Billingo become deleted in source (once)."""
    return entities.mark_normalized_of_missing(conn, DOCUMENT_TABLES, company_id, now)
