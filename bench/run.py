"""Every benchmark in one run, with the ratios the targets are about (``make bench``).

    make bench                                   # the full run: the figures of docs/performance.md
    make bench BENCH_ARGS="--quick"              # a smoke version in about two minutes
    make bench BENCH_ARGS="--quick --write-docs" # and record its table in docs/performance.md
    .venv/bin/python -m bench.run --help         # sizes, dialects, layouts, what to run

All figures of one run come from the same machine in the same minutes, and every ratio divides
two figures of that run. One simulator process serves every measurement (bench/common.py says
why it is a process of its own); each sync, dlt load and floor runs in a fresh child process.
Targets are printed next to the figures with "met"/"MISSED"; a missed target does not change the
exit code (a loaded machine is not a failure); a measurement that fails is noted in its table, the
others still run, and the run exits 1.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import dlt_load, fetch_floor, first_sync, many_companies, memory, nightly
from bench.common import (
    DIALECTS,
    REPO_ROOT,
    Report,
    SimulatorProcess,
    ensure_fernet_key,
    machine_line,
    make_company,
    ratio,
    seconds,
    throwaway_warehouse,
)

MEASUREMENTS = ("first_sync", "dlt", "nightly", "many_companies", "memory")
# The speed targets (docs/performance.md), next to the figures they judge.
MIN_DLT_SPEEDUP = 3.0
MAX_FLOOR_RATIO = 2.0
MAX_POSTGRES_RATIO = 1.25

PROFILES: dict[str, dict[str, Any]] = {
    "full": {"sizes": [20_000, 100_000], "memory_sizes": [10_000, 100_000], "companies": 200, "company_documents": 500},
    # Every measurement at sizes where fixed costs still show: a smoke run, not figures to quote.
    "quick": {"sizes": [1_000, 3_000], "memory_sizes": [1_000, 3_000], "companies": 20, "company_documents": 100},
}
DOCS = REPO_ROOT / "docs" / "performance.md"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run of every measurement")
    parser.add_argument("--sizes", type=int, nargs="+", help="first-sync sizes (documents); the largest is the nightly's")
    parser.add_argument("--memory-sizes", type=int, nargs=2, metavar=("SMALL", "LARGE"))
    parser.add_argument("--companies", type=int, help="companies of the many-companies run")
    parser.add_argument("--company-documents", type=int, help="documents per company of the many-companies run")
    parser.add_argument("--payments", type=int, default=50, help="invoices paid before the second nightly")
    parser.add_argument("--layout", choices=sorted(many_companies.LAYOUTS), default="schedule",
                        help="run layout of the many-companies run (bench/many_companies.py)")
    parser.add_argument("--dialects", nargs="+", choices=DIALECTS, default=list(DIALECTS))
    parser.add_argument("--only", nargs="+", choices=MEASUREMENTS, default=list(MEASUREMENTS))
    parser.add_argument("--write-docs", action="store_true",
                        help=f"replace this profile's section of {DOCS.relative_to(REPO_ROOT)} with the tables")
    return parser


def _whole_sync(sync) -> str:
    others = ", ".join(f"{name} {calls}" for name, calls in sync.get("endpoint_calls", {}).items())
    histories = sync.get("payment_history_calls") or 0
    return (f"{seconds(sync['wall'])} (API calls: documents {sync['api_calls']}"
            + (f", {others}" if others else "") + f", payment histories {histories})")


def first_sync_reports(args, results, floors, dlt_results) -> Report:
    report = Report("First full sync (empty warehouse)")
    for n in args.sizes:
        floor = floors[n]["wall"]
        report.add(f"fetch floor, {n:,} documents ({floors[n]['pages']} pages)", seconds(floor))
        for dialect in args.dialects:
            sync = results[dialect][n]
            # The floor and dlt read the documents only: they are compared with the sync's
            # documents sweep; the whole first sync also reads the other endpoints and the
            # payment histories it is due (a row of its own).
            documents = sync["documents_seconds"]
            report.add(f"{dialect}: sync, {n:,} documents (the documents sweep)", seconds(documents))
            report.add(f"{dialect}: whole first sync, {n:,} documents", _whole_sync(sync))
            within = ratio(documents, floor)
            report.add(f"{dialect}: sync / fetch floor, {n:,}", f"{within:.2f}x", f"<= {MAX_FLOOR_RATIO}x",
                       within <= MAX_FLOOR_RATIO)
            loaded = dlt_results.get(dialect, {}).get(n)
            if loaded is not None:
                speedup = ratio(loaded["wall"], documents)
                report.add(f"{dialect}: dlt rest_api, {n:,} documents", seconds(loaded["wall"]))
                report.add(f"{dialect}: dlt / sync, {n:,}", f"{speedup:.2f}x", f">= {MIN_DLT_SPEEDUP}x",
                           speedup >= MIN_DLT_SPEEDUP)
        if set(DIALECTS) <= set(args.dialects):
            pg = ratio(results["postgresql"][n]["documents_seconds"], results["sqlite"][n]["documents_seconds"])
            report.add(f"PostgreSQL / SQLite, {n:,}", f"{pg:.2f}x", f"<= {MAX_POSTGRES_RATIO}x", pg <= MAX_POSTGRES_RATIO)
    return report


def nightly_report(args, nightlies) -> Report:
    n = max(args.sizes)
    report = Report(f"Nightly sync of a {n:,}-document company")
    if n != 100_000:
        report.note("the targets are for 100,000 documents; at this size they only show the trend")
    for dialect, night in nightlies.items():
        unchanged, after = night["unchanged"], night["after_payments"]
        if night["paid"] < args.payments:
            report.note(f"{dialect}: only {night['paid']} open invoices were left to pay (of {args.payments} asked)")
        report.add(f"{dialect}: unchanged, API calls", str(unchanged["api_calls"]),
                   f"<= {nightly.UNCHANGED_MAX_API_CALLS}", unchanged["api_calls"] <= nightly.UNCHANGED_MAX_API_CALLS)
        endpoint_calls = unchanged.get("endpoint_calls", {})
        if endpoint_calls:
            report.add(f"{dialect}: unchanged, other endpoints' API calls",
                       ", ".join(f"{name} {calls}" for name, calls in endpoint_calls.items()),
                       f"<= {nightly.UNCHANGED_MAX_ENDPOINT_API_CALLS} each",
                       max(endpoint_calls.values()) <= nightly.UNCHANGED_MAX_ENDPOINT_API_CALLS)
        report.add(f"{dialect}: unchanged, sync time", seconds(unchanged["wall"]),
                   f"<= {nightly.UNCHANGED_MAX_SECONDS:.0f} s", unchanged["wall"] <= nightly.UNCHANGED_MAX_SECONDS)
        report.add(f"{dialect}: after {night['paid']} payments, API calls", str(after["api_calls"]))
        if "payment_history_calls" in after:
            # One per paid invoice, plus what an earlier sync deferred over the cap (shown beside it).
            report.add(f"{dialect}: unchanged, payment-history calls (deferred left)",
                       f"{unchanged['payment_history_calls']} ({unchanged['payment_histories_deferred']})")
            report.add(f"{dialect}: after {night['paid']} payments, payment-history calls (deferred left)",
                       f"{after['payment_history_calls']} ({after['payment_histories_deferred']})",
                       f">= {night['paid']}", after["payment_history_calls"] >= night["paid"])
        report.add(f"{dialect}: after {night['paid']} payments, sync time", seconds(after["wall"]))
        report.add(f"{dialect}: after {night['paid']} payments, invoices updated", str(after["invoices_updated"]),
                   f"= {night['paid']}", after["invoices_updated"] == night["paid"])
    return report


def many_report(args, many) -> Report:
    report = Report(f"{args.companies} companies x {args.company_documents} documents, layout '{args.layout}'")
    report.note("Dagster's share = (total wall - time in which some company sync was running) / total wall, "
                "sync times from sync_log started_at/finished_at (bench/many_companies.py)")
    report.note("Dagster's floor = the nightly's run layout with no-op assets partitioned by company, on the same "
                f"instance: what Dagster alone costs, whatever the sync does, with the {many_companies.FLOOR_ASSETS} "
                "assets every company must have and with as many as the sync materializes (bench/many_companies.py); "
                f"the smallest share uses the {many_companies.FLOOR_ASSETS}")
    for dialect, (first, night) in many.items():
        report.add(f"{dialect}: first load", many_companies.describe(first))
        report.add(f"{dialect}: nightly, total wall", f"{seconds(night['wall'])} in {night['runs']} runs")
        report.add(f"{dialect}: nightly, company syncs", f"{seconds(night['sync_busy'])} (sum {seconds(night['sync_sum'])}, "
                                                       f"{night['api_calls']} API calls)")
        report.add(f"{dialect}: nightly, Dagster's share", f"{night['dagster_share']:.1%}",
                   f"<= {many_companies.MAX_DAGSTER_SHARE:.0%}", night["dagster_share"] <= many_companies.MAX_DAGSTER_SHARE)
        for floor in night["dagster_floors"]:
            report.add(f"{dialect}: Dagster's floor (the same runs, {floor['assets']} no-op assets a company)",
                       seconds(floor["wall"]))
        report.add(f"{dialect}: smallest share possible, floor / (floor + company syncs)",
                   f"{many_companies.smallest_share(night):.1%}")
    return report


def memory_report(args, results) -> Report:
    small, large = sorted(args.memory_sizes)
    report = Report("Peak memory of a first full sync (child process RSS)")
    for dialect in args.dialects:
        peaks = {n: results[dialect][n]["peak_rss_mb"] for n in (small, large)}
        growth = ratio(peaks[large], peaks[small])
        report.add(f"{dialect}: {small:,} / {large:,} documents", f"{peaks[small]:.0f} MB / {peaks[large]:.0f} MB")
        report.add(f"{dialect}: growth", f"{growth:.2f}x", f"<= {memory.MAX_GROWTH}x", growth <= memory.MAX_GROWTH)
    return report


class Failures:
    """Measurements that failed: the others still run and print; the run then exits 1."""

    def __init__(self) -> None:
        self.messages: dict[str, list[str]] = {}

    @contextlib.contextmanager
    def recorded(self, measurement: str, dialect: str):
        try:
            yield
        except Exception as exc:
            last = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            message = f"{dialect}: ERROR, not measured: {last.strip()}"
            self.messages.setdefault(measurement, []).append(message)
            print(f"{measurement}, {message}", file=sys.stderr, flush=True)

    def note_on(self, report: Report, measurement: str) -> None:
        for message in self.messages.get(measurement, []):
            report.note(message)


def run(args, failures: Failures) -> list[Report]:
    ensure_fernet_key()
    wanted = set(args.only)
    sync_sizes = sorted(set(args.sizes) | (set(args.memory_sizes) if "memory" in wanted else set()))
    if not wanted & {"first_sync", "nightly", "memory"}:
        sync_sizes = []
    reports: list[Report] = []
    with SimulatorProcess() as simulator, tempfile.TemporaryDirectory(prefix="billingo-bench-") as folder_name:
        folder = Path(folder_name)
        print(f"simulator at {simulator.base_url}; generating companies", flush=True)
        companies = {n: make_company(simulator, f"docs{n}", n) for n in sorted(set(sync_sizes) | set(args.sizes))}
        floors, results, nightlies, dlt_results, many = {}, {d: {} for d in args.dialects}, {}, {}, {}
        if "first_sync" in wanted or "dlt" in wanted:
            for n in args.sizes:
                floors[n] = fetch_floor.measure(simulator.base_url, companies[n].api_key)
                print(f"fetch floor, {n} documents: {seconds(floors[n]['wall'])}", flush=True)
        for dialect in args.dialects:
            for n in sync_sizes:
                with throwaway_warehouse(dialect, folder, f"{dialect}-{n}") as url:
                    results[dialect][n] = first_sync.measure(url, simulator, companies[n])
                    print(f"{dialect}: first sync, {n} documents: {seconds(results[dialect][n]['wall'])}", flush=True)
                    if "nightly" in wanted and n == max(args.sizes):
                        with failures.recorded("nightly", dialect):
                            nightlies[dialect] = nightly.measure(url, simulator, companies[n], args.payments)
                        if dialect in nightlies:
                                print(f"{dialect}: nightly unchanged {nightly.describe(nightlies[dialect]['unchanged'])}; "
                                  f"after payments {nightly.describe(nightlies[dialect]['after_payments'])}", flush=True)
            if "dlt" in wanted and dlt_load.dlt_available():
                dlt_results[dialect] = {}
                for n in args.sizes:
                    with throwaway_warehouse(dialect, folder, f"dlt-{dialect}-{n}") as url, failures.recorded("dlt", dialect):
                        dlt_results[dialect][n] = dlt_load.measure(url, simulator, companies[n], folder / f"dlt-{dialect}-{n}")
                        print(f"{dialect}: dlt, {n} documents: {seconds(dlt_results[dialect][n]['wall'])}", flush=True)
        if "many_companies" in wanted:
            tenants = many_companies.make_companies(simulator, args.companies, args.company_documents)
            for dialect in args.dialects:
                with throwaway_warehouse(dialect, folder, f"many-{dialect}") as url, \
                        failures.recorded("many_companies", dialect):
                    many[dialect] = many_companies.measure(url, simulator, tenants, args.layout)
                    print(f"{dialect}: {args.companies} companies, nightly {many_companies.describe(many[dialect][1])}",
                          flush=True)
    print(flush=True)
    if "first_sync" in wanted:
        report = first_sync_reports(args, results, floors, dlt_results)
        if "dlt" in wanted and not dlt_load.dlt_available():
            report.note(dlt_load.MISSING)
        failures.note_on(report, "dlt")
        reports.append(report)
    if "nightly" in wanted:
        reports.append(nightly_report(args, nightlies))
        failures.note_on(reports[-1], "nightly")
    if "many_companies" in wanted:
        reports.append(many_report(args, many))
        failures.note_on(reports[-1], "many_companies")
    if "memory" in wanted:
        reports.append(memory_report(args, results))
    return reports


def write_docs(profile: str, markdown: str) -> None:
    """Replace the text between this profile's markers in docs/performance.md (added at the end if absent)."""
    begin, end = f"<!-- bench:{profile}:begin -->", f"<!-- bench:{profile}:end -->"
    text = DOCS.read_text() if DOCS.exists() else "# Performance\n"
    section = f"{begin}\n{markdown}\n{end}"
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip("\n") + f"\n\n{section}\n"
    DOCS.write_text(text)
    print(f"wrote the '{profile}' section of {DOCS.relative_to(REPO_ROOT)}")


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    profile = "quick" if args.quick else "full"
    defaults = PROFILES[profile]
    customized = any(getattr(args, name) is not None for name in defaults)
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if customized:
        profile = "custom"
    if min(args.sizes + list(args.memory_sizes) + [args.companies, args.company_documents]) < 1:
        _parser().error("sizes and counts must be at least 1")
    started = time.perf_counter()
    failures = Failures()
    reports = run(args, failures)
    command = "make bench" + (f' BENCH_ARGS="{shlex.join(argv if argv is not None else sys.argv[1:])}"'
                              if (argv if argv is not None else sys.argv[1:]) else "")
    markdown = "\n\n".join([
        f"Made by `{command}` ({time.perf_counter() - started:.0f} s), {machine_line()}.",
        *(report.markdown() for report in reports),
    ])
    print(markdown)
    if args.write_docs:
        write_docs(profile, markdown)
    if failures.messages:
        raise SystemExit(f"error: {sum(map(len, failures.messages.values()))} measurement(s) failed (see the notes above)")


if __name__ == "__main__":
    main()
