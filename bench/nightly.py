"""The nightly sync of a company already synced: unchanged, then after payments.

    .venv/bin/python -m bench.nightly [--documents 100000] [--payments 50] [--dialects ...]

Each sync is ``sync_company`` in its own child process, in the sync's default mode (the engine
decides between an incremental and a full sweep, as it would at night). Between the two syncs the
simulator's ``pay_document`` marks ``--payments`` open invoices paid, as the company's accountant
would during the day; the second sync must update exactly those, and fetch the payment history
of each (one ``GET /documents/{id}/payments`` per document whose payment status changed, counted
apart from the sweep's API calls).
Targets (at 100,000 documents): unchanged in <= 2 API calls for the clock and the documents, <= 5
for each other endpoint (partners, blocks and bank accounts take a page; the unpaid spendings, about
a tenth of the simulator's 5,000 bills, take 5), and <= 3 s of sync time; after the payments, one
payment-history call per paid invoice. The first sync marks every partially paid document's
history due and fetches up to ``BILLINGO_PAYMENT_HISTORIES_PER_SYNC`` (200) of them a sync, the
longest-waiting first: the nights after it spend up to 200 calls a night on that backlog until it
is fetched. The nightly figures are the steady state after it: one uncapped sync fetches the
backlog first (its calls are shown).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
from pathlib import Path
from collections.abc import Iterator
from typing import Any

from bench import first_sync
from billingo_pipeline.settings import PAYMENT_HISTORIES_PER_SYNC_ENV
from bench.common import DIALECTS, BenchCompany, SimulatorProcess, make_company, run_child, seconds, throwaway_warehouse

UNCHANGED_MAX_API_CALLS = 2  # the clock and the documents (the sync-log row's api_calls)
UNCHANGED_MAX_ENDPOINT_API_CALLS = 5  # each endpoint after the documents
UNCHANGED_MAX_SECONDS = 3.0


def _sync(warehouse_url: str, simulator: SimulatorProcess, company: BenchCompany) -> dict[str, Any]:
    child = run_child("bench.common:sync_once", warehouse_url=warehouse_url, base_url=simulator.base_url,
                      slug=company.slug)
    return {**child.value, "peak_rss_mb": child.peak_rss_mb}


def measure(warehouse_url: str, simulator: SimulatorProcess, company: BenchCompany, payments: int) -> dict[str, Any]:
    """``company`` must already be synced into ``warehouse_url`` (bench/first_sync.py). First the
    first sync's backlog of payment histories is fetched in one uncapped sync, as the nights after
    a first sync would in turns of the cap; then the two nightly syncs are measured."""
    with _environment(PAYMENT_HISTORIES_PER_SYNC_ENV, "100000"):  # the most the setting takes
        backlog = _sync(warehouse_url, simulator, company)
    unchanged = _sync(warehouse_url, simulator, company)
    paid = simulator.pay_unpaid(company.api_key, payments)
    after = _sync(warehouse_url, simulator, company)
    return {"backlog": backlog, "unchanged": unchanged, "after_payments": after, "paid": len(paid)}


@contextlib.contextmanager
def _environment(name: str, value: str) -> Iterator[None]:
    # The sync runs in a child process, which inherits this process's environment.
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def describe(sync: dict[str, Any]) -> str:
    mode = f", {sync['mode']}" if sync.get("mode") else ""
    payments = ""
    if "payment_history_calls" in sync:
        payments = (f" + {sync['payment_history_calls']} payment-history calls "
                    f"({sync['payment_histories_fetched']} fetched, {sync['payment_histories_deferred']} deferred)")
    others = ", ".join(f"{name} {calls}" for name, calls in sync.get("endpoint_calls", {}).items())
    return (f"{sync['api_calls']} API calls" + (f" (+ {others})" if others else "") + payments
            + f", {seconds(sync['wall'])}, {sync['invoices_updated']} updated, {sync['status']}{mode}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=100_000)
    parser.add_argument("--payments", type=int, default=50)
    parser.add_argument("--dialects", nargs="+", choices=DIALECTS, default=list(DIALECTS))
    args = parser.parse_args()
    with SimulatorProcess() as simulator, tempfile.TemporaryDirectory(prefix="billingo-bench-") as folder:
        company = make_company(simulator, f"nightly{args.documents}", args.documents)
        for dialect in args.dialects:
            with throwaway_warehouse(dialect, Path(folder), f"nightly-{dialect}") as url:
                first = first_sync.measure(url, simulator, company)
                nightly = measure(url, simulator, company, args.payments)
            backlog = nightly["backlog"]
            print(f"{dialect}: first sync {seconds(first['wall'])}; its payment-history backlog: "
                  f"{backlog.get('payment_history_calls', 0)} calls, {seconds(backlog['wall'])}; "
                  f"unchanged nightly: {describe(nightly['unchanged'])}; "
                  f"after {nightly['paid']} payments: {describe(nightly['after_payments'])}")


if __name__ == "__main__":
    main()
