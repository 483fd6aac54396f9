"""incremental sync: the sync log records each sync's mode and cursors

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01

- ``sync_log.mode``: ``full`` (every document; the only mode that may mark documents deleted in
  source) or ``incremental`` (documents modified since the cursor).
- ``sync_log.modified_since``: the instant an incremental sync asked Billingo for
  (``last_modified_date``, sent in Budapest time), i.e. the previous cursor minus the overlap.
- ``sync_log.cursor``: Billingo's own clock (``GET /utils/time``) when the sync started; the next
  incremental sync starts from the cursor of the newest sync that fetched completely.
- ``sync_log.normalization_revision``: what normalization built the rows; a change forces a full sweep.

Plain ADD COLUMN on both dialects: a SQLite table copy would break the views that read sync_log.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from billingo_pipeline.warehouse.schema import UtcDateTime

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

COLUMNS = (
    ("mode", lambda: sa.Column("mode", sa.String(length=16), nullable=True, comment="full | incremental")),
    ("modified_since", lambda: sa.Column("modified_since", UtcDateTime(), nullable=True, comment="last_modified_date asked for (incremental)")),
    ("cursor", lambda: sa.Column("cursor", UtcDateTime(), nullable=True, comment="Billingo's clock at the start of the sync")),
    ("normalization_revision", lambda: sa.Column("normalization_revision", sa.Integer(), nullable=True)),
)


def upgrade() -> None:
    for _, column in COLUMNS:
        op.add_column("sync_log", column())


def downgrade() -> None:
    for name, _ in reversed(COLUMNS):
        op.drop_column("sync_log", name)
