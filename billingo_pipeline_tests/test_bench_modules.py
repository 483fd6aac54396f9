"""The benchmarks (bench/, run by `make bench`) stay importable and their bookkeeping right.

Nothing here measures or times anything: speed targets live in bench/, never in tests.
"""

from __future__ import annotations

import datetime as dt
import importlib
import pkgutil

import dagster as dg
import pytest
import sqlalchemy as sa

import bench
from bench import many_companies
from bench import run as bench_run
from billingo_pipeline.partitions import ensure_company_partitions

from .conftest import DIALECTS, throwaway_instance, throwaway_postgres_database


def test_every_bench_module_imports_and_the_measurements_run_alone():
    names = sorted(m.name for m in pkgutil.iter_modules(bench.__path__))
    modules = {name: importlib.import_module(f"bench.{name}") for name in names}
    assert {"common", "fetch_floor", "first_sync", "dlt_load", "nightly", "many_companies", "memory", "run"} <= set(modules)
    standalone = {name for name, module in modules.items() if callable(getattr(module, "main", None))}
    assert {"fetch_floor", "first_sync", "dlt_load", "nightly", "many_companies", "memory", "run"} <= standalone


def test_sync_time_is_the_union_of_the_sync_intervals_not_their_sum():
    t0 = dt.datetime(2026, 12, 1, 2, 0, tzinfo=dt.timezone.utc)
    at = lambda seconds: t0 + dt.timedelta(seconds=seconds)  # noqa: E731
    # Two overlapping syncs (0-10, 5-12) and one apart (20-23): busy 12 + 3, although they sum to 20.
    assert many_companies._busy_seconds([(at(20), at(23)), (at(0), at(10)), (at(5), at(12))]) == 15
    assert many_companies._busy_seconds([]) == 0


def test_time_outside_the_syncs_is_split_by_the_phase_of_the_run_it_falls_in():
    # Night 0-30. Run a: created at 1, started at 3, syncs 5-8 and 10-12, last event 14. Run b:
    # created at 15, started at 16, one sync 18-20 overlapping nothing, last event 25.
    syncs = {"a": [(5.0, 8.0), (10.0, 12.0)], "b": [(18.0, 20.0)]}
    runs = {"a": (1.0, 3.0, 14.0), "b": (15.0, 16.0, 25.0)}
    phases = many_companies.non_sync_breakdown((0.0, 30.0), syncs, runs)
    assert phases == {"run creation": 2 + 1, "run start": 2 + 2, "between syncs": 2, "after last sync": 2 + 5,
                      "outside runs": 1 + 1 + 5}
    assert sum(phases.values()) == 30 - (3 + 2 + 2)  # everything outside the syncs, counted once


@pytest.fixture(params=DIALECTS)
def instance_on_each_storage(request):
    """A throwaway Dagster instance on embedded SQLite, or on a PostgreSQL database of its own."""
    if request.param == "sqlite":
        with throwaway_instance() as instance:
            yield instance
        return
    with throwaway_postgres_database("dagster_floor") as url:
        # dagster-postgres needs psycopg2 (its NOTIFY fails on psycopg 3).
        postgres_url = sa.make_url(url).set(drivername="postgresql+psycopg2").render_as_string(hide_password=False)
        with dg.instance_for_test(overrides={"storage": {"postgres": {"postgres_url": postgres_url}}}) as instance:
            yield instance


def test_dagster_floor_materializes_every_no_op_asset_of_every_company_in_runs_of_the_schedules_size(
    instance_on_each_storage, monkeypatch
):
    instance = instance_on_each_storage
    monkeypatch.setattr("billingo_pipeline.defs.billingo.assets.COMPANIES_PER_RUN", 2)
    slugs = ["acme", "bistro", "cafe"]
    ensure_company_partitions(instance, slugs)
    floor = many_companies.dagster_floor(instance, slugs, asset_count=3)
    assert floor["runs"] == 2 and floor["assets"] == 3 and floor["wall"] > 0
    ranges = {(r.tags["dagster/asset_partition_range_start"], r.tags["dagster/asset_partition_range_end"]): r.run_id
              for r in instance.get_runs()}
    assert sorted(ranges) == [("acme", "bistro"), ("cafe", "cafe")]
    for number in range(3):
        assert instance.get_materialized_partitions(dg.AssetKey(f"dagster_floor_{number}_of_3")) == set(slugs)
    # One planned event per asset and company of the run, as the sync's runs write them.
    for (first, last), run_id in ranges.items():
        planned = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED, limit=100)
        assert len(planned.records) == 3 * (2 if first != last else 1)
    # The smallest share: what the floor alone would be of a night whose syncs took this long.
    night = {"dagster_floors": [floor], "sync_busy": 3 * floor["wall"]}
    assert many_companies.smallest_share(night) == pytest.approx(0.25)


def test_write_docs_replaces_its_own_profile_section_and_keeps_the_rest(tmp_path, monkeypatch):
    docs = tmp_path / "performance.md"
    docs.write_text("# Performance\n\nprose\n\n<!-- bench:full:begin -->\nold full\n<!-- bench:full:end -->\n")
    monkeypatch.setattr(bench_run, "DOCS", docs)
    monkeypatch.setattr(bench_run, "REPO_ROOT", tmp_path)
    bench_run.write_docs("quick", "quick table")
    bench_run.write_docs("full", "new full")
    text = docs.read_text()
    assert "prose" in text and "old full" not in text
    assert text.count("new full") == 1 and text.count("quick table") == 1


@pytest.mark.parametrize("argv", [["--sizes", "0"], ["--companies", "0"]])
def test_sizes_below_one_are_refused_with_one_line(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        bench_run.main(argv)
    assert exc.value.code == 2
    assert "sizes and counts must be at least 1" in capsys.readouterr().err
