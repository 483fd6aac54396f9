"""Figures about one company's data after a sync: its rows per table and how long the sync took."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from .schema import sync_log


@dataclass(frozen=True)
class CompanyFigures:
    row_counts: dict[str, int]  # table name -> the company's rows in it
    sync_duration_seconds: float | None  # the sync-log row's, None while it runs


def company_figures(engine: Engine, company_id: int, sync_id: int, tables: Iterable[sa.Table]) -> CompanyFigures:
    """Each table's rows of the company (every table here carries ``company_id``, indexed first)
    and the duration the sync-log row ``sync_id`` recorded."""
    with engine.connect() as conn:
        counts = {
            table.name: conn.execute(
                sa.select(sa.func.count()).select_from(table).where(table.c.company_id == company_id)
            ).scalar_one()
            for table in tables
        }
        duration = conn.execute(
            sa.select(sync_log.c.duration_seconds).where(sync_log.c.id == sync_id, sync_log.c.company_id == company_id)
        ).scalar()
    return CompanyFigures(row_counts=counts, sync_duration_seconds=duration)
