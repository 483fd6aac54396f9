"""Peak memory of a first full sync at two sizes (default 10,000 and 100,000 documents).

    .venv/bin/python -m bench.memory [--sizes 10000 100000] [--dialects ...]

Each sync runs in a child process of its own; its peak RSS is what ``os.wait4`` reports for that
child alone (``ru_maxrss``). The sync holds a page or two at a time, so the larger company must
not need much more: target <= 1.2x.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from bench import first_sync
from bench.common import DIALECTS, SimulatorProcess, make_company, ratio, throwaway_warehouse

MAX_GROWTH = 1.2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs=2, default=[10_000, 100_000], metavar=("SMALL", "LARGE"))
    parser.add_argument("--dialects", nargs="+", choices=DIALECTS, default=list(DIALECTS))
    args = parser.parse_args()
    small, large = sorted(args.sizes)
    with SimulatorProcess() as simulator, tempfile.TemporaryDirectory(prefix="billingo-bench-") as folder:
        companies = {n: make_company(simulator, f"memory{n}", n) for n in (small, large)}
        for dialect in args.dialects:
            peaks = {}
            for n, company in companies.items():
                with throwaway_warehouse(dialect, Path(folder), f"memory-{dialect}-{n}") as url:
                    peaks[n] = first_sync.measure(url, simulator, company)["peak_rss_mb"]
            growth = ratio(peaks[large], peaks[small])
            print(f"{dialect}: peak RSS {peaks[small]:.0f} MB at {small}, {peaks[large]:.0f} MB at {large}: "
                  f"{growth:.2f}x (target <= {MAX_GROWTH}x: {'met' if growth <= MAX_GROWTH else 'MISSED'})")


if __name__ == "__main__":
    main()
