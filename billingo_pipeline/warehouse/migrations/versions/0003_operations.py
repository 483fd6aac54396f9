"""operations: one running sync per company, sync_health and sync_metrics views

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25

- ``ux_sync_log_company_id_running``: a partial unique index, so a company can have at most one
  RUNNING sync-log row, whichever run layout started it (``sync_log.start_sync`` turns a violation
  into a clear message and takes over rows of runs that died long ago).
- ``sync_health``: one row per company the pipeline is meant to sync (flag on, active) with its
  GREEN / YELLOW / RED health and the reasons. ``billingo_pipeline.health.company_health`` applies
  the same rules in Python for the CLI and the Dagster UI; a test keeps the two equal.
- ``sync_metrics``: per company and UTC day (of the sync's start): success rate, median duration,
  invoices per API call, error rate, with the counts they come from.

The thresholds and reason texts are written out here, not imported: a migration must keep
producing the same view when the code changes later; a later rule change is a new migration.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

RUNNING_INDEX = "ux_sync_log_company_id_running"
VIEW_NAMES = ("sync_metrics", "sync_health")

YELLOW_AFTER_HOURS = 24
RED_AFTER_HOURS = 48

# (flag column, condition over the `facts` columns, reason), in the order reasons are listed.
RED_RULES = (
    ("red_no_key", "NOT key_configured", "no API key configured"),
    ("red_never_synced", "last_success_at IS NULL", "never synced successfully"),
    ("red_stale", f"last_success_age_hours > {RED_AFTER_HOURS}", "last successful sync more than 48 h ago"),
    ("red_failed", "last_sync_status = 'FAILED'", "last sync FAILED"),
    ("red_all_errors", "last_sync_errors = 'all'", "every document failed in the last sync"),
)
YELLOW_RULES = (
    (
        "yellow_stale",
        f"last_success_age_hours >= {YELLOW_AFTER_HOURS} AND last_success_age_hours <= {RED_AFTER_HOURS}",
        "last successful sync 24-48 h ago",
    ),
    ("yellow_partial", "last_sync_status = 'PARTIAL'", "last sync PARTIAL"),
    ("yellow_some_errors", "last_sync_errors = 'some'", "some documents failed in the last sync"),
)


def _age_hours(dialect: str, column: str) -> str:
    if dialect == "sqlite":
        # UtcDateTime is stored as naive UTC text, which julianday() reads as UTC.
        return f"((julianday('now') - julianday({column})) * 24.0)"
    return f"(CAST(EXTRACT(EPOCH FROM (CURRENT_TIMESTAMP - {column})) AS DOUBLE PRECISION) / 3600.0)"


def _utc_date(dialect: str, column: str) -> str:
    if dialect == "sqlite":
        return f"date({column})"
    return f"CAST(({column} AT TIME ZONE 'UTC') AS DATE)"


def _sync_health_sql(dialect: str) -> str:
    rules = RED_RULES + YELLOW_RULES
    flags = ",\n        ".join(f"CASE WHEN {condition} THEN 1 ELSE 0 END AS {flag}" for flag, condition, _ in rules)
    any_red = " + ".join(flag for flag, _, _ in RED_RULES)
    any_yellow = " + ".join(flag for flag, _, _ in YELLOW_RULES)
    # '; reason' per rule that holds, the leading '; ' cut off; NULL when there is none (GREEN).
    reasons = " || ".join(f"CASE WHEN {flag} = 1 THEN '; {reason}' ELSE '' END" for flag, _, reason in rules)
    return f"""
CREATE VIEW sync_health AS
WITH finished AS (
    SELECT s.company_id, s.status, s.started_at, s.finished_at, s.invoices_processed, s.invoices_failed,
        s.error_message,
        ROW_NUMBER() OVER (PARTITION BY s.company_id ORDER BY s.started_at DESC, s.id DESC) AS recency
    FROM sync_log s
    WHERE s.status <> 'RUNNING'
),
last_success AS (
    SELECT company_id, MAX(finished_at) AS finished_at
    FROM sync_log
    WHERE status IN ('COMPLETED', 'PARTIAL')
    GROUP BY company_id
),
running AS (
    SELECT company_id, MIN(started_at) AS started_at
    FROM sync_log
    WHERE status = 'RUNNING'
    GROUP BY company_id
),
facts AS (
    SELECT
        c.id AS company_id, c.slug AS company_slug, c.name AS company_name,
        c.api_key_encrypted IS NOT NULL AS key_configured,
        l.status AS last_sync_status,
        l.started_at AS last_sync_started_at,
        l.finished_at AS last_sync_finished_at,
        l.invoices_processed AS last_sync_documents,
        l.invoices_failed AS last_sync_failed_documents,
        CASE WHEN l.status IS NULL THEN NULL
             WHEN l.invoices_failed = 0 THEN 'none'
             WHEN l.invoices_failed >= l.invoices_processed THEN 'all'
             ELSE 'some' END AS last_sync_errors,
        l.error_message AS last_sync_error_message,
        su.finished_at AS last_success_at,
        {_age_hours(dialect, "su.finished_at")} AS last_success_age_hours,
        r.started_at AS running_since
    FROM companies c
    LEFT JOIN finished l ON l.company_id = c.id AND l.recency = 1
    LEFT JOIN last_success su ON su.company_id = c.id
    LEFT JOIN running r ON r.company_id = c.id
    WHERE c.billingo_sync_enabled AND c.is_active
),
flagged AS (
    SELECT facts.*,
        {flags}
    FROM facts
)
SELECT
    company_id, company_slug, company_name, key_configured,
    CASE WHEN {any_red} > 0 THEN 'RED' WHEN {any_yellow} > 0 THEN 'YELLOW' ELSE 'GREEN' END AS health,
    NULLIF(substr({reasons}, 3), '') AS reasons,
    last_sync_status, last_sync_started_at, last_sync_finished_at,
    last_success_at, last_success_age_hours,
    last_sync_documents, last_sync_failed_documents, last_sync_errors, last_sync_error_message,
    running_since
FROM flagged
"""


def _sync_metrics_sql(dialect: str) -> str:
    return f"""
CREATE VIEW sync_metrics AS
WITH finished AS (
    SELECT s.company_id, c.slug AS company_slug, {_utc_date(dialect, "s.started_at")} AS sync_date,
        s.status, s.duration_seconds, s.api_calls, s.documents_fetched, s.invoices_processed, s.invoices_failed
    FROM sync_log s
    JOIN companies c ON c.id = s.company_id
    WHERE s.status <> 'RUNNING'
),
ordered AS (
    SELECT company_id, sync_date, duration_seconds,
        ROW_NUMBER() OVER (PARTITION BY company_id, sync_date ORDER BY duration_seconds) AS position,
        COUNT(*) OVER (PARTITION BY company_id, sync_date) AS timed
    FROM finished
    WHERE duration_seconds IS NOT NULL
),
medians AS (
    -- The middle value, or the mean of the two middle values (no MEDIAN() on SQLite).
    SELECT company_id, sync_date, AVG(duration_seconds) AS median_duration_seconds
    FROM ordered
    WHERE position IN ((timed + 1) / 2, (timed + 2) / 2)
    GROUP BY company_id, sync_date
),
daily AS (
    SELECT company_id, company_slug, sync_date,
        COUNT(*) AS syncs,
        SUM(CASE WHEN status IN ('COMPLETED', 'PARTIAL') THEN 1 ELSE 0 END) AS successful_syncs,
        SUM(CASE WHEN status = 'FAILED' THEN 1 ELSE 0 END) AS failed_syncs,
        SUM(api_calls) AS api_calls,
        SUM(documents_fetched) AS documents_fetched,
        SUM(invoices_processed) AS documents_processed,
        SUM(invoices_failed) AS documents_failed
    FROM finished
    GROUP BY company_id, company_slug, sync_date
)
SELECT
    d.company_id, d.company_slug, d.sync_date,
    d.syncs, d.successful_syncs, d.failed_syncs,
    CAST(d.successful_syncs AS FLOAT) / d.syncs AS success_rate,
    m.median_duration_seconds,
    d.api_calls, d.documents_fetched,
    CASE WHEN d.api_calls > 0 THEN CAST(d.documents_fetched AS FLOAT) / d.api_calls END AS invoices_per_api_call,
    d.documents_processed, d.documents_failed,
    CASE WHEN d.documents_processed > 0 THEN CAST(d.documents_failed AS FLOAT) / d.documents_processed END AS error_rate
FROM daily d
LEFT JOIN medians m ON m.company_id = d.company_id AND m.sync_date = d.sync_date
"""


def upgrade() -> None:
    running = sa.text("status = 'RUNNING'")
    op.create_index(
        RUNNING_INDEX, "sync_log", ["company_id"], unique=True, sqlite_where=running, postgresql_where=running
    )
    dialect = op.get_bind().dialect.name
    op.execute(_sync_health_sql(dialect))
    op.execute(_sync_metrics_sql(dialect))


def downgrade() -> None:
    for name in VIEW_NAMES:
        op.execute(f"DROP VIEW IF EXISTS {name}")
    op.drop_index(RUNNING_INDEX, table_name="sync_log")
