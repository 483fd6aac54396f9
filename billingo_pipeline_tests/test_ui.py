"""The Dagster UI as the data team sees it: `dagster dev` on the demo's state, in headless Chromium.

The demo builds its state in a temporary folder (three synced companies, balaton-bistro PARTIAL),
`dagster dev` serves it on a free port, and Debian's Chromium (/usr/bin/chromium, installed by
`make test`) driven by Playwright opens the asset graph, the company partitions, the checks of
billingo_invoices, the run page of balaton-bistro's sync, the aging report's charts (drawn in
place, not behind a markdown link) and billingo_invoices' columns and metadata plots. Assertions are on visible text; the
screenshots (and the server's log) are kept in `.artifacts/ui/` (ignored by git) as the run's
artifacts. Every process started here is killed with its process group, even on failure.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from urllib.parse import quote
import sqlalchemy as sa

from billingo_pipeline import demo
from billingo_pipeline.billingo_client import MAX_PER_PAGE
from billingo_pipeline.defs.billingo.checks import SYNC_CHECK_SPECS

from .conftest import free_port

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / ".artifacts" / "ui"
CHROMIUM = Path("/usr/bin/chromium")
# Never `playwright install`: Playwright drives the system's Chromium. No network, GPU or sandbox
# (root in a container), no first-run or background traffic.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LOCATION = "billingo_pipeline.definitions"
DEMO_COMPANIES = tuple(company.slug for company in demo.DEMO_COMPANIES)
# (company, pages, documents) of each demo company's first sync: its last progress line.
DEMO_PROGRESS = [(c.slug, math.ceil(c.documents / MAX_PER_PAGE), c.documents) for c in demo.DEMO_COMPANIES]
SERVER_START_TIMEOUT_SECONDS = 60
PAGE_TIMEOUT_MS = 20_000
PAGE_ATTEMPTS = 2

pytestmark = pytest.mark.slow


def _stop_process_group(process: subprocess.Popen, grace_seconds: float = 5.0) -> None:
    """SIGTERM the whole group (dagster dev, its webserver, daemon and code servers), then SIGKILL."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=grace_seconds)
        except subprocess.TimeoutExpired:
            continue
        # The leader is gone; children of the group may still linger after SIGTERM.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        return


@pytest.fixture(scope="module")
def demo_ui(tmp_path_factory):
    """The demo's state and `dagster dev` serving it: yields (base URL, {company: sync row})."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs it (apt-get install chromium)")
    demo_dir = tmp_path_factory.mktemp("ui_demo")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for stale in ARTIFACTS.glob("*.png"):  # this run's screenshots only
        stale.unlink()
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_", "BILLINGO_"))}
    demo = subprocess.run(
        [sys.executable, "-m", "billingo_pipeline.demo"],
        env={**base_env, "BILLINGO_DEMO_DIR": str(demo_dir)},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert demo.returncode == 0, demo.stdout + demo.stderr
    home = demo_dir / "dagster_home"
    # The community sign-up dialog would cover every page of a fresh instance.
    with (home / "dagster.yaml").open("a") as config:
        config.write("nux:\n  enabled: false\n")
    warehouse_url = f"sqlite:///{demo_dir / 'warehouse.db'}"
    engine = sa.create_engine(warehouse_url)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT c.slug, s.run_id, s.status FROM sync_log s JOIN companies c ON c.id = s.company_id")
        ).all()
    engine.dispose()
    syncs = {slug: (run_id, status) for slug, run_id, status in rows}
    assert set(syncs) == set(DEMO_COMPANIES)

    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    log_path = ARTIFACTS / "dagster-dev.log"
    with log_path.open("w") as log:
        server = subprocess.Popen(
            [str(Path(sys.executable).parent / "dagster"), "dev", "-m", LOCATION, "-h", "127.0.0.1", "-p", str(port)],
            env={
                **base_env,
                "DAGSTER_HOME": str(home),
                "BILLINGO_WAREHOUSE_URL": warehouse_url,
                "BILLINGO_FERNET_KEY": (demo_dir / "fernet.key").read_text().strip(),
            },
            cwd=demo_dir,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # one process group: killed as a whole below
        )
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_SECONDS
        while True:
            assert server.poll() is None, f"dagster dev exited {server.returncode}:\n{log_path.read_text()[-3000:]}"
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{base_url}/server_info", timeout=2).ok:
                    break
            assert time.monotonic() < deadline, f"dagster dev not up after {SERVER_START_TIMEOUT_SECONDS}s:\n{log_path.read_text()[-3000:]}"
            time.sleep(0.5)
        yield base_url, syncs
    finally:
        _stop_process_group(server)


@pytest.fixture(scope="module")
def browser(demo_ui):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the playwright package is missing: pip install -e '.[test]' (make test does)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, timeout=30_000)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    yield page
    context.close()


def visit(page, url: str, expected: list[str], screenshot: str) -> str:
    """Open ``url`` until every ``expected`` text is visible (the UI loads data after the page),
    reloading once on a slow start; saves the screenshot either way and returns the page's text."""
    last_error: Exception | None = None
    for _attempt in range(PAGE_ATTEMPTS):
        try:
            page.goto(url, wait_until="domcontentloaded")
            for text in expected:
                # Long names are middle-truncated on screen, with the full name in a hidden copy
                # used for measuring: look for a visible element holding the text.
                page.get_by_text(text, exact=False).filter(visible=True).first.wait_for(state="visible")
            page.wait_for_timeout(500)  # let the last requests settle for the screenshot
            page.screenshot(path=str(ARTIFACTS / screenshot))
            return page.inner_text("body")
        except Exception as exc:  # noqa: BLE001 - a timeout or a navigation error: try again
            last_error = exc
    page.screenshot(path=str(ARTIFACTS / f"FAILED-{screenshot}"))
    raise AssertionError(f"{url}: expected text not visible: {last_error}")


def asset_graph(page, base_url, syncs):
    text = visit(
        page,
        f"{base_url}/locations/{LOCATION}/asset-groups/billingo",
        # The partition counts and check badges load after the graph itself: wait for them too.
        ["billingo_documents_raw", "billingo_invoices", "billingo_invoice_items", "billingo_document_payments",
         "billingo_partners", "billingo_spendings", "billingo_document_blocks", "billingo_bank_accounts",
         "3 partitions", "Asset checks"],
        "01-asset-graph.png",
    )
    assert "3 partitions" in text and "Asset checks" in text


def company_partitions(page, base_url, syncs):
    text = visit(page, f"{base_url}/assets/billingo_documents_raw?view=partitions", [*DEMO_COMPANIES, "Materialized (3)"], "02-partitions.png")
    assert "Missing (0)" in text and "Failed (0)" in text


def invoice_checks(page, base_url, syncs):
    names = [spec.name for spec in SYNC_CHECK_SPECS if spec.asset_key.path == ["billingo_invoices"]]
    assert names, "billingo_invoices has no asset checks"
    text = visit(page, f"{base_url}/assets/billingo_invoices?view=checks", [f"Checks ({len(names)})", "Succeeded", "Failed"], "03-checks.png")
    # Every check is listed (on screen a long name may be middle-truncated; the text holds it whole).
    missing = [name for name in names if name not in text]
    assert not missing, f"checks not shown: {missing}"
    # balaton-bistro's malformed document is 1 of 60: over the 1% error-rate target, so that check
    # fails, and its details (the first check, opened by default) name the company.
    assert "error_rate_under_target" in text and "balaton-bistro" in text


def partial_sync_run(page, base_url, syncs):
    run_id, status = syncs["balaton-bistro"]
    assert status == "PARTIAL"
    # The demo's companies sync in one range run of the sync job, as the schedule's do.
    text = visit(page, f"{base_url}/runs/{run_id}", [run_id[:8], "billingo_sync_job", "billingo_sync", "RUN_SUCCESS"], "04-run.png")
    assert "Success" in text and "balaton-bistro" in text
    # Each company's per-page progress is in the run's log (the last page's line always), found
    # with the log's own filter.
    lines = [f"{slug}: page {pages}/{pages} · {count} of {count} documents" for slug, pages, count in DEMO_PROGRESS]
    text = visit(page, f"{base_url}/runs/{run_id}?logs={quote(': page')}", lines, "04b-run-progress.png")
    assert all(line in text for line in lines)


def _visible_image(page, alt: str, screenshot: str) -> None:
    """The first visible <img> whose alt text starts with ``alt`` has loaded and drawn something;
    its metadata row is photographed."""
    image = page.locator(f"img[alt^='{alt}']").filter(visible=True).first
    image.wait_for(state="visible")
    size = image.evaluate("img => ({complete: img.complete, width: img.naturalWidth, height: img.naturalHeight})")
    assert size["complete"] and size["width"] > 0 and size["height"] > 0, f"{alt}: image not rendered: {size}"
    image.locator("xpath=ancestor::tr[1]").screenshot(path=str(ARTIFACTS / screenshot))


def report_charts(page, base_url, syncs):
    """The aging and cash-flow charts are on the report's page itself, not behind a markdown link."""
    text = visit(
        page,
        f"{base_url}/assets/billingo_aging_report?view=partitions&partition=acme-kft",
        ["aging_chart", "cash_flow_chart", "cash_flow_forecast", "expected (HUF)"],
        "05-report-charts.png",
    )
    _visible_image(page, "aging of acme-kft", "05a-aging-chart.png")
    _visible_image(page, "cash flow", "05b-cash-flow-chart.png")
    assert "[Show Markdown]" not in text and "overdue" in text
    # The Overview shows the latest materialization's (any company's) metadata the same way.
    text = visit(page, f"{base_url}/assets/billingo_aging_report?view=overview", ["aging_chart", "cash_flow_chart"], "05c-report-overview.png")
    _visible_image(page, "aging of", "05d-aging-chart-on-overview.png")
    assert "[Show Markdown]" not in text


def invoice_columns_and_plots(page, base_url, syncs):
    """The catalog lists billingo_invoices' columns (from the warehouse schema) with their types;
    the overview's metadata plots each company's sync figures."""
    text = visit(
        page,
        f"{base_url}/assets/billingo_invoices?view=overview",
        ["Columns", "partner_tax_number", "gross_total_local", "decimal(20,6)", "Row count"],
        "06-invoice-columns.png",
    )
    missing = [name for name in ("document_id", "invoice_number", "due_date", "payment_status", "source_hash") if name not in text]
    assert not missing, f"columns not listed: {missing}"
    # The Metadata section's Table/Plots switch; a partitioned asset plots by partition (company) first.
    page.get_by_role("button", name="Plots").click()
    for label in ("sync_duration_seconds", "sync_api_calls", "health_level"):
        page.get_by_text(label, exact=True).filter(visible=True).first.wait_for(state="visible")
    page.get_by_role("button", name="Events").click()  # over time: every company's syncs
    page.get_by_text("sync_documents_fetched", exact=True).filter(visible=True).first.wait_for(state="visible")
    page.wait_for_timeout(500)
    page.screenshot(path=str(ARTIFACTS / "07-invoice-plots.png"), full_page=True)


VIEWS = (asset_graph, company_partitions, invoice_checks, partial_sync_run, report_charts, invoice_columns_and_plots)


def test_the_data_team_view_of_the_demo(demo_ui, page):
    """One test, one server: every view is visited (and photographed) even when one fails, and the
    failures are reported together. One test also keeps pytest-xdist from starting a second server."""
    base_url, syncs = demo_ui
    failures = []
    for view in VIEWS:
        try:
            view(page, base_url, syncs)
        except AssertionError as exc:
            failures.append(f"{view.__name__}: {exc}")
    assert not failures, "\n".join(failures)
