"""Writing a batch so that a row the database refuses costs only its own document."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from .bulk import AssumedNewKeysExist
from .engine import warehouse_error_summary

T = TypeVar("T")

# What the database says about one row it cannot take (a value, a constraint): worth writing the
# batch again one document at a time. A lost connection is not: it fails the sync.
ROW_REFUSALS = (sa.exc.DataError, sa.exc.IntegrityError)


def is_row_refusal(exc: BaseException) -> bool:
    # A StatementError that is not a DBAPIError failed while binding one row's value in Python.
    return isinstance(exc, ROW_REFUSALS) or (
        isinstance(exc, sa.exc.StatementError) and not isinstance(exc, sa.exc.DBAPIError)
    )


def write_isolating_refusals(
    engine: Engine,
    batch: Sequence[T],
    write: Callable[[Connection, Sequence[T], bool], None],
    document_id_of: Callable[[T], int],
) -> dict[int, str]:
    """Write ``batch`` in one transaction; if the database refuses a row, write each element in
    its own transaction instead. Returns ``{document_id: reason}`` of the ones refused (the
    reason is one line without SQL or values); a lost connection still raises.

    ``write(conn, elements, assume_new)``: with ``assume_new`` the writer may take keys it read
    as absent for new (``bulk.upsert_many``'s ``new_keys``); when one exists after all
    (``bulk.AssumedNewKeysExist``), the whole batch is written again with ``assume_new`` false.
    Elements already committed alone are then written again: every write is an upsert.
    """
    if not batch:
        return {}
    try:
        return _write_isolating_refusals(engine, batch, write, document_id_of, assume_new=True)
    except AssumedNewKeysExist:
        return _write_isolating_refusals(engine, batch, write, document_id_of, assume_new=False)


def _write_isolating_refusals(
    engine: Engine,
    batch: Sequence[T],
    write: Callable[[Connection, Sequence[T], bool], None],
    document_id_of: Callable[[T], int],
    *,
    assume_new: bool,
) -> dict[int, str]:
    try:
        with engine.begin() as conn:
            write(conn, batch, assume_new)
        return {}
    except Exception as exc:
        if not is_row_refusal(exc):
            raise
    refused: dict[int, str] = {}
    for element in batch:
        try:
            with engine.begin() as conn:
                write(conn, [element], assume_new)
        except Exception as exc:
            if not is_row_refusal(exc):
                raise
            refused[document_id_of(element)] = f"the warehouse refused it ({warehouse_error_summary(exc)})"
    return refused
