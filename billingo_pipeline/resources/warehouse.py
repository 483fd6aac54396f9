"""The warehouse resource: one SQLAlchemy engine per URL, migrated to the newest schema."""

from __future__ import annotations

import dagster as dg
from pydantic import Field
from sqlalchemy.engine import Engine

from ..warehouse.engine import get_engine


class WarehouseResource(dg.ConfigurableResource):
    url: str = Field(
        description="SQLAlchemy URL: sqlite:///path.db (embedded) or postgresql+psycopg://user@host/db",
        json_schema_extra={"dagster__is_secret": True},
    )

    def get_engine(self) -> Engine:
        return get_engine(self.url)
