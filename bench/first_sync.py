"""First full sync of a company into an empty warehouse, against the fetch floor of the same pages.

    .venv/bin/python -m bench.first_sync [--documents 20000] [--dialects sqlite postgresql]

The sync is ``billingo_pipeline.sync.sync_company`` as the asset calls it, in a child process of its
own (its wall is taken around the call; its peak RSS is the child's). The floor reads the same
simulator's document pages in another child (bench/fetch_floor.py); it is compared with the sync's
documents sweep (its ``sync_log_endpoints`` row: those pages fetched, normalized and written), as
the sync also reads the other endpoints and the payment histories, which the floor does not.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from bench.common import (
    DIALECTS,
    BenchCompany,
    SimulatorProcess,
    make_company,
    ratio,
    register,
    run_child,
    seconds,
    throwaway_warehouse,
)
from bench import fetch_floor


def measure(warehouse_url: str, simulator: SimulatorProcess, company: BenchCompany) -> dict[str, Any]:
    """Register ``company`` in the (empty) warehouse and sync it once; wall, sync-log row, peak RSS."""
    register(warehouse_url, simulator, [company])
    child = run_child("bench.common:sync_once", warehouse_url=warehouse_url, base_url=simulator.base_url,
                      slug=company.slug)
    if child.value["status"] != "COMPLETED":
        raise RuntimeError(f"the first sync of {company.slug} ended {child.value['status']}")
    return {**child.value, "peak_rss_mb": child.peak_rss_mb, "process_wall": child.process_wall_seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=20_000)
    parser.add_argument("--dialects", nargs="+", choices=DIALECTS, default=list(DIALECTS))
    args = parser.parse_args()
    with SimulatorProcess() as simulator, tempfile.TemporaryDirectory(prefix="billingo-bench-") as folder:
        company = make_company(simulator, f"first{args.documents}", args.documents)
        floor = fetch_floor.measure(simulator.base_url, company.api_key)
        print(f"fetch floor: {seconds(floor['wall'])}")
        for dialect in args.dialects:
            with throwaway_warehouse(dialect, Path(folder), f"first-{dialect}") as url:
                sync = measure(url, simulator, company)
            print(f"{dialect}: first sync of {args.documents} documents: documents sweep {seconds(sync['documents_seconds'])} "
                  f"({ratio(sync['documents_seconds'], floor['wall']):.2f}x the floor), whole sync {seconds(sync['wall'])} "
                  f"({sync['api_calls']} document API calls, other endpoints {sync['endpoint_calls']}, "
                  f"{sync.get('payment_history_calls') or 0} payment histories), peak RSS {sync['peak_rss_mb']:.0f} MB")


if __name__ == "__main__":
    main()
