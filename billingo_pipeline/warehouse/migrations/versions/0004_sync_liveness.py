"""sync liveness and lossless raw payloads

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01

- ``sync_log.heartbeat_at``: a RUNNING sync refreshes it while it is alive (every page and on a
  timer), so the next sync can tell a live sync from one whose process died, however old either is.
- ``sync_log.holder``: ``host:pid`` of the process running the sync, so a sync on the same host can
  see at once that the holder's process is gone.
- ``billingo_documents_raw.payload_verbatim``: the payload as JSON text, kept only when it cannot be
  stored as JSON as it is (a NUL character, which PostgreSQL's JSONB and text refuse, or a
  non-finite number, which JSON cannot hold); ``payload`` then holds a queryable stand-in.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from billingo_pipeline.warehouse.schema import UtcDateTime

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def _run_id_comment(comment: str, existing: str) -> None:
    # SQLite keeps no column comments; altering one there would rebuild the table under its views.
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column(
            "sync_log", "run_id", existing_type=sa.String(length=64), existing_nullable=False,
            comment=comment, existing_comment=existing,
        )


# Plain ADD/DROP COLUMN (no batch copy): SQLite can do both in place, and a table copy would
# break the reporting views that select from these tables.
def upgrade() -> None:
    op.add_column("sync_log", sa.Column("heartbeat_at", UtcDateTime(), nullable=True, comment="refreshed while the sync is alive"))
    op.add_column("sync_log", sa.Column("holder", sa.String(length=255), nullable=True, comment="host:pid of the syncing process"))
    _run_id_comment("Dagster run id", "Dagster run id (or cli-<uuid>)")
    op.add_column(
        "billingo_documents_raw",
        sa.Column(
            "payload_verbatim", sa.Text(), nullable=True,
            comment="exact JSON text, only when payload cannot hold it (NUL, non-finite numbers)",
        ),
    )


def downgrade() -> None:
    op.drop_column("billingo_documents_raw", "payload_verbatim")
    _run_id_comment("Dagster run id (or cli-<uuid>)", "Dagster run id")
    op.drop_column("sync_log", "holder")
    op.drop_column("sync_log", "heartbeat_at")
