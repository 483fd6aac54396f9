"""``python -m billingo_pipeline.simulator``: serve generated companies until Ctrl-C.

Example::

    python -m billingo_pipeline.simulator --port 8765 --seed 7 --company acme:120 --company globex:40 \\
        --fault server_error,times=2 --fault rate_limit,retry_after=1,after_requests=3

prints the base URL and each company's API key. Keys and data depend only on ``--seed`` and the
company name, so the same command always serves the same documents (for a given ``--today``).
"""

from __future__ import annotations

import argparse
import datetime
from typing import Any

from billingo_pipeline.simulator.server import FAULT_KINDS, BillingoSimulator, generate_api_key

# How each --fault option is converted; the names are inject_fault's keyword arguments.
_FAULT_OPTIONS: dict[str, type] = {
    "times": int, "after_requests": int, "path_prefix": str, "retry_after": int, "delay_seconds": float,
}


def _company(value: str) -> tuple[str, int]:
    name, _, count = value.partition(":")
    if not name or not count.isdigit():
        raise argparse.ArgumentTypeError(f"expected NAME:DOCUMENT_COUNT (e.g. acme:120), got {value!r}")
    return name, int(count)


def _fault(value: str) -> dict[str, Any]:
    kind, *options = value.split(",")
    if kind not in FAULT_KINDS:
        raise argparse.ArgumentTypeError(f"unknown fault kind {kind!r}; expected one of {', '.join(FAULT_KINDS)}")
    fault: dict[str, Any] = {"kind": kind}
    for option in options:
        key, _, raw = option.partition("=")
        if key not in _FAULT_OPTIONS or not raw:
            raise argparse.ArgumentTypeError(f"bad fault option {option!r}; expected KEY=VALUE with KEY one of "
                                             f"{', '.join(_FAULT_OPTIONS)}")
        try:
            fault[key] = _FAULT_OPTIONS[key](raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"bad value for fault option {key}: {raw!r}") from None
    return fault


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m billingo_pipeline.simulator", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    parser.add_argument("--seed", default="1", help="seed for API keys and documents (default: 1)")
    parser.add_argument("--company", type=_company, action="append", default=[], metavar="NAME:COUNT",
                        help="a company and its number of documents; repeatable (default: demo:100)")
    parser.add_argument("--no-subscription", action="append", default=[], metavar="NAME",
                        help="answer 402 for this company (repeatable)")
    parser.add_argument("--today", type=datetime.date.fromisoformat, help="simulated date, YYYY-MM-DD")
    parser.add_argument("--rate-limit", type=int, default=300, help="requests per window and key (default: 300)")
    parser.add_argument("--rate-window", type=float, default=60.0, help="window length in seconds (default: 60)")
    parser.add_argument("--fault", type=_fault, action="append", default=[], metavar="KIND[,KEY=VALUE...]",
                        help=f"inject a fault; KIND is one of {', '.join(FAULT_KINDS)}; "
                             f"KEY is one of {', '.join(_FAULT_OPTIONS)} (repeatable)")
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    companies = args.company or [("demo", 100)]
    unknown = set(args.no_subscription) - {name for name, _ in companies}
    if unknown:
        _parser().error(f"--no-subscription names unknown companies: {', '.join(sorted(unknown))}")
    simulator = BillingoSimulator(args.rate_limit, args.rate_window, args.today, faults=args.fault,
                                  verbose=args.verbose)
    keys = {}
    for name, count in companies:
        keys[name] = generate_api_key(f"{args.seed}:{name}")
        simulator.add_organization(keys[name], name=f"{name.capitalize()} Kft.", seed=f"{args.seed}:{name}",
                                   document_count=count, has_subscription=name not in args.no_subscription)
    base_url = simulator.start(args.port)
    print(f"Billingo simulator listening on {base_url}", flush=True)
    for name, count in companies:
        print(f"  {name}: {count} documents, X-API-KEY: {keys[name]}", flush=True)
    print("Press Ctrl-C to stop.", flush=True)
    simulator.serve_until_interrupted()


if __name__ == "__main__":
    main()
