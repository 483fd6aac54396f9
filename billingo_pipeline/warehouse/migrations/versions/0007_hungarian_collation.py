"""Hungarian collation: partner names sort in Hungarian alphabetical order

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01

PostgreSQL gets ``hu_hu_icu``, an ICU collation for ``hu-HU`` (the server must be built with
ICU, as the official packages are). SQLite has no persistent collations: every connection
registers one of the same name (``warehouse/engine.py``, ``warehouse/collation.py``), so this
revision does nothing there.
"""
from __future__ import annotations

from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE COLLATION IF NOT EXISTS hu_hu_icu (provider = icu, locale = 'hu-HU')")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP COLLATION IF EXISTS hu_hu_icu")
