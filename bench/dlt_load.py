"""The same documents loaded by dlt's ``rest_api`` source (merge on ``id``) into the same databases:
the tool a data engineer would pick instead of this engine.

    .venv/bin/python -m bench.dlt_load [--documents 20000] [--dialects sqlite postgresql]

Needs the ``bench`` extra (``pip install -e '.[bench]'``); without dlt it says so and measures nothing.
The destination is dlt's ``sqlalchemy`` one on both databases (the same drivers as the warehouse).
Billingo's envelope is ``{"data": [...], "current_page", "last_page", ...}``: a page-number
paginator starting at 1 that stops at ``last_page``. The wall is ``pipeline.run`` (extract,
normalize, load with its merge), taken inside the child like the sync's.
"""

from __future__ import annotations

import argparse
import importlib.util
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import DIALECTS, BenchCompany, SimulatorProcess, make_company, run_child, seconds, throwaway_warehouse

MISSING = "dlt is not installed (pip install -e '.[bench]'): the dlt comparison is skipped"


def dlt_available() -> bool:
    return importlib.util.find_spec("dlt") is not None


def billingo_documents_source(base_url: str, api_key: str):
    """``GET /documents`` as a dlt rest_api source: 100 per page, merged on ``id``."""
    from dlt.sources.rest_api import rest_api_source

    return rest_api_source({
        "client": {
            "base_url": base_url.rstrip("/") + "/",
            "headers": {"X-API-KEY": api_key},
            "paginator": {"type": "page_number", "base_page": 1, "page_param": "page", "total_path": "last_page"},
        },
        "resource_defaults": {"primary_key": "id", "write_disposition": "merge"},
        "resources": [
            {"name": "documents", "endpoint": {"path": "documents", "params": {"per_page": 100}, "data_selector": "data"}},
        ],
    })


def load_with_dlt(warehouse_url: str, base_url: str, api_key: str, workdir: str) -> dict[str, Any]:
    """Child: one ``pipeline.run`` of the whole source into ``warehouse_url``."""
    import dlt

    pipeline = dlt.pipeline(
        pipeline_name="billingo_bench",
        destination=dlt.destinations.sqlalchemy(credentials=warehouse_url),
        dataset_name="billingo_dlt",
        pipelines_dir=workdir,
    )
    source = billingo_documents_source(base_url, api_key)
    started = time.perf_counter()
    pipeline.run(source)
    wall = time.perf_counter() - started
    row_counts = pipeline.last_trace.last_normalize_info.row_counts
    return {"wall": wall, "documents": row_counts.get("documents", 0),
            "rows": sum(count for table, count in row_counts.items() if not table.startswith("_dlt"))}


def measure(warehouse_url: str, simulator: SimulatorProcess, company: BenchCompany, workdir: Path) -> dict[str, Any]:
    child = run_child("bench.dlt_load:load_with_dlt", warehouse_url=warehouse_url, base_url=simulator.base_url,
                      api_key=company.api_key, workdir=str(workdir))
    if child.value["documents"] != company.document_count:
        raise RuntimeError(f"dlt loaded {child.value['documents']} of {company.document_count} documents")
    return {**child.value, "peak_rss_mb": child.peak_rss_mb, "process_wall": child.process_wall_seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=20_000)
    parser.add_argument("--dialects", nargs="+", choices=DIALECTS, default=list(DIALECTS))
    args = parser.parse_args()
    if not dlt_available():
        print(MISSING)
        return
    with SimulatorProcess() as simulator, tempfile.TemporaryDirectory(prefix="billingo-bench-") as folder:
        company = make_company(simulator, f"dlt{args.documents}", args.documents)
        for dialect in args.dialects:
            with throwaway_warehouse(dialect, Path(folder), f"dlt-{dialect}") as url:
                loaded = measure(url, simulator, company, Path(folder) / f"dlt-{dialect}")
            print(f"{dialect}: dlt loaded {loaded['documents']} documents ({loaded['rows']} rows) in {seconds(loaded['wall'])}")


if __name__ == "__main__":
    main()
