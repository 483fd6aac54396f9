"""Writing a batch so that a row the database refuses costs only its own document."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

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
    write: Callable[[Connection, Sequence[T]], None],
    document_id_of: Callable[[T], int],
) -> dict[int, str]:
    """Write ``batch`` in one transaction; if the database refuses a row, write each element in
    its own transaction instead. Returns ``{document_id: reason}`` of the ones refused (the
    reason is one line without SQL or values); a lost connection still raises."""
    if not batch:
        return {}
    try:
        with engine.begin() as conn:
            write(conn, batch)
        return {}
    except Exception as exc:
        if not is_row_refusal(exc):
            raise
    refused: dict[int, str] = {}
    for element in batch:
        try:
            with engine.begin() as conn:
                write(conn, [element])
        except Exception as exc:
            if not is_row_refusal(exc):
                raise
            refused[document_id_of(element)] = f"the warehouse refused it ({warehouse_error_summary(exc)})"
    return refused
