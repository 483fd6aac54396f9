"""The fetch floor: a plain ``requests`` loop over the simulator's pages, JSON parsed, nothing stored.

    .venv/bin/python -m bench.fetch_floor [--documents 20000]

No sync can be faster than reading the same pages: the other benchmarks divide by this.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from bench.common import SimulatorProcess, make_company, run_child, seconds

PER_PAGE = 100


def fetch_all_pages(base_url: str, api_key: str) -> dict[str, Any]:
    """Child: every page of ``GET /documents`` (100 per page) read and parsed, in order."""
    import requests

    documents = pages = 0
    with requests.Session() as session:
        session.headers["X-API-KEY"] = api_key
        started = time.perf_counter()
        page, last_page = 1, 1
        while page <= last_page:
            response = session.get(f"{base_url}/documents", params={"per_page": PER_PAGE, "page": page}, timeout=60)
            response.raise_for_status()
            envelope = response.json()
            documents += len(envelope["data"])
            last_page = envelope["last_page"]
            pages += 1
            page += 1
        wall = time.perf_counter() - started
    return {"wall": wall, "pages": pages, "documents": documents}


def measure(base_url: str, api_key: str) -> dict[str, Any]:
    child = run_child("bench.fetch_floor:fetch_all_pages", base_url=base_url, api_key=api_key)
    return {**child.value, "peak_rss_mb": child.peak_rss_mb}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=20_000)
    args = parser.parse_args()
    with SimulatorProcess() as simulator:
        company = make_company(simulator, "floor", args.documents)
        floor = measure(simulator.base_url, company.api_key)
    print(f"fetch floor, {floor['documents']} documents in {floor['pages']} pages: {seconds(floor['wall'])}")


if __name__ == "__main__":
    main()
