"""What the Dagster catalog shows about the warehouse tables behind the sync assets.

The column schema is read from the table definitions in ``warehouse/schema.py`` (names, types,
nullability, uniqueness, the columns' comments as descriptions), so the catalog cannot list a
column the warehouse does not have. It goes on the asset specs (``dagster/column_schema``, shown
before anything ran); each company's materialization adds ``dagster/row_count``, its rows in the
table after its sync.
"""

from __future__ import annotations

from collections.abc import Mapping

import dagster as dg
import sqlalchemy as sa

from .warehouse.schema import ExactDecimal, UtcDateTime

COLUMN_SCHEMA = "dagster/column_schema"
ROW_COUNT = "dagster/row_count"
TABLE_NAME = "dagster/table_name"


# First match wins: BigInteger is an Integer, Text a String.
_TYPE_NAMES = (
    (sa.JSON, "json"),
    (sa.BigInteger, "bigint"),
    (sa.Integer, "integer"),
    (sa.Float, "float"),
    (sa.Boolean, "boolean"),
    (sa.Date, "date"),
    (sa.Text, "text"),
)


def column_type(kind: sa.types.TypeEngine) -> str:
    """The column's type as the warehouse means it, the same on both dialects (SQLite stores
    exact decimals as text and UTC timestamps naive, but they are decimals and UTC timestamps)."""
    if isinstance(kind, ExactDecimal):
        return f"decimal({kind.precision},{kind.scale})"
    if isinstance(kind, UtcDateTime):
        return "timestamp (UTC)"
    for base, name in _TYPE_NAMES:
        if isinstance(kind, base):
            return name
    if isinstance(kind, sa.String):
        return f"varchar({kind.length})"
    return kind.__visit_name__


def _unique_columns(table: sa.Table) -> set[str]:
    single = [c.columns for c in table.constraints if isinstance(c, sa.UniqueConstraint) and len(c.columns) == 1]
    single += [i.columns for i in table.indexes if i.unique and len(i.columns) == 1 and i.dialect_options["sqlite"]["where"] is None]
    return {column.name for columns in single for column in columns} | {c.name for c in table.columns if c.unique}


def table_schema(table: sa.Table) -> dg.TableSchema:
    """Every column of ``table``, in order; table-level unique keys as constraints."""
    unique = _unique_columns(table)
    primary = {column.name for column in table.primary_key.columns}
    columns = [
        dg.TableColumn(
            name=column.name,
            type=column_type(column.type),
            description=column.comment,
            constraints=dg.TableColumnConstraints(
                nullable=column.nullable,
                unique=column.name in unique or column.name in primary,
                other=[f"references {fk.target_fullname}" for fk in column.foreign_keys],
            ),
        )
        for column in table.columns
    ]
    keys = [
        f"unique ({', '.join(c.name for c in constraint.columns)})"
        for constraint in table.constraints
        if isinstance(constraint, sa.UniqueConstraint) and len(constraint.columns) > 1
    ]
    return dg.TableSchema(columns=columns, constraints=dg.TableConstraints(other=keys) if keys else None)


def table_definition_metadata(table: sa.Table) -> dict[str, object]:
    """For an asset spec: the table's name and column schema."""
    return {TABLE_NAME: table.name, COLUMN_SCHEMA: dg.MetadataValue.table_schema(table_schema(table))}


def row_count_metadata(counts: Mapping[str, int], table: sa.Table) -> dict[str, dg.MetadataValue]:
    """For a materialization: the company's rows in ``table``, when they were counted."""
    return {ROW_COUNT: dg.MetadataValue.int(counts[table.name])} if table.name in counts else {}
