"""The code location loads, as `dagster dev` and the webserver would load it."""

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
