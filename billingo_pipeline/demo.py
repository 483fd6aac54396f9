"""`make demo`: the whole product on one machine, no server needed.

Starts the Billingo simulator, configures three companies (one serves a malformed document, so
its sync ends PARTIAL), materializes every company partition through Dagster on an embedded
SQLite instance, and prints the sync log, each sync's mode and a per-company summary. State lives
in ``.demo/``, so running it again syncs incrementally (only documents modified since the cursor
minus the overlap are fetched: the broken one, edited as the simulator starts) and `make dev`
shows it in the UI.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import sys
from decimal import Decimal
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import sqlalchemy as sa

from .admin import register_company
from .cli import format_sync_rows
from .credentials import generate_fernet_key
from .reporting.queries import REPORT_VIEWS, is_paid
from .resources import BillingoResource
from .runner import dagster_instance, run_company_syncs
from .settings import API_BASE_URL_ENV, DOTENV_FILE, FERNET_KEY_ENV, WAREHOUSE_URL_ENV
from .simulator import BillingoSimulator, generate_api_key
from .warehouse import companies as company_store
from .warehouse.engine import get_engine
from .warehouse.schema import (
    billingo_document_payments,
    billingo_invoice_items,
    billingo_invoices,
    billingo_partners,
    billingo_spendings,
    companies,
)
from .warehouse.sync_log import error_subject, sync_rows

DEMO_DIR = Path(os.environ.get("BILLINGO_DEMO_DIR", ".demo")).resolve()
LOCAL_DAGSTER_CONFIG = Path(__file__).resolve().parents[1] / "dagster.yaml"
# Next to the demo folder (the checkout, for `make demo`), where the CLI and `dagster dev` look.
ENV_FILE = DEMO_DIR.parent / DOTENV_FILE
# The first line of a .env the demo wrote: only such a file is rewritten by the next demo run.
ENV_FILE_MARKER = "# Written by `make demo`"
# `make dev` serves the demo's simulator here (Makefile DEV_SIMULATOR_PORT), so a CLI sync reaches it.
DEV_SIMULATOR_PORT = int(os.environ.get("DEV_SIMULATOR_PORT") or 8765)
# Billingo's clock runs this far ahead of the generated history (stamped up to a minute before the
# simulator starts), so a re-run within a couple of minutes finds that history older than the
# cursor minus the 10-minute overlap, as it would be on a real account.
HISTORY_AGE = dt.timedelta(minutes=12)


@dataclass(frozen=True)
class DemoCompany:
    slug: str
    name: str
    seed: int
    documents: int
    malformed_document: bool = False


DEMO_COMPANIES = (
    DemoCompany("acme-kft", "ACME Kereskedelmi Kft.", seed=11, documents=240),
    DemoCompany("duna-trade", "Duna Trade Zrt.", seed=22, documents=130),
    DemoCompany("balaton-bistro", "Balaton Bisztró Bt.", seed=33, documents=60, malformed_document=True),
)


def _prepare_environment() -> str:
    """Demo-only state under .demo/: a Dagster home, a SQLite warehouse and a Fernet key file."""
    dagster_home = DEMO_DIR / "dagster_home"
    dagster_home.mkdir(parents=True, exist_ok=True)
    # The checkout's local instance config, so `make dev` over this home queues and monitors runs
    # as production does; a non-editable install has no checkout to copy it from.
    if LOCAL_DAGSTER_CONFIG.is_file():
        shutil.copyfile(LOCAL_DAGSTER_CONFIG, dagster_home / "dagster.yaml")
    else:
        (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\nnux:\n  enabled: false\n")
    os.environ["DAGSTER_HOME"] = str(dagster_home)
    key_file = DEMO_DIR / "fernet.key"
    if not key_file.exists():
        # A real deployment keeps this key in a secret store and passes it as an environment variable.
        key_file.write_text(generate_fernet_key())
        key_file.chmod(0o600)
    # The demo always uses its own key: its companies were encrypted with it on the first run.
    os.environ[FERNET_KEY_ENV] = key_file.read_text().strip()
    return f"sqlite:///{DEMO_DIR / 'warehouse.db'}"


def _env_file_text(warehouse_url: str) -> str:
    values = {
        WAREHOUSE_URL_ENV: warehouse_url,
        "DAGSTER_HOME": os.environ["DAGSTER_HOME"],
        FERNET_KEY_ENV: os.environ[FERNET_KEY_ENV],
        API_BASE_URL_ENV: f"http://127.0.0.1:{DEV_SIMULATOR_PORT}/v3",
    }
    for name, value in values.items():
        # Single quotes keep a value literal for python-dotenv (the CLI and Dagster both read it
        # with it); a quote inside one would end it early.
        if "'" in value or "\n" in value:
            raise ValueError(f"{name} for {ENV_FILE} holds a quote or a newline; move the demo folder")
    lines = [
        f"{ENV_FILE_MARKER} for its state in {DEMO_DIR}; each demo run rewrites it.",
        "# Delete this first line to keep your own edits (the demo then leaves the file alone).",
        f"# The simulator answers on {values[API_BASE_URL_ENV]} while `make dev` runs.",
        *(f"{name}='{value}'" for name, value in values.items()),
    ]
    return "\n".join(lines) + "\n"


def _write_env_file(warehouse_url: str) -> str:
    """The demo's settings in ENV_FILE, readable by its owner only (it holds the Fernet key), so
    `billingo-pipeline` and `dagster dev` run in the checkout see the demo's warehouse, Dagster
    home and key with nothing exported. Returns what to tell the user (never the key)."""
    names = f"{WAREHOUSE_URL_ENV}, DAGSTER_HOME, {FERNET_KEY_ENV}, {API_BASE_URL_ENV}"
    if ENV_FILE.exists() and not ENV_FILE.read_text(errors="replace").startswith(ENV_FILE_MARKER):
        return (
            f"note: {ENV_FILE} exists and was not written by the demo, so it was left as it is: commands run in "
            f"{ENV_FILE.parent} will not see the demo's state. To use the demo, move that file away and run "
            f"`make demo` again, or set {names} in it yourself (the Fernet key is in {DEMO_DIR / 'fernet.key'})."
        )
    temporary = ENV_FILE.with_name(ENV_FILE.name + ".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(_env_file_text(warehouse_url))
    temporary.chmod(0o600)  # also when an earlier, wider file was truncated in place
    os.replace(temporary, ENV_FILE)
    return f"wrote {ENV_FILE} ({names}): commands run in {ENV_FILE.parent} use the demo's state."


def _start_simulator(port: int = 0) -> BillingoSimulator:
    simulator = BillingoSimulator()
    for company in DEMO_COMPANIES:
        simulator.add_organization(
            generate_api_key(company.seed), name=company.name, seed=company.seed, document_count=company.documents
        )
    simulator.shift_clock(HISTORY_AGE)
    for company in DEMO_COMPANIES:
        api_key = generate_api_key(company.seed)
        if company.malformed_document:
            # One document whose amount is not a number, as a broken upstream record would be. The
            # edit is stamped now, so every run's sync fetches it (and fails it) again.
            documents = simulator.documents(api_key)
            victim = documents[len(documents) // 2]
            simulator.corrupt_document(api_key, victim["id"], "gross_total", "12.700,00 Ft")
    simulator.start(port)
    return simulator


def serve_simulator(port: int) -> None:
    """The demo's simulator on a fixed port, for `make dev` (UI materializations reach it)."""
    simulator = _start_simulator(port)
    print(f"demo Billingo simulator on {simulator.base_url} (Ctrl-C to stop)", flush=True)
    simulator.serve_until_interrupted()


def _summary(engine: sa.Engine) -> pd.DataFrame:
    """Documents, partners and incoming bills per company. "open" are the open receivables of the reporting views: drafts,
    proformas, cancellations and documents with payment status ``none`` are not owed money.
    "paid" is ``is_paid``, as in ``invoices --status paid``: a cancelled invoice is not paid.
    "part-paid" are the open ones Billingo says are partially paid, "payments" the rows of their
    fetched payment histories, and "open HUF" what the open receivables still owe, net of the
    recorded part payments (``report_receivables.open_huf_minor``), exactly."""
    inv, items, payments = billingo_invoices, billingo_invoice_items, billingo_document_payments
    receivables = REPORT_VIEWS["report_receivables"].table.c

    def documents_where(condition: sa.ColumnElement[bool]) -> sa.ColumnElement[int]:
        return sa.func.count(sa.case((condition, inv.c.id)))

    query = (
        sa.select(
            companies.c.slug.label("company"),
            sa.func.count(inv.c.id).label("invoices"),
            documents_where(is_paid(inv.c)).label("paid"),
            documents_where(inv.c.cancelled.is_(True)).label("cancelled"),
            documents_where(inv.c.currency != "HUF").label("non-HUF"),
        )
        .select_from(companies.outerjoin(inv, inv.c.company_id == companies.c.id))
        .group_by(companies.c.slug)
        .order_by(companies.c.slug)
    )
    with engine.connect() as conn:
        frame = pd.DataFrame([dict(r._mapping) for r in conn.execute(query)])
        item_counts = _rows_per_company(conn, items)
        open_figures = {
            row.company_slug: row
            for row in conn.execute(
                sa.select(
                    receivables.company_slug,
                    sa.func.count(sa.case((receivables.is_open, 1))).label("open"),
                    sa.func.count(sa.case((sa.and_(receivables.is_open, receivables.is_partially_paid), 1))).label("part_paid"),
                    sa.func.sum(receivables.open_huf_minor).label("open_huf_minor"),
                ).group_by(receivables.company_slug)
            )
        }
        payment_counts = _rows_per_company(conn, payments)
        partners, spendings = (_live_rows(conn, table) for table in (billingo_partners, billingo_spendings))
        open_spendings = _live_rows(conn, billingo_spendings, billingo_spendings.c.paid_at.is_(None))
    slugs = list(frame["company"])

    def figure(slug: str, name: str):
        row = open_figures.get(slug)
        return 0 if row is None or getattr(row, name) is None else getattr(row, name)

    frame.insert(2, "line items", frame["company"].map(item_counts))
    frame.insert(4, "open", [figure(slug, "open") for slug in slugs])
    frame.insert(5, "part-paid", [figure(slug, "part_paid") for slug in slugs])
    frame["payments"] = [payment_counts.get(slug, 0) for slug in slugs]
    frame["open HUF"] = [(Decimal(int(figure(slug, "open_huf_minor"))) / 100).quantize(Decimal("0.01")) for slug in slugs]
    frame["partners"] = [partners.get(slug, 0) for slug in slugs]
    frame["spendings"] = [spendings.get(slug, 0) for slug in slugs]
    frame["unpaid spendings"] = [open_spendings.get(slug, 0) for slug in slugs]
    return frame


def _rows_per_company(conn: sa.Connection, table: sa.Table) -> dict[str, int]:
    """Rows per company slug, 0 for a company with none."""
    return dict(
        conn.execute(
            sa.select(companies.c.slug, sa.func.count(table.c.id))
            .select_from(companies.outerjoin(table, table.c.company_id == companies.c.id))
            .group_by(companies.c.slug)
        ).all()
    )


def _live_rows(conn: sa.Connection, table: sa.Table, *conditions: sa.ColumnElement[bool]) -> dict[str, int]:
    """Rows per company slug that Billingo still returns (not deleted in source)."""
    return dict(
        conn.execute(
            sa.select(companies.c.slug, sa.func.count())
            .select_from(table.join(companies, companies.c.id == table.c.company_id))
            .where(table.c.deleted_in_source_at.is_(None), *conditions)
            .group_by(companies.c.slug)
        ).all()
    )


def _describe_mode(row: dict) -> str:
    """One sync-log row's mode, in words: a full sweep, or incremental from which instant."""
    fetched = f"{row['documents_fetched']} fetched"
    if row["mode"] != "incremental":
        return f"{row['mode']}: {fetched}"
    since = row["modified_since"]
    since = since.replace(tzinfo=dt.timezone.utc) if since.tzinfo is None else since.astimezone(dt.timezone.utc)
    return f"incremental since {since:%Y-%m-%d %H:%M:%S} UTC: {fetched}"


def main() -> int:
    warehouse_url = _prepare_environment()
    engine = get_engine(warehouse_url)
    print(_write_env_file(warehouse_url))
    simulator = _start_simulator()
    try:
        print(f"Billingo simulator listening on {simulator.base_url}")
        for company in DEMO_COMPANIES:
            try:
                company_store.get_company(engine, company.slug)
            except company_store.UnknownCompanyError:
                register_company(
                    engine, company.slug, company.name, generate_api_key(company.seed), api_base_url=simulator.base_url
                )
                print(f"configured company '{company.slug}' (API key checked live against the simulator, stored encrypted)")
        started = dt.datetime.now(dt.timezone.utc)
        results = run_company_syncs(
            [c.slug for c in DEMO_COMPANIES],
            warehouse_url=warehouse_url,
            billingo=BillingoResource(base_url=simulator.base_url, backoff_seconds=0.2),
            instance=dagster_instance(),
            trigger="demo",
        )
    finally:
        simulator.stop()

    this_run = [r for r in sync_rows(engine, limit=50) if r["started_at"] >= started]
    print("\nSync log (this demo run):")
    print(format_sync_rows(this_run))
    for row in this_run:
        for error in row["errors"][:5]:
            print(f"  {row['company']}: {error_subject(error)}: {error['message']}")
    print("\nSync modes:")
    for row in this_run:
        print(f"  {row['company']}: {_describe_mode(row)}")
    print("\nWarehouse summary:")
    print(_summary(engine).to_string(index=False))
    print(
        f"\nState kept in {DEMO_DIR}. Run `make demo` again for an incremental sync (only documents modified"
        " since the last sync, minus the overlap, are fetched), or `make dev` to open the Dagster UI on it."
    )
    return 0 if all(r.success for r in results) else 1


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "serve-simulator":
        serve_simulator(int(sys.argv[2]))
    else:
        raise SystemExit(main())
