"""The code location loads, as `dagster dev` and the webserver would load it."""

import json
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from billingo_pipeline.definitions import defs

REPO = Path(__file__).resolve().parents[1]


def test_definitions_are_loadable():
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert keys >= {"billingo_documents_raw", "billingo_invoices", "billingo_invoice_items"}
    # The UI graph shows raw -> invoices -> items.
    assert dg.AssetKey("billingo_documents_raw") in graph.get(dg.AssetKey("billingo_invoices")).parent_keys
    assert dg.AssetKey("billingo_invoices") in graph.get(dg.AssetKey("billingo_invoice_items")).parent_keys
    assert defs.resolve_job_def("billingo_sync_job") is not None


@pytest.mark.slow  # starts a CLI process
def test_dagster_definitions_validate_command(tmp_path):
    env = {"DAGSTER_HOME": str(tmp_path), "PATH": str(Path(sys.executable).parent)}
    completed = subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=180,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "Validation successful" in completed.stdout + completed.stderr


# Each other endpoint: its raw and its normalized table.
ENTITY_ASSETS = {
    f"billingo_{name}{suffix}" for name in ("partners", "spendings", "document_blocks", "bank_accounts") for suffix in ("_raw", "")
}
ASSETS = {
    "billingo_documents_raw", "billingo_invoices", "billingo_invoice_items", "billingo_document_payments",
    "billingo_aging_report", "billingo_sync_health",
    *ENTITY_ASSETS,
}
CHECKS = {
    "billingo_invoice_items:items_add_up_to_totals",
    "billingo_invoices:unique_ids_and_invoice_numbers",
    "billingo_invoices:partner_name_present",
    "billingo_partners:invoice_partners_exist",
    "billingo_invoices:error_rate_under_target",
    "billingo_documents_raw:invoices_per_api_call_sufficient",
    "billingo_invoices:last_successful_sync_fresh",
    "billingo_document_payments:payment_history_adds_up",
}
JOBS = {"billingo_sync_job"}
SCHEDULES = {"billingo_daily_sync"}
SENSORS = {
    "billingo_company_partitions",
    "billingo_sync_health_report",
    "billingo_sync_run_failure",
    "billingo_sync_run_canceled",
    "billingo_reporting_after_sync",
}
RESOURCES = {"billingo", "warehouse", "fernet", "alerts"}


def test_the_defs_folder_holds_every_definition_once():
    repository = defs.get_repository_def()
    assert {key.to_user_string() for key in repository.asset_graph.get_all_asset_keys()} == ASSETS
    assert {
        f"{key.asset_key.to_user_string()}:{key.name}" for key in repository.asset_graph.asset_check_keys
    } == CHECKS
    assert {job.name for job in repository.get_all_jobs() if not job.name.startswith("__")} == JOBS
    assert {schedule.name for schedule in repository.schedule_defs} == SCHEDULES
    assert {sensor.name for sensor in repository.sensor_defs} == SENSORS
    assert set(repository.get_top_level_resources()) == RESOURCES


@pytest.mark.slow  # starts `dg` twice (about 10 s each)
def test_dg_checks_and_lists_the_definitions_in_the_repo_root(tmp_path):
    bin_dir = Path(sys.executable).parent
    env = {"DAGSTER_HOME": str(tmp_path), "HOME": str(tmp_path), "PATH": f"{bin_dir}:/usr/bin:/bin"}
    checked = subprocess.run(
        [str(bin_dir / "dg"), "check", "defs"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "All definitions loaded successfully" in checked.stdout + checked.stderr

    listed = subprocess.run(
        [str(bin_dir / "dg"), "list", "defs", "--json"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert listed.returncode == 0, listed.stderr
    found = json.loads(listed.stdout)
    assert {asset["asset_key"] for asset in found["assets"]} == ASSETS
    assert {check["key"] for check in found["asset_checks"]} == CHECKS
    assert {sensor["name"] for sensor in found["sensors"]} == SENSORS
    assert {resource["name"] for resource in found["resources"]} == RESOURCES
