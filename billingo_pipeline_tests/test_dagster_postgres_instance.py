"""The production Dagster instance: deploy/dagster.yaml, storage on the real PostgreSQL.

A throwaway database holds Dagster's run, event-log and schedule storage (dagster-postgres) and
another one the warehouse, as in a deployment. The operator's own commands run as subprocesses
against a DAGSTER_HOME holding a copy of deploy/dagster.yaml: `billingo-pipeline company
add` (checks the key live, adds the company's partition to the instance), then `dagster asset
materialize` loads the code location and runs the sync. The run and its materializations are then
read back from PostgreSQL's own tables, not through Dagster's API.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from billingo_pipeline.defs.billingo.assets import SYNC_TABLES
from billingo_pipeline.simulator import generate_api_key
from billingo_pipeline.warehouse.engine import dispose_engines, get_engine
from billingo_pipeline.warehouse.schema import sync_log
from billingo_pipeline.warehouse.sync_log import COMPLETED

from .conftest import PG_ADMIN_URL

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SYNC_ASSETS = ("billingo_documents_raw", "billingo_invoices", "billingo_invoice_items")
SUBPROCESS_TIMEOUT_SECONDS = 180


@pytest.fixture
def throwaway_databases():
    """Two empty databases on the real server (Dagster's storage, the warehouse), dropped after."""
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    names = [f"billingo_test_{kind}_{uuid.uuid4().hex[:8]}" for kind in ("dagster", "warehouse")]
    try:
        with admin.connect() as conn:
            for name in names:
                conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as exc:
        pytest.fail(f"PostgreSQL at {PG_ADMIN_URL} is required and unreachable: {exc}")
    base = sa.make_url(PG_ADMIN_URL)
    # As the README says: the driver must be psycopg2. SQLAlchemy 2.1 maps a bare postgresql:// to
    # psycopg 3, on which dagster-postgres's `NOTIFY run_events, :id` fails at the first event.
    dagster_url = base.set(drivername="postgresql+psycopg2", database=names[0]).render_as_string(hide_password=False)
    warehouse_url = base.set(database=names[1]).render_as_string(hide_password=False)
    yield dagster_url, warehouse_url
    dispose_engines()
    with admin.connect() as conn:
        for name in names:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _run(args, env, cwd):
    completed = subprocess.run(
        args, env=env, cwd=cwd, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT_SECONDS, stdin=subprocess.DEVNULL
    )
    assert completed.returncode == 0, f"{args[:3]} exited {completed.returncode}:\n{completed.stdout}\n{completed.stderr}"
    return completed


@pytest.mark.slow
def test_code_location_runs_a_sync_on_the_postgres_instance(throwaway_databases, simulator, fernet_key, tmp_path):
    dagster_url, warehouse_url = throwaway_databases
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "deploy" / "dagster.yaml", home / "dagster.yaml")
    api_key = generate_api_key(41)
    simulator.add_organization(api_key, name="ACME Kft.", seed=41, document_count=130)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_", "BILLINGO_"))},
        "DAGSTER_HOME": str(home),
        "DAGSTER_POSTGRES_URL": dagster_url,
        "BILLINGO_WAREHOUSE_URL": warehouse_url,
        "BILLINGO_API_BASE_URL": simulator.base_url,
        "BILLINGO_FERNET_KEY": fernet_key,
    }

    _run([str(BIN / "billingo-pipeline"), "company", "add", "acme", "--name", "ACME Kft."], {**env, "BILLINGO_API_KEY": api_key}, tmp_path)
    dagster_db = sa.create_engine(dagster_url)
    try:
        with dagster_db.connect() as conn:
            tables = set(sa.inspect(conn).get_table_names())
            # Run, event-log and schedule storage all live in PostgreSQL.
            assert {"runs", "run_tags", "event_logs", "dynamic_partitions", "jobs", "job_ticks", "instigators"} <= tables
            partitions = conn.execute(sa.text("SELECT partition FROM dynamic_partitions WHERE partitions_def_name = 'billingo_companies'")).scalars().all()
            assert partitions == ["acme"]

        # cwd is the temp dir: the code location is loaded from the installed package, not the checkout.
        completed = _run(
            [str(BIN / "dagster"), "asset", "materialize", "-m", "billingo_pipeline.definitions", "--select", ",".join(SYNC_ASSETS), "--partition", "acme"],
            env,
            tmp_path,
        )
        assert api_key not in completed.stdout + completed.stderr

        with dagster_db.connect() as conn:
            [(run_id, status, job_name)] = conn.execute(sa.text("SELECT run_id, status, pipeline_name FROM runs")).all()
            assert status == "SUCCESS" and job_name == "__ASSET_JOB"
            tags = dict(conn.execute(sa.text("SELECT key, value FROM run_tags WHERE run_id = :r"), {"r": run_id}).all())
            assert tags["dagster/partition"] == "acme"
            materialized = conn.execute(
                sa.text(
                    "SELECT asset_key, partition FROM event_logs"
                    " WHERE run_id = :r AND dagster_event_type = 'ASSET_MATERIALIZATION' ORDER BY id"
                ),
                {"r": run_id},
            ).all()
            # The documents' three were selected; the sync also wrote every other endpoint's tables.
            assert sorted(materialized) == sorted((f'["{key.to_user_string()}"]', "acme") for key in SYNC_TABLES)
            event_types = set(conn.execute(sa.text("SELECT DISTINCT dagster_event_type FROM event_logs WHERE run_id = :r"), {"r": run_id}).scalars())
            # Run-level events keep their historical storage names (PIPELINE_*).
            assert {"PIPELINE_START", "STEP_SUCCESS", "PIPELINE_SUCCESS", "ASSET_CHECK_EVALUATION"} <= event_types
            events_text = "\n".join(conn.execute(sa.text("SELECT event FROM event_logs WHERE run_id = :r"), {"r": run_id}).scalars())
            assert '"documents_fetched"' in events_text and api_key not in events_text
    finally:
        dagster_db.dispose()

    # The same run wrote its sync-log row in the (PostgreSQL) warehouse.
    with get_engine(warehouse_url).connect() as conn:
        [row] = conn.execute(sa.select(sync_log)).all()
    assert (row.run_id, row.status, row.invoices_created, row.documents_fetched) == (run_id, COMPLETED, 130, 130)
