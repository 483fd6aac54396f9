"""How fast the simulator serves full pages (speed targets live here, not in unit tests).

    .venv/bin/python bench/simulator_pages.py [--pages 200]

Target: a 100-document page in well under 50 ms, so the simulator never dominates a sync
benchmark (Billingo itself allows ~300 requests/minute per key, i.e. one page per 200 ms).
"""

from __future__ import annotations

import argparse
import statistics
import time

import requests

from billingo_pipeline.simulator import BillingoSimulator, generate_api_key


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=200)
    args = parser.parse_args()
    key = generate_api_key("bench")
    with BillingoSimulator(rate_limit_per_minute=1_000_000) as sim:
        sim.add_organization(key, name="Bench Kft.", seed=1, document_count=1000)
        with requests.Session() as session:
            session.headers["X-API-KEY"] = key
            timings = []
            for number in range(args.pages):
                started = time.perf_counter()
                response = session.get(sim.base_url + "/documents", params={"per_page": 100, "page": number % 10 + 1})
                response.raise_for_status()
                timings.append((time.perf_counter() - started) * 1000)
    timings.sort()
    print(f"{args.pages} pages of 100 documents: median {statistics.median(timings):.1f} ms, "
          f"p95 {timings[int(len(timings) * 0.95) - 1]:.1f} ms, max {timings[-1]:.1f} ms")


if __name__ == "__main__":
    main()
