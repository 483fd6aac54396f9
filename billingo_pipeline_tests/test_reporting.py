"""Reporting: a known portfolio goes through the real sync, then every view, query, export, CLI
command and the aging asset is checked to the cent, on SQLite and on the real PostgreSQL.

The portfolio is built once per dialect (module-scoped, in its own database so that no other
test's truncation can touch it) and only read by the tests that use it. Due and payment dates are
chosen relative to the warehouse's own "today" (the views' as-of date), so aging buckets and
forecast weeks are the same on every run.

Portfolio (T = as-of date; amounts in the invoice's currency)
  Alfa Kft. (HU, HUF)                               Beta GmbH (AT, EUR unless noted)
  A01 invoice     100000 due T+5   outstanding      B01 123.45 x 395.12  due T-65 expired
  A02 invoice     250000 due T-10  expired          B02 1000.05 x 400.5  due T+30 outstanding
  A03 invoice      80000 due T-45  partly paid 30k  B03 500.00 x 401     due T-35 paid T-40
  A04 invoice     120000 due T-95  expired          B04 200.10 x 399.99  due T-50 paid T-20
  A05 invoice      50000 due T-25  paid T-30        B05 75.50 x 402.25   due T-31 expired
  A06 invoice      70000 due T-20  paid T-10        B06 15000 HUF        due T-1  expired
  A07 invoice      60000 due T+20  cancelled later  B07 10.00 x 400      due T-10 paid T-9
  A08 modification -20000 due T+12 outstanding
  A09 proforma     30000 due T+3   (not a receivable)
  A10 advance      40000 due T     outstanding
  A11 invoice      90000 due T+7   deleted in Billingo after the first sync
  A12 invoice      10000 due T-5   payment status none
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal

import click
import dagster as dg
import openpyxl
import pandas as pd
import pytest
import sqlalchemy as sa
from alembic import command
from click.testing import CliRunner

from billingo_pipeline.admin import register_company
from billingo_pipeline.defs.billingo.assets import billingo_assets
from billingo_pipeline.defs.reporting.assets import billingo_aging_report, reporting_assets
from billingo_pipeline.reporting.charts import INLINE_MARKDOWN_LIMIT
from billingo_pipeline.cli import Context
from billingo_pipeline.credentials import generate_fernet_key
from billingo_pipeline.reporting import (
    REPORT_VIEWS,
    InvoiceFilter,
    ReportError,
    aging_by_company,
    aging_by_partner,
    cash_flow_forecast,
    outstanding_invoices,
    partner_balances,
    partner_payment_behaviour,
    query_invoices,
    read_view,
    sync_history,
    write_csv,
    write_xlsx,
)
from billingo_pipeline.cli.reporting import invoices_command, report_command
from billingo_pipeline.partitions import COMPANY_PARTITIONS_NAME, ensure_company_partitions
from billingo_pipeline.reporting.queries import cash_flow_by_week, parse_date
from billingo_pipeline.resources import BillingoResource, FernetKeyResource, WarehouseResource
from billingo_pipeline.runner import run_company_syncs
from billingo_pipeline.settings import FERNET_KEY_ENV
from billingo_pipeline.simulator import BillingoSimulator, generate_api_key
from billingo_pipeline.simulator.ledger import payment_entry
from billingo_pipeline.warehouse import companies as company_store
from billingo_pipeline.warehouse.engine import alembic_config, get_engine
from billingo_pipeline.warehouse.schema import billingo_invoices, sync_log
from billingo_pipeline.warehouse.sync_log import utcnow

from .conftest import DIALECTS, sync_directly, sync_through_dagster, throwaway_instance, warehouse_of_its_own

SLUG = "acme"
ALFA = {
    "id": 501, "name": "Alfa Kft.",
    "address": {"country_code": "HU", "post_code": "1052", "city": "Budapest", "address": "Fő utca 1."},
    "emails": ["szamla@alfa.hu"], "taxcode": "12345676-2-41", "iban": "", "swift": "", "account_number": "",
    "phone": "", "tax_type": "HAS_TAX_NUMBER",
}
BETA = {
    "id": 502, "name": "Beta GmbH",
    "address": {"country_code": "AT", "post_code": "1010", "city": "Wien", "address": "Kärntner Straße 21"},
    "emails": ["accounting@beta.at"], "taxcode": "ATU12345678", "iban": "", "swift": "", "account_number": "",
    "phone": "", "tax_type": "FOREIGN",
}


@dataclass(frozen=True)
class Planned:
    """One document of the portfolio; day offsets are relative to the as-of date T."""

    number: str
    partner: dict
    gross: float | int
    due: int
    invoice: int
    status: str = "outstanding"
    paid: int | None = None
    type: str = "invoice"
    currency: str = "HUF"
    rate: float | int = 1


PORTFOLIO = (
    Planned("ALFA-2026-001", ALFA, 100000, due=5, invoice=-10),
    Planned("ALFA-2026-002", ALFA, 250000, due=-10, invoice=-25, status="expired"),
    Planned("ALFA-2026-003", ALFA, 80000, due=-45, invoice=-60, status="partially_paid", paid=-20),
    Planned("ALFA-2026-004", ALFA, 120000, due=-95, invoice=-110, status="expired"),
    Planned("ALFA-2026-005", ALFA, 50000, due=-25, invoice=-40, status="paid", paid=-30),
    Planned("ALFA-2026-006", ALFA, 70000, due=-20, invoice=-35, status="paid", paid=-10),
    Planned("ALFA-2026-007", ALFA, 60000, due=20, invoice=-3),
    Planned("ALFA-2026-008", ALFA, -20000, due=12, invoice=-2, type="modification"),
    Planned("ALFA-2026-009", ALFA, 30000, due=3, invoice=-4, type="proforma"),
    Planned("ALFA-2026-010", ALFA, 40000, due=0, invoice=-1, type="advance"),
    Planned("ALFA-2026-011", ALFA, 90000, due=7, invoice=-6),
    Planned("ALFA-2026-012", ALFA, 10000, due=-5, invoice=-7, status="none"),
    Planned("BETA-2026-001", BETA, 123.45, due=-65, invoice=-80, status="expired", currency="EUR", rate=395.12),
    Planned("BETA-2026-002", BETA, 1000.05, due=30, invoice=-5, currency="EUR", rate=400.5),
    Planned("BETA-2026-003", BETA, 500, due=-35, invoice=-70, status="paid", paid=-40, currency="EUR", rate=401),
    Planned("BETA-2026-004", BETA, 200.1, due=-50, invoice=-80, status="paid", paid=-20, currency="EUR", rate=399.99),
    Planned("BETA-2026-005", BETA, 75.5, due=-31, invoice=-61, status="expired", currency="EUR", rate=402.25),
    Planned("BETA-2026-006", BETA, 15000, due=-1, invoice=-15, status="expired"),
    Planned("BETA-2026-007", BETA, 10, due=-10, invoice=-14, status="paid", paid=-9, currency="EUR", rate=400),
)
CANCELLED_LATER = "ALFA-2026-007"
PART_PAID = "ALFA-2026-003"  # 30,000 of 80,000 recorded as paid: 50,000 is open
DELETED_LATER = "ALFA-2026-011"


@dataclass(frozen=True)
class Portfolio:
    url: str
    today: dt.date  # the warehouse's as-of date, T
    cancellation_number: str  # the cancellation document Billingo issued for A07
    instance: dg.DagsterInstance

    @property
    def engine(self) -> sa.Engine:
        return get_engine(self.url)

    def day(self, offset: int) -> dt.date:
        return self.today + dt.timedelta(days=offset)


def _database_today(engine: sa.Engine) -> dt.date:
    query = "SELECT date('now')" if engine.dialect.name == "sqlite" else "SELECT CURRENT_DATE"
    with engine.connect() as conn:
        value = conn.execute(sa.text(query)).scalar_one()
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(value)


def _build_portfolio(url: str, instance: dg.DagsterInstance) -> Portfolio:
    engine = get_engine(url)
    today = _database_today(engine)
    with BillingoSimulator() as simulator:
        api_key = generate_api_key("reporting")
        simulator.add_organization(api_key, name="Acme Kft.", seed="reporting", document_count=0)
        register_company(engine, SLUG, "Acme Kft.", api_key, api_base_url=simulator.base_url)
        ids = {}
        for planned in PORTFOLIO:
            document = simulator.add_document(
                api_key,
                type=planned.type,
                invoice_number=planned.number,
                document_partner=planned.partner,
                currency=planned.currency,
                conversion_rate=planned.rate,
                gross_total=planned.gross,
                due_date=(today + dt.timedelta(days=planned.due)).isoformat(),
                payment_status=planned.status,
                **({} if planned.paid is None else {"paid_date": (today + dt.timedelta(days=planned.paid)).isoformat()}),
            )
            # add_document always issues "today"; corrupt_document is the simulator's field setter.
            invoice_date = (today + dt.timedelta(days=planned.invoice)).isoformat()
            simulator.corrupt_document(api_key, document["id"], "invoice_date", invoice_date)
            ids[planned.number] = document["id"]
        # A03's recorded part payments: 30,000 of its 80,000, the last one on its paid date.
        simulator.set_payments(api_key, ids[PART_PAID], [
            payment_entry(today + dt.timedelta(days=-30), 20000, "wire_transfer", voucher_number="B-1"),
            payment_entry(today + dt.timedelta(days=-20), 10000, "wire_transfer", voucher_number="B-2"),
        ])
        assert all(r.success for r in sync_directly(engine, simulator, SLUG))
        cancellation = simulator.cancel_document(api_key, ids[CANCELLED_LATER])
        simulator.delete_document(api_key, ids[DELETED_LATER])
        # Only a full sweep sees that a document vanished from Billingo; an incremental sync would
        # leave A11 in the views.
        assert all(r.success for r in sync_directly(engine, simulator, SLUG, full=True))
    # The aging asset's test materializes the company's partition on this instance.
    ensure_company_partitions(instance, [SLUG])
    return Portfolio(url, today, cancellation["invoice_number"], instance)


@pytest.fixture(scope="module", params=DIALECTS)
def portfolio(request, tmp_path_factory) -> Iterator[Portfolio]:
    """The synced portfolio, in a database of its own on each dialect."""
    with (
        pytest.MonkeyPatch.context() as monkeypatch,
        throwaway_instance() as instance,
        warehouse_of_its_own(request.param, tmp_path_factory, "reporting") as url,
    ):
        monkeypatch.setenv(FERNET_KEY_ENV, generate_fernet_key())
        yield _build_portfolio(url, instance)


def D(text: str) -> Decimal:  # noqa: N802 - reads like a literal
    return Decimal(text)


def _records(frame: pd.DataFrame, columns: list[str], key: str) -> dict:
    """{row[key]: (row[c] for c in columns)} with pandas' NA turned back into None."""
    return {
        row[key]: tuple(None if pd.isna(row[c]) else row[c] for c in columns)
        for row in frame.to_dict("records")
    }


def _assert_exact_money(frame: pd.DataFrame, columns: list[str]) -> None:
    for column in columns:
        for value in frame[column].dropna():
            assert isinstance(value, Decimal) and value.as_tuple().exponent == -2, (column, value)


# --- views ----------------------------------------------------------------------------------------


def test_outstanding_invoices(portfolio):
    frame = outstanding_invoices(portfolio.engine, SLUG)
    columns = ["open_amount", "open_amount_huf", "days_overdue", "aging_bucket", "is_overdue", "is_partially_paid"]
    assert _records(frame, columns, "invoice_number") == {
        "ALFA-2026-001": (D("100000.00"), D("100000.00"), 0, "current", False, False),
        "ALFA-2026-002": (D("250000.00"), D("250000.00"), 10, "1-30", True, False),
        "ALFA-2026-003": (D("50000.00"), D("50000.00"), 45, "31-60", True, True),
        "ALFA-2026-004": (D("120000.00"), D("120000.00"), 95, "90+", True, False),
        "ALFA-2026-008": (D("-20000.00"), D("-20000.00"), 0, "current", False, False),
        "ALFA-2026-010": (D("40000.00"), D("40000.00"), 0, "current", False, False),
        "BETA-2026-001": (D("123.45"), D("48777.56"), 65, "61-90", True, False),
        "BETA-2026-002": (D("1000.05"), D("400520.03"), 0, "current", False, False),
        "BETA-2026-005": (D("75.50"), D("30369.88"), 31, "31-60", True, False),
        "BETA-2026-006": (D("15000.00"), D("15000.00"), 1, "1-30", True, False),
    }
    _assert_exact_money(frame, ["open_amount", "open_amount_huf"])
    assert set(frame["as_of_date"]) == {portfolio.today}
    assert frame.loc[frame.invoice_number == "BETA-2026-002", "due_date"].item() == portfolio.day(30)
    assert frame.loc[frame.invoice_number == "ALFA-2026-010", "document_type"].item() == "advance"
    assert list(frame["due_date"]) == sorted(frame["due_date"])  # oldest due date first


_AGING_COLUMNS = [
    "invoice_count", "overdue_invoice_count", "partially_paid_count", "partially_paid_amount",
    "current_amount", "days_1_30_amount", "days_31_60_amount", "days_61_90_amount", "days_over_90_amount",
    "overdue_amount", "total_amount",
    "current_huf", "days_1_30_huf", "days_31_60_huf", "days_61_90_huf", "days_over_90_huf",
    "overdue_huf", "total_huf",
]
# A03 counts what is left of it (50,000 of 80,000), in the 31-60 bucket and as partially paid.
HUF_AGING = (7, 4, 1, D("50000.00"),
             D("120000.00"), D("265000.00"), D("50000.00"), D("0.00"), D("120000.00"), D("435000.00"), D("555000.00"),
             D("120000.00"), D("265000.00"), D("50000.00"), D("0.00"), D("120000.00"), D("435000.00"), D("555000.00"))
EUR_AGING = (3, 2, 0, D("0.00"),
             D("1000.05"), D("0.00"), D("75.50"), D("123.45"), D("0.00"), D("198.95"), D("1199.00"),
             D("400520.03"), D("0.00"), D("30369.88"), D("48777.56"), D("0.00"), D("79147.44"), D("479667.47"))


def test_aging_by_company(portfolio):
    frame = aging_by_company(portfolio.engine, SLUG)
    assert _records(frame, _AGING_COLUMNS, "currency") == {"EUR": EUR_AGING, "HUF": HUF_AGING}
    _assert_exact_money(frame, [c for c in _AGING_COLUMNS if c.endswith(("_amount", "_huf"))])
    assert set(frame["company_slug"]) == {SLUG} and set(frame["as_of_date"]) == {portfolio.today}


def test_aging_by_partner(portfolio):
    frame = aging_by_partner(portfolio.engine, SLUG)
    frame["key"] = list(zip(frame["partner_name"], frame["currency"]))
    alfa_huf = (6, 3, 1, D("50000.00"),
                D("120000.00"), D("250000.00"), D("50000.00"), D("0.00"), D("120000.00"), D("420000.00"),
                D("540000.00"),
                D("120000.00"), D("250000.00"), D("50000.00"), D("0.00"), D("120000.00"), D("420000.00"),
                D("540000.00"))
    beta_huf = (1, 1, 0, D("0.00"),
                D("0.00"), D("15000.00"), D("0.00"), D("0.00"), D("0.00"), D("15000.00"), D("15000.00"),
                D("0.00"), D("15000.00"), D("0.00"), D("0.00"), D("0.00"), D("15000.00"), D("15000.00"))
    assert _records(frame, _AGING_COLUMNS, "key") == {
        ("Alfa Kft.", "HUF"): alfa_huf,
        ("Beta GmbH", "EUR"): EUR_AGING,
        ("Beta GmbH", "HUF"): beta_huf,
    }
    assert _records(frame, ["partner_id", "partner_tax_number"], "partner_name") == {
        "Alfa Kft.": (501, "12345676-2-41"), "Beta GmbH": (502, "ATU12345678"),
    }


def test_cash_flow_forecast(portfolio):
    frame = cash_flow_forecast(portfolio.engine, SLUG)
    assert list(frame["week_number"]) == list(range(13)) * 2  # EUR then HUF, dense weeks 0..12
    expected = {("EUR", n): (0, D("0.00"), D("0.00")) for n in range(13)}
    expected |= {("HUF", n): (0, D("0.00"), D("0.00")) for n in range(13)}
    expected[("EUR", 0)] = (2, D("198.95"), D("79147.44"))  # already overdue
    expected[("EUR", 5)] = (1, D("1000.05"), D("400520.03"))  # due T+30: days 28-34
    expected[("HUF", 0)] = (4, D("435000.00"), D("435000.00"))
    expected[("HUF", 1)] = (2, D("140000.00"), D("140000.00"))  # due T and T+5
    expected[("HUF", 2)] = (1, D("-20000.00"), D("-20000.00"))  # the credit note, due T+12
    frame["key"] = list(zip(frame["currency"], frame["week_number"]))
    assert _records(frame, ["invoice_count", "expected_amount", "expected_huf"], "key") == expected
    weeks = _records(frame[frame.currency == "HUF"], ["week_start", "week_end"], "week_number")
    assert weeks[0] == (None, portfolio.day(-1))
    assert weeks[1] == (portfolio.day(0), portfolio.day(6))
    assert weeks[12] == (portfolio.day(77), portfolio.day(83))


def test_cash_flow_by_week_adds_currencies_in_huf_exactly(portfolio):
    frame = cash_flow_by_week(portfolio.engine, SLUG)
    assert list(frame["week_number"]) == list(range(13))
    weeks = _records(frame, ["invoice_count", "expected_huf"], "week_number")
    expected = {n: (0, D("0.00")) for n in range(13)}
    expected[0] = (6, D("514147.44"))  # 435,000.00 HUF + 79,147.44 from EUR: the aging's overdue total
    expected[1] = (2, D("140000.00"))
    expected[2] = (1, D("-20000.00"))
    expected[5] = (1, D("400520.03"))
    assert weeks == expected
    _assert_exact_money(frame, ["expected_huf"])
    dates = _records(frame, ["week_start", "week_end"], "week_number")
    assert dates[0] == (None, portfolio.day(-1)) and dates[12] == (portfolio.day(77), portfolio.day(83))


def test_cash_flow_by_week_of_a_company_with_nothing_open(engine):
    company_store.add_company(engine, "empty", "Empty", api_key_encrypted="token", api_key_fingerprint="fp")
    frame = cash_flow_by_week(engine, "empty")
    assert frame.empty and list(frame.columns) == ["week_number", "week_start", "week_end", "invoice_count", "expected_huf"]


def test_partner_balances(portfolio):
    frame = partner_balances(portfolio.engine, SLUG)
    frame["key"] = list(zip(frame["partner_name"], frame["currency"]))
    columns = [
        "invoice_count", "open_invoice_count", "overdue_invoice_count",
        "invoiced_amount", "paid_amount", "open_amount", "overdue_amount",
        "invoiced_huf", "paid_huf", "open_huf", "overdue_huf",
        "oldest_open_due_date", "last_invoice_date", "last_paid_date",
    ]
    day = portfolio.day
    assert _records(frame, columns, "key") == {
        # A01-A06, A08, A10, A12: the cancelled, the proforma and the deleted one do not count.
        ("Alfa Kft.", "HUF"): (
            9, 6, 3,
            D("700000.00"), D("150000.00"), D("540000.00"), D("420000.00"),
            D("700000.00"), D("150000.00"), D("540000.00"), D("420000.00"),
            day(-95), day(-1), day(-10),
        ),
        ("Beta GmbH", "EUR"): (
            6, 3, 2,
            D("1909.10"), D("710.10"), D("1199.00"), D("198.95"),
            D("764205.47"), D("284538.00"), D("479667.47"), D("79147.44"),
            day(-65), day(-5), day(-9),
        ),
        ("Beta GmbH", "HUF"): (
            1, 1, 1,
            D("15000.00"), D("0.00"), D("15000.00"), D("15000.00"),
            D("15000.00"), D("0.00"), D("15000.00"), D("15000.00"),
            day(-1), day(-15), None,
        ),
    }
    _assert_exact_money(frame, [c for c in columns if c.endswith(("_amount", "_huf"))])


def test_partner_payment_behaviour(portfolio):
    frame = partner_payment_behaviour(portfolio.engine, SLUG)
    columns = [
        "paid_invoice_count", "paid_on_time_count", "paid_late_count", "average_days_late", "max_days_late",
        "average_days_to_pay", "open_invoice_count", "overdue_invoice_count", "max_days_overdue", "overdue_huf",
    ]
    assert _records(frame, columns, "partner_name") == {
        # A05 paid 5 days early (0 late, 10 days after issue), A06 10 days late (25 days).
        "Alfa Kft.": (2, 1, 1, D("5.00"), 10, D("17.50"), 6, 3, 95, D("450000.00")),
        # B03 early (30 days), B04 30 late (60 days), B07 1 late (5 days): 31/3 and 95/3 days.
        "Beta GmbH": (3, 1, 2, D("10.33"), 30, D("31.67"), 4, 3, 65, D("94147.44")),
    }


def test_sync_history(portfolio):
    frame = sync_history(portfolio.engine, SLUG)
    assert len(frame) == 2
    newest, first = frame.to_dict("records")
    assert newest["started_at"] >= first["started_at"] and newest["sync_id"] > first["sync_id"]
    assert (first["invoices_created"], first["invoices_updated"], first["invoices_marked_deleted"]) == (19, 0, 0)
    # The cancellation is new, its original changed, A11 vanished.
    assert (newest["invoices_created"], newest["invoices_updated"], newest["invoices_marked_deleted"]) == (1, 1, 1)
    for row in (newest, first):
        assert row["company_slug"] == SLUG and row["status"] == "COMPLETED" and row["trigger"] == "test"
        assert row["duration_seconds"] >= 0 and row["error_count"] == 0
        assert row["finished_at"].tzinfo is not None and row["finished_at"] >= row["started_at"]
    with portfolio.engine.connect() as conn:
        stored = conn.execute(sa.select(sync_log.c.id, sync_log.c.api_calls).order_by(sync_log.c.id.desc())).all()
        modes = conn.execute(sa.select(sync_log.c.mode).order_by(sync_log.c.id.desc())).scalars().all()
    assert [(r["sync_id"], r["api_calls"]) for r in (newest, first)] == [tuple(row) for row in stored]
    # Billingo's clock, then one page of 19 documents (both times: the cancellation came, A11 went).
    # Both are full sweeps: the first because none had completed yet, the second because asked for.
    assert [row.api_calls for row in stored] == [2, 2] and modes == ["full", "full"]


def test_receivables_exclude_cancelled_non_receivable_and_deleted_documents(portfolio):
    frame = read_view(portfolio.engine, "report_receivables", SLUG)
    excluded = {CANCELLED_LATER, DELETED_LATER, "ALFA-2026-009", portfolio.cancellation_number}
    assert set(frame["invoice_number"]) == {p.number for p in PORTFOLIO} - excluded
    none_status = frame[frame.invoice_number == "ALFA-2026-012"].iloc[0]
    assert not none_status["is_open"] and pd.isna(none_status["aging_bucket"])
    beta = frame[frame.invoice_number == "BETA-2026-002"].iloc[0]
    assert (beta["gross_minor"], beta["gross_huf_minor"]) == (100005, 40052003)  # exact integer cents


def test_read_view_reads_every_company_and_rejects_unknown_names(portfolio):
    for name in REPORT_VIEWS:
        assert set(read_view(portfolio.engine, name)["company_slug"]) == {SLUG}
    with pytest.raises(ReportError, match="unknown view 'report_nothing'"):
        read_view(portfolio.engine, "report_nothing")
    with pytest.raises(ReportError, match="unknown company 'globex'"):
        aging_by_company(portfolio.engine, "globex")


# --- query_invoices -------------------------------------------------------------------------------


def _numbers(portfolio: Portfolio, filters: InvoiceFilter | None = None, **kwargs) -> list[str]:
    return list(query_invoices(portfolio.engine, SLUG, filters, page_size=1000, **kwargs)["invoice_number"])


VISIBLE = {p.number for p in PORTFOLIO} - {DELETED_LATER}


def test_query_without_filters_lists_every_document_not_deleted(portfolio):
    frame = query_invoices(portfolio.engine, SLUG)
    assert set(frame["invoice_number"]) == VISIBLE | {portfolio.cancellation_number}
    assert frame.attrs == {"total_rows": 19, "page": 1, "page_size": 100, "page_count": 1}
    beta = frame[frame.invoice_number == "BETA-2026-002"].iloc[0]
    assert (beta["gross_total"], beta["conversion_rate"], beta["gross_total_huf"]) == (
        D("1000.05"), D("400.5"), D("400520.03"))
    assert beta["due_date"] == portfolio.day(30) and pd.isna(beta["paid_date"])
    _assert_exact_money(frame, ["gross_total", "gross_total_huf"])


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        (["outstanding"], {"ALFA-2026-001", "ALFA-2026-008", "ALFA-2026-009", "ALFA-2026-010", "BETA-2026-002"}),
        (["expired"], {"ALFA-2026-002", "ALFA-2026-004", "BETA-2026-001", "BETA-2026-005", "BETA-2026-006"}),
        (["paid", "partially_paid"], {"ALFA-2026-003", "ALFA-2026-005", "ALFA-2026-006", "BETA-2026-003",
                                      "BETA-2026-004", "BETA-2026-007"}),
        ("cancelled", {CANCELLED_LATER}),  # a lone string is one status
        (["none"], {"ALFA-2026-012", "<cancellation>"}),
        (["Cancelled", "partially_paid"], {CANCELLED_LATER, "ALFA-2026-003"}),
    ],
)
def test_query_by_status(portfolio, statuses, expected):
    expected = {portfolio.cancellation_number if n == "<cancellation>" else n for n in expected}
    assert set(_numbers(portfolio, InvoiceFilter(statuses=statuses))) == expected


def test_query_by_date_ranges(portfolio):
    day = portfolio.day
    by_invoice_date = InvoiceFilter(invoice_date_from=day(-40), invoice_date_to=day(-25))
    assert set(_numbers(portfolio, by_invoice_date)) == {"ALFA-2026-002", "ALFA-2026-005", "ALFA-2026-006"}
    by_due_date = InvoiceFilter(due_date_from=day(-10), due_date_to=day(5))
    assert set(_numbers(portfolio, by_due_date)) == {
        "ALFA-2026-001", "ALFA-2026-002", "ALFA-2026-009", "ALFA-2026-010", "ALFA-2026-012",
        "BETA-2026-006", "BETA-2026-007", portfolio.cancellation_number,
    }
    # paid_date is only kept for paid / partially paid documents.
    by_paid_date = InvoiceFilter(paid_date_from=day(-25).isoformat(), paid_date_to=day(-10).isoformat())
    assert set(_numbers(portfolio, by_paid_date)) == {"ALFA-2026-003", "ALFA-2026-006", "BETA-2026-004"}
    open_ended = InvoiceFilter(invoice_date_to=day(-80))
    assert set(_numbers(portfolio, open_ended)) == {"ALFA-2026-004", "BETA-2026-001", "BETA-2026-004"}


def test_query_by_partner_tax_number_and_invoice_number(portfolio):
    alfa = (VISIBLE | {portfolio.cancellation_number}) - {p.number for p in PORTFOLIO if p.partner is BETA}
    for tax_number in ("12345676-2-41", "12345676241", "12345676", "HU12345676"):
        assert set(_numbers(portfolio, InvoiceFilter(partner_tax_number=tax_number))) == alfa, tax_number
    beta = {p.number for p in PORTFOLIO if p.partner is BETA}
    assert set(_numbers(portfolio, InvoiceFilter(partner_tax_number="atu 1234 5678"))) == beta
    assert _numbers(portfolio, InvoiceFilter(partner_tax_number="99999999-2-41")) == []

    assert set(_numbers(portfolio, InvoiceFilter(invoice_number="beta-2026-00"))) == beta
    assert _numbers(portfolio, InvoiceFilter(invoice_number="2026-012")) == ["ALFA-2026-012"]
    assert _numbers(portfolio, InvoiceFilter(invoice_number="LF_")) == []  # "_" is not a wildcard
    combined = InvoiceFilter(statuses=["expired"], partner_tax_number="ATU12345678", due_date_to=portfolio.day(-40))
    assert set(_numbers(portfolio, combined)) == {"BETA-2026-001"}


def test_query_sorting(portfolio):
    by_date = _numbers(portfolio, sort="date")
    assert by_date[:4] == ["ALFA-2026-004", "BETA-2026-001", "BETA-2026-004", "BETA-2026-003"]  # ties by id
    assert _numbers(portfolio, sort="date", descending=True) == by_date[::-1]
    by_amount = _numbers(portfolio, sort="amount", descending=True)
    # HUF value: the EUR 1000.05 (400520.03 HUF) outranks HUF 250000; credits come last.
    assert by_amount[:3] == ["BETA-2026-002", "ALFA-2026-002", "BETA-2026-003"]
    assert by_amount[-2:] == ["ALFA-2026-008", portfolio.cancellation_number]
    by_partner = query_invoices(portfolio.engine, SLUG, sort="partner", page_size=1000)
    assert list(by_partner["partner_name"]) == ["Alfa Kft."] * 12 + ["Beta GmbH"] * 7
    assert list(by_partner["invoice_number"][:2]) == ["ALFA-2026-004", "ALFA-2026-003"]
    assert list(by_partner["invoice_number"][-1:]) == ["BETA-2026-002"]


def test_query_paging(portfolio):
    full = _numbers(portfolio, sort="amount")
    pages = [query_invoices(portfolio.engine, SLUG, sort="amount", page_size=5, page=n) for n in (1, 2, 3, 4, 5)]
    assert [len(p) for p in pages] == [5, 5, 5, 4, 0]
    assert sum((list(p["invoice_number"]) for p in pages), []) == full
    assert pages[3].attrs == {"total_rows": 19, "page": 4, "page_size": 5, "page_count": 4}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"statuses": ["bogus"]}, "unknown payment status 'bogus': expected one of expired, none, outstanding"),
        ({"invoice_date_from": "2026-03-01", "invoice_date_to": "2026-02-28"},
         r"invoice_date range ends \(2026-02-28\) before it starts \(2026-03-01\)"),
        ({"paid_date_from": dt.date(2026, 1, 2), "paid_date_to": dt.date(2026, 1, 1)}, "paid_date range ends"),
        ({"due_date_from": "2026-02-30"}, r"due_date_from: '2026-02-30' is not a date \(YYYY-MM-DD\)"),
        ({"partner_tax_number": "1234-56"}, "malformed partner tax number '1234-56'"),
        ({"partner_tax_number": "HELLO"}, "malformed partner tax number"),
        ({"invoice_number": "  "}, "invoice number search is empty"),
    ],
)
def test_bad_filters_are_refused(kwargs, message):
    with pytest.raises(ReportError, match=message):
        InvoiceFilter(**kwargs)


def test_bad_query_arguments_are_refused(engine):
    company_store.add_company(engine, SLUG, "Acme", api_key_encrypted="token", api_key_fingerprint="fp")
    with pytest.raises(ReportError, match="unknown sort 'size': expected one of date, amount, partner"):
        query_invoices(engine, SLUG, sort="size")
    with pytest.raises(ReportError, match="page size must be between 1 and 10000, got 0"):
        query_invoices(engine, SLUG, page_size=0)
    with pytest.raises(ReportError, match="page must be 1 or more, got 0"):
        query_invoices(engine, SLUG, page=0)
    with pytest.raises(ReportError, match="unknown company 'globex'"):
        query_invoices(engine, "globex")
    assert query_invoices(engine, SLUG).attrs["total_rows"] == 0
    with pytest.raises(ReportError, match="--paid-to: '01/02/2026' is not a date"):
        parse_date("01/02/2026", "--paid-to")


# --- money edge cases, migrations -----------------------------------------------------------------


def test_views_round_awkward_amounts_exactly(engine):
    """Amounts Billingo does not send but the schema allows: sub-cent digits, huge invoices."""
    company = company_store.add_company(engine, SLUG, "Acme", api_key_encrypted="token", api_key_fingerprint="fp")
    now, today = utcnow(), _database_today(engine)

    def invoice(document_id: int, gross: str, rate: str, currency: str) -> dict:
        return {"company_id": company.id, "document_id": document_id, "invoice_number": f"X-{document_id}",
                "document_type": "invoice", "cancelled": False, "currency": currency, "due_date": today,
                "gross_total": Decimal(gross), "conversion_rate": Decimal(rate), "payment_status": "outstanding",
                "source_hash": "h" * 64, "first_seen_at": now, "last_changed_at": now}

    with engine.begin() as conn:
        conn.execute(billingo_invoices.insert(), [
            invoice(1, "12.345", "1", "HUF"),  # 12.35: a float would make it 12.3449999 -> 12.34
            invoice(2, "-0.005", "1", "HUF"),  # -0.01: half away from zero
            invoice(3, "99999999.99", "412.34567891", "EUR"),  # 41234567886.876...: no 64-bit overflow
            invoice(4, "0.01", "0.5", "EUR"),  # 0.005 HUF -> 0.01
        ])
    frame = outstanding_invoices(engine, SLUG)
    assert _records(frame, ["open_amount", "open_amount_huf"], "invoice_number") == {
        "X-1": (D("12.35"), D("12.35")),
        "X-2": (D("-0.01"), D("-0.01")),
        "X-3": (D("99999999.99"), D("41234567886.88")),
        "X-4": (D("0.01"), D("0.01")),
    }
    totals = _records(aging_by_company(engine, SLUG), ["total_amount", "total_huf"], "currency")
    assert totals == {"EUR": (D("100000000.00"), D("41234567886.89")), "HUF": (D("12.34"), D("12.34"))}


def test_downgrade_drops_the_views_and_upgrade_restores_them(engine):
    config = alembic_config(engine)
    command.downgrade(config, "0001")
    try:
        assert not set(REPORT_VIEWS) & set(sa.inspect(engine).get_view_names())
    finally:
        command.upgrade(config, "head")
    assert set(REPORT_VIEWS) <= set(sa.inspect(engine).get_view_names())


# --- exports and CLI ------------------------------------------------------------------------------


def test_csv_and_xlsx_exports_round_trip(portfolio, tmp_path):
    frame = query_invoices(portfolio.engine, SLUG, InvoiceFilter(partner_tax_number="ATU12345678"), sort="amount")
    csv_path, xlsx_path = tmp_path / "beta.csv", tmp_path / "beta.xlsx"
    write_csv(frame, csv_path)
    write_xlsx(frame, xlsx_path, sheet_name="beta")

    from_csv = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    assert list(from_csv.columns) == list(frame.columns)
    assert list(from_csv["gross_total_huf"]) == [str(v) for v in frame["gross_total_huf"]]
    assert list(from_csv["due_date"]) == [d.isoformat() for d in frame["due_date"]]
    assert from_csv.loc[from_csv.invoice_number == "BETA-2026-002", "paid_date"].item() == ""

    sheet = openpyxl.load_workbook(xlsx_path)["beta"]
    rows = list(sheet.iter_rows(values_only=True))
    assert list(rows[0]) == list(frame.columns)
    assert len(rows) == len(frame) + 1
    header = list(rows[0])
    cell = sheet.cell(row=2, column=header.index("gross_total_huf") + 1)
    assert cell.number_format == "#,##0.00"
    exported = [Decimal(str(row[header.index("gross_total_huf")])).quantize(D("0.01")) for row in rows[1:]]
    assert exported == list(frame["gross_total_huf"])
    assert [row[header.index("due_date")].date() for row in rows[1:]] == list(frame["due_date"])


def _cli(portfolio_url: str, command: click.Command, *args: str):
    return CliRunner().invoke(command, list(args), obj=Context(portfolio_url, "http://127.0.0.1:9/v3"))


def test_cli_invoices_table_csv_and_xlsx(portfolio, tmp_path):
    result = _cli(portfolio.url, invoices_command, "--company", SLUG, "--status", "expired", "--status", "cancelled",
                  "--sort", "amount", "--desc", "--page-size", "3")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["document_id", "invoice_number", "document_type"]
    assert [line.split()[1] for line in lines[2:5]] == ["ALFA-2026-002", "ALFA-2026-004", CANCELLED_LATER]
    assert "250000.00" in lines[2]
    assert lines[-1] == "page 1 of 2 (rows 1-3 of 6 invoices; --page 2 for more)"

    result = _cli(portfolio.url, invoices_command, "--company", SLUG, "--format", "csv", "--number", "BETA",
                  "--due-from", portfolio.day(-40).isoformat(), "--due-to", portfolio.day(0).isoformat())
    assert result.exit_code == 0, result.output
    from_csv = pd.read_csv(io.StringIO(result.stdout), dtype=str)
    assert set(from_csv["invoice_number"]) == {"BETA-2026-005", "BETA-2026-006", "BETA-2026-007", "BETA-2026-003"}

    workbook = tmp_path / "paid.xlsx"
    result = _cli(portfolio.url, invoices_command, "--company", SLUG, "--format", "xlsx", "--output", str(workbook),
                  "--paid-from", portfolio.day(-25).isoformat(), "--partner-tax-number", "12345676")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"wrote 2 rows to {workbook}"
    rows = list(openpyxl.load_workbook(workbook).active.iter_rows(values_only=True))
    assert sorted(r[1] for r in rows[1:]) == ["ALFA-2026-003", "ALFA-2026-006"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--status", "unpaid"], "error: unknown payment status 'unpaid': expected one of"),
        (["--due-from", "2026-05-01", "--due-to", "2026-04-01"], "error: due_date range ends (2026-04-01) before"),
        (["--invoice-date-from", "yesterday"], "error: --invoice-date-from: 'yesterday' is not a date (YYYY-MM-DD)"),
        (["--partner-tax-number", "12-3"], "error: malformed partner tax number '12-3'"),
        (["--sort", "size"], "error: unknown sort 'size'"),
        (["--format", "pdf"], "error: unknown format 'pdf': expected one of table, csv, xlsx"),
        (["--format", "xlsx"], "error: --format xlsx needs --output PATH"),
        (["--page-size", "0"], "error: page size must be between 1 and 10000, got 0"),
    ],
)
def test_cli_bad_filters_are_one_line_errors(portfolio, args, message):
    result = _cli(portfolio.url, invoices_command, "--company", SLUG, *args)
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.startswith(message) and result.stderr.count("\n") == 1


def test_cli_unknown_company_and_unreachable_warehouse(portfolio, tmp_path):
    result = _cli(portfolio.url, invoices_command, "--company", "globex")
    assert (result.exit_code, result.stderr) == (1, "error: unknown company 'globex'\n")
    bad_url = "postgresql+psycopg://nobody:secret@127.0.0.1:9/none"
    result = _cli(bad_url, invoices_command, "--company", SLUG)
    assert result.exit_code == 1 and result.stderr.startswith("error: cannot open the warehouse at")
    assert "secret" not in result.stderr


def test_cli_report_command(portfolio, tmp_path):
    result = _cli(portfolio.url, report_command, "aging-by-company", "--company", SLUG)
    assert result.exit_code == 0, result.output
    # The terminal table has no company columns (the report is one company's): the currency comes first.
    huf_line = next(line for line in result.stdout.splitlines() if line.startswith("HUF "))
    assert "555000.00" in huf_line and "435000.00" in huf_line

    result = _cli(portfolio.url, report_command, "report_partner_balances", "--company", SLUG, "--format", "csv")
    assert result.exit_code == 0, result.output
    assert len(pd.read_csv(io.StringIO(result.stdout))) == 3

    result = _cli(portfolio.url, report_command, "cash-flow", "--company", SLUG, "--format", "xlsx",
                  "--output", str(tmp_path / "cash.xlsx"))
    assert result.exit_code == 0 and len(list(openpyxl.load_workbook(tmp_path / "cash.xlsx").active.rows)) == 27

    result = _cli(portfolio.url, report_command, "profits", "--company", SLUG)
    assert result.exit_code == 1 and result.stderr.startswith("error: unknown report 'profits': expected one of")


def test_cli_commands_register_on_a_group(portfolio):
    """As the lead registers them on `billingo-pipeline`: the group's Context carries the URL."""

    @click.group()
    @click.pass_context
    def main(ctx: click.Context) -> None:
        ctx.obj = Context(portfolio.url, "http://127.0.0.1:9/v3")

    main.add_command(invoices_command)
    main.add_command(report_command)
    result = CliRunner().invoke(main, ["invoices", "--company", SLUG, "--number", "ALFA-2026-001"])
    assert result.exit_code == 0, result.output
    assert "page 1 of 1 (1 invoices)" in result.stdout
    result = CliRunner().invoke(main, ["report", "outstanding", "--company", SLUG])
    assert result.exit_code == 0 and "BETA-2026-006" in result.stdout


# --- the Dagster asset ----------------------------------------------------------------------------


def test_aging_asset_metadata(portfolio):
    result = dg.materialize(
        reporting_assets,
        partition_key=SLUG,
        instance=portfolio.instance,
        resources={"warehouse": WarehouseResource(url=portfolio.url)},
    )
    assert result.success
    [materialization] = result.asset_materializations_for_node(billingo_aging_report.op.name)
    metadata = {key: value.value for key, value in materialization.metadata.items()}
    assert metadata["total_outstanding_huf"] == 1034667.47  # 555000.00 + 479667.47
    assert metadata["overdue_huf"] == 514147.44  # 435000.00 + 79147.44
    assert (metadata["open_invoices"], metadata["overdue_invoices"]) == (10, 6)
    assert metadata["as_of_date"] == portfolio.today.isoformat()
    aging = [record.data for record in metadata["aging"].records]
    assert aging == [
        _aging_row("EUR", 3, "1,000.05", "0.00", "75.50", "123.45", "0.00", "1,199.00", "479,667.47"),
        _aging_row("HUF", 7, "120,000.00", "265,000.00", "50,000.00", "0.00", "120,000.00", "555,000.00", "555,000.00"),
        _aging_row("all, in HUF", 10, "520,520.03", "265,000.00", "80,369.88", "48,777.56", "120,000.00",
                   "1,034,667.47", "1,034,667.47"),
    ]
    assert metadata["partially_paid"].startswith("1 partially paid invoice(s)")
    # The UI shows a markdown value in place only below 1,000 characters: the charts stay under it.
    for name in ("aging_chart", "cash_flow_chart"):
        chart = metadata[name]
        assert chart.startswith("![") and "](data:image/svg+xml,<svg" in chart and chart.endswith("</svg>)"), name
        assert len(chart) < INLINE_MARKDOWN_LIMIT, name
    # 514,147.44 overdue (the aging's overdue total), then weeks 1, 2 and 5 of test_cash_flow_forecast.
    forecast = [record.data for record in metadata["cash_flow_forecast"].records]
    assert len(forecast) == 13 and forecast[0] == {"due": "overdue", "open invoices": 6, "expected (HUF)": "514,147.44"}
    assert forecast[1] == {
        "due": f"{portfolio.day(0)} – {portfolio.day(6)}", "open invoices": 2, "expected (HUF)": "140,000.00",
    }
    assert [week["expected (HUF)"] for week in forecast[2:6]] == ["-20,000.00", "0.00", "0.00", "400,520.03"]
    assert metadata["expected_in_12_weeks_huf"] == 520520.03  # 140,000.00 - 20,000.00 + 400,520.03
    assert ">overdue</tspan>" in metadata["cash_flow_chart"]
    assert f">{portfolio.day(0):%m-%d}</tspan>" in metadata["cash_flow_chart"]


def _aging_row(currency, count, *amounts):
    return {"currency": currency, "open invoices": count,
            **dict(zip(["current", "1-30", "31-60", "61-90", "90+", "total", "total (HUF)"], amounts))}


def test_aging_asset_covers_a_range_of_companies(engine, warehouse_url):
    """A backfill run covers several companies; one without invoices still gets a report, and an
    unknown one fails the run without stopping the others."""
    for slug in ("acme", "globex"):
        company_store.add_company(engine, slug, slug.title(), api_key_encrypted="token", api_key_fingerprint="fp")
    with throwaway_instance() as instance:
        instance.add_dynamic_partitions(COMPANY_PARTITIONS_NAME, ["acme", "globex", "initech"])
        result = dg.materialize(
            reporting_assets, instance=instance, raise_on_error=False,
            resources={"warehouse": WarehouseResource(url=warehouse_url)},
            tags={"dagster/asset_partition_range_start": "acme", "dagster/asset_partition_range_end": "initech"},
        )
    assert not result.success
    [failure] = [event for event in result.all_events if event.is_step_failure]
    assert failure.step_failure_data.user_failure_data.description == "initech: unknown company 'initech'"
    materializations = result.asset_materializations_for_node(billingo_aging_report.op.name)
    assert [m.partition for m in materializations] == ["acme", "globex"]
    metadata = {key: value.value for key, value in materializations[1].metadata.items()}
    assert metadata["aging"].records == [] and metadata["cash_flow_forecast"].records == []
    assert "cash_flow_chart" not in metadata and len(metadata["aging_chart"]) < INLINE_MARKDOWN_LIMIT
    assert (metadata["total_outstanding_huf"], metadata["open_invoices"], metadata["as_of_date"]) == (0.0, 0, "")


def test_aging_report_follows_every_sync(engine, warehouse_url, simulator, fernet_key):
    """A sync run builds the report in the same run; a sync that did not (e.g. a multi-company
    run, or syncing the Billingo assets alone) gets it requested by the eager automation condition."""
    api_key = generate_api_key("reporting-run")
    simulator.add_organization(api_key, name="Acme Kft.", seed="reporting-run", document_count=3)
    register_company(engine, SLUG, "Acme Kft.", api_key, api_base_url=simulator.base_url)
    resources = {
        "warehouse": WarehouseResource(url=warehouse_url),
        "billingo": BillingoResource(base_url=simulator.base_url),
        "fernet": FernetKeyResource(),
    }
    defs = dg.Definitions(assets=[*billingo_assets, *reporting_assets], resources=resources)
    with throwaway_instance() as instance:
        instance.add_dynamic_partitions(COMPANY_PARTITIONS_NAME, [SLUG])
        before = dg.evaluate_automation_conditions(defs, instance)
        assert before.total_requested == 0
        sync_through_dagster(warehouse_url, simulator, SLUG, instance=instance)
        assert instance.get_materialized_partitions(billingo_aging_report.key) == {SLUG}
        after_full_run = dg.evaluate_automation_conditions(defs, instance, cursor=before.cursor)
        assert after_full_run.total_requested == 0

        assert dg.materialize(billingo_assets, partition_key=SLUG, instance=instance, resources=resources).success
        after_sync_only = dg.evaluate_automation_conditions(defs, instance, cursor=after_full_run.cursor)
        assert after_sync_only.get_requested_partitions(billingo_aging_report.key) == {SLUG}
        assert after_sync_only.total_requested == 1
