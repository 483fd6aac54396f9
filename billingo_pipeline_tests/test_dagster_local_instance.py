"""The local Dagster instance: the repository's top-level dagster.yaml works with no server.

`dagster dev` in the checkout reads it in two ways: from DAGSTER_HOME (a folder holding a copy, as
the demo's .demo/dagster_home does), and, with DAGSTER_HOME unset, from the current directory
with storage in a temporary folder (``InstanceRef.from_dir(tmp, config_dir=cwd)``, as
dagster/_cli/utils.py does). Both must come up on embedded SQLite with DAGSTER_POSTGRES_URL unset,
and keep the production run queue and run monitoring of deploy/dagster.yaml.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._core.instance import InstanceRef
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster._core.storage.runs import SqliteRunStorage

REPO = Path(__file__).resolve().parents[1]
LOCAL_CONFIG = REPO / "dagster.yaml"
PRODUCTION_CONFIG = REPO / "deploy" / "dagster.yaml"


@pytest.fixture(autouse=True)
def _no_server_settings(monkeypatch):
    monkeypatch.delenv("DAGSTER_POSTGRES_URL", raising=False)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)


@dg.asset
def probe() -> int:
    return 1


def _assert_local_instance(instance: dg.DagsterInstance, storage_dir: Path) -> None:
    assert isinstance(instance.run_storage, SqliteRunStorage)
    assert Path(instance.root_directory).resolve() == storage_dir.resolve()
    coordinator = instance.run_coordinator
    assert isinstance(coordinator, QueuedRunCoordinator)
    assert coordinator.get_run_queue_config().max_concurrent_runs == 4
    assert instance.run_monitoring_enabled and instance.run_monitoring_max_runtime_seconds == 21600

    # A real round trip through the SQLite storage: a partition and a run, read back.
    instance.add_dynamic_partitions("billingo_companies", ["acme"])
    assert instance.get_dynamic_partitions("billingo_companies") == ["acme"]
    result = dg.materialize([probe], instance=instance)
    assert result.success
    assert instance.get_run_by_id(result.run_id).is_success
    assert (storage_dir / "history" / "runs.db").exists()


def test_top_level_config_loads_from_a_dagster_home_without_a_server(tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(LOCAL_CONFIG, home / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        _assert_local_instance(instance, home)


def test_top_level_config_is_read_from_the_checkout_when_dagster_home_is_unset(tmp_path):
    # What `dagster dev` does in the repository root without DAGSTER_HOME: config from the cwd,
    # storage in a throwaway folder.
    storage = tmp_path / ".tmp_dagster_home_x"
    storage.mkdir()
    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(storage), config_dir=str(REPO))) as instance:
        _assert_local_instance(instance, storage)


def test_local_and_production_configs_share_run_queue_and_monitoring():
    local = yaml.safe_load(LOCAL_CONFIG.read_text())
    production = yaml.safe_load(PRODUCTION_CONFIG.read_text())
    assert "storage" not in local
    assert production["storage"] == {"postgres": {"postgres_url": {"env": "DAGSTER_POSTGRES_URL"}}}
    for section in ("run_coordinator", "run_monitoring", "telemetry"):
        assert local[section] == production[section], section


def test_production_config_needs_its_postgres_url(tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(PRODUCTION_CONFIG, home / "dagster.yaml")
    with pytest.raises(dg.DagsterInvalidConfigError, match="DAGSTER_POSTGRES_URL"):
        dg.DagsterInstance.from_config(str(home))


def test_demo_dagster_home_holds_the_top_level_config(tmp_path, monkeypatch):
    from billingo_pipeline import demo

    monkeypatch.setattr(demo, "DEMO_DIR", tmp_path)
    monkeypatch.delenv("BILLINGO_FERNET_KEY", raising=False)
    demo._prepare_environment()
    home = tmp_path / "dagster_home"
    assert (home / "dagster.yaml").read_text() == LOCAL_CONFIG.read_text()
    with dg.DagsterInstance.from_config(str(home)) as instance:
        _assert_local_instance(instance, home)
