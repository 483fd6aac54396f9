"""sync progress: a running sync records how many pages and documents Billingo reports

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01

- ``sync_log.pages_total``: ``last_page`` of the newest page's envelope (pages of one pass).
- ``sync_log.documents_total``: ``total`` of the newest page's envelope (documents the sync will see).

Both are NULL until the first page arrives, and when Billingo did not report them; with
``pages_fetched`` and ``documents_fetched`` they let ``status`` and ``health`` say how far a
RUNNING sync is ("page 37/150 · 3,700 of 15,000 documents").

Plain ADD COLUMN on both dialects: a SQLite table copy would break the views that read sync_log.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

COLUMNS = (
    ("pages_total", lambda: sa.Column("pages_total", sa.Integer(), nullable=True, comment="Billingo's last_page, as reported")),
    ("documents_total", lambda: sa.Column("documents_total", sa.Integer(), nullable=True, comment="Billingo's total, as reported")),
)


def upgrade() -> None:
    for _, column in COLUMNS:
        op.add_column("sync_log", column())


def downgrade() -> None:
    for name, _ in reversed(COLUMNS):
        op.drop_column("sync_log", name)
