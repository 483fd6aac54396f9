"""Check names say what they check, not the threshold they hold: the stored outcomes follow; the
trigger column's comment lists what the code writes

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01

``error_rate_below_1_percent`` became ``error_rate_under_target`` and
``invoices_per_api_call_at_least_50`` became ``invoices_per_api_call_sufficient`` (the thresholds
live in constants of the checks module and may change without the names lying). Every stored
outcome in ``sync_log.check_results`` is renamed with them, entry untouched, so a company's check
history reads as one series under the new name; the downgrade renames them back.

``sync_log.trigger``'s comment (PostgreSQL keeps column comments; SQLite has none) names every
value a sync writes, ``demo`` and the UI's ``manual`` included.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

RENAMED = {
    "error_rate_below_1_percent": "error_rate_under_target",
    "invoices_per_api_call_at_least_50": "invoices_per_api_call_sufficient",
}

OLD_TRIGGER_COMMENT = "schedule | manual | backfill | cli | sensor"
TRIGGER_COMMENT = "schedule | sensor | backfill | manual (the UI) | cli | demo: what started the sync"


def _rename(old: str, new: str) -> None:
    # The names are fixed identifiers above, never input: inlined, as JSON paths must be on SQLite.
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            f"UPDATE sync_log SET check_results = (check_results - '{old}') || jsonb_build_object('{new}', check_results -> '{old}')"
            f" WHERE jsonb_typeof(check_results) = 'object' AND check_results ? '{old}'"
        )
    else:
        op.execute(
            f"UPDATE sync_log SET check_results = json_set(json_remove(check_results, '$.\"{old}\"'), '$.\"{new}\"',"
            f" json(json_extract(check_results, '$.\"{old}\"')))"
            f" WHERE json_type(check_results) = 'object' AND json_type(check_results, '$.\"{old}\"') IS NOT NULL"
        )


def _trigger_comment(comment: str, existing: str) -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column(
            "sync_log", "trigger", comment=comment, existing_comment=existing,
            existing_type=sa.String(32), existing_nullable=False,
        )


def upgrade() -> None:
    for old, new in RENAMED.items():
        _rename(old, new)
    _trigger_comment(TRIGGER_COMMENT, OLD_TRIGGER_COMMENT)


def downgrade() -> None:
    _trigger_comment(OLD_TRIGGER_COMMENT, TRIGGER_COMMENT)
    for old, new in RENAMED.items():
        _rename(new, old)
