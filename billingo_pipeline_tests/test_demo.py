"""`make demo`'s main job, run as the README runs it, in a throwaway demo folder."""

import datetime as dt
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from billingo_pipeline.warehouse import companies as company_store
from billingo_pipeline.warehouse.schema import billingo_document_payments, billingo_invoices
from billingo_pipeline.warehouse.sync_log import utcnow

pytestmark = pytest.mark.slow  # runs the demo, a process of its own

REPO = Path(__file__).resolve().parents[1]


def _run_demo(demo_dir: Path) -> str:
    completed = subprocess.run(
        [sys.executable, "-m", "billingo_pipeline.demo"],
        cwd=REPO,
        env={"BILLINGO_DEMO_DIR": str(demo_dir), "PATH": str(Path(sys.executable).parent), "HOME": str(demo_dir)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return completed.stdout


def _log_lines(output: str) -> dict[str, list[str]]:
    table = output.split("Sync log (this demo run):")[1].split("\n\n")[0].splitlines()[1:]
    rows = [line.split() for line in table if line.strip()]
    # Skip the header and the "  slug: document …" error lines under the table.
    return {row[0]: row for row in rows if row[0] != "company" and not row[0].endswith(":")}


def _modes(output: str) -> dict[str, str]:
    lines = output.split("Sync modes:\n")[1].split("\n\n")[0].splitlines()
    return dict(line.strip().split(": ", 1) for line in lines)


def test_demo_syncs_three_companies_then_resyncs_incrementally(tmp_path):
    """The first run sweeps every company in full; the second (a fresh simulator with the same
    history, stamped older than the cursor minus the overlap) fetches only what was modified since:
    the broken document, edited as the simulator starts, which fails again (PARTIAL)."""
    first = _run_demo(tmp_path)
    rows = _log_lines(first)
    assert set(rows) == {"acme-kft", "duna-trade", "balaton-bistro"}
    assert rows["balaton-bistro"][1] == "PARTIAL" and rows["acme-kft"][1] == rows["duna-trade"][1] == "COMPLETED"
    assert "balaton-bistro: document" in first and "is not a number" in first
    # columns: company status date time seconds processed created updated skipped failed fetched api_calls
    # api calls: Billingo's clock, then one list page per 100 documents.
    assert rows["acme-kft"][5:12] == ["240", "240", "0", "0", "0", "240", "4"]
    assert rows["duna-trade"][5:12] == ["130", "130", "0", "0", "0", "130", "3"]
    assert rows["balaton-bistro"][5:12] == ["60", "59", "0", "0", "1", "60", "2"]
    assert _modes(first) == {"acme-kft": "full: 240 fetched", "duna-trade": "full: 130 fetched",
                             "balaton-bistro": "full: 60 fetched"}

    second = _run_demo(tmp_path)
    rows = _log_lines(second)
    assert rows["acme-kft"][1] == rows["duna-trade"][1] == "COMPLETED" and rows["balaton-bistro"][1] == "PARTIAL"
    # The clock, then one (empty or one-document) page.
    assert rows["acme-kft"][5:12] == ["0", "0", "0", "0", "0", "0", "2"]
    assert rows["duna-trade"][5:12] == ["0", "0", "0", "0", "0", "0", "2"]
    assert rows["balaton-bistro"][5:12] == ["1", "0", "0", "0", "1", "1", "2"]
    assert "balaton-bistro: document" in second and "is not a number" in second
    modes = _modes(second)
    assert {slug: text.split(" UTC: ")[1] for slug, text in modes.items()} == {
        "acme-kft": "0 fetched", "duna-trade": "0 fetched", "balaton-bistro": "1 fetched"}
    assert all(text.startswith("incremental since ") for text in modes.values()), modes
    assert first.split("Warehouse summary:")[1].split("State kept")[0] == second.split("Warehouse summary:")[1].split("State kept")[0]
    assert (tmp_path / "dagster_home").is_dir() and (tmp_path / "warehouse.db").is_file()


def test_summary_counts_only_open_receivables_as_open(engine):
    """Drafts, proformas, cancellations and status `none` are not money owed (as in the views)."""
    from billingo_pipeline.demo import _summary

    company = company_store.add_company(engine, "acme", "Acme", api_key_encrypted="token", api_key_fingerprint="fp")
    now = utcnow()

    def document(document_id: int, document_type: str, status: str, *, cancelled: bool = False) -> dict:
        return {"company_id": company.id, "document_id": document_id, "invoice_number": f"X-{document_id}",
                "document_type": document_type, "cancelled": cancelled, "currency": "HUF",
                "gross_total": Decimal("1000"), "conversion_rate": Decimal("1"), "payment_status": status,
                "source_hash": "h" * 64, "first_seen_at": now, "last_changed_at": now}

    with engine.begin() as conn:
        conn.execute(billingo_invoices.insert(), [
            document(1, "invoice", "outstanding"),
            document(2, "advance", "partially_paid"),
            document(3, "invoice", "expired", cancelled=True),
            document(4, "cancellation", "none"),
            document(5, "draft", "none"),
            document(6, "proforma", "outstanding"),
            document(7, "invoice", "paid"),
        ])
        # The advance's recorded part payment: 400 of its 1000 is paid, 600 still open.
        conn.execute(billingo_document_payments.insert(), [{
            "company_id": company.id, "document_id": 2, "position": 1, "payment_date": dt.date(2026, 11, 2),
            "price": Decimal("400"), "payment_method": "cash", "fetched_at": now,
        }])
    [row] = _summary(engine).to_dict("records")
    assert row == {"company": "acme", "invoices": 7, "line items": 0, "paid": 1, "open": 2, "part-paid": 1, "cancelled": 1,
                   "non-HUF": 0, "payments": 1, "open HUF": Decimal("1600.00"), "partners": 0, "spendings": 0,
                   "unpaid spendings": 0}
