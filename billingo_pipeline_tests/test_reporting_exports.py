"""Exports hold every matching invoice, CSV for Hungarian Excel, xlsx with an autofilter and rates
at full precision, and one definition of "paid": on SQLite and PostgreSQL, through the real sync
and the real CLI, with the files opened again by openpyxl and pandas.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from decimal import Decimal

import openpyxl
import pandas as pd
import pytest
import sqlalchemy as sa

from billingo_pipeline.admin import register_company
from billingo_pipeline.credentials import generate_fernet_key
from billingo_pipeline.demo import _summary
from billingo_pipeline.reporting import InvoiceFilter, query_invoices, write_csv, write_xlsx
from billingo_pipeline.reporting.queries import is_paid, iter_invoice_chunks
from billingo_pipeline.settings import FERNET_KEY_ENV
from billingo_pipeline.simulator import BillingoSimulator, generate_api_key
from billingo_pipeline.warehouse.engine import get_engine
from billingo_pipeline.warehouse.schema import billingo_invoices

from .conftest import DIALECTS, invoke_cli, sync_directly, warehouse_of_its_own

SLUG = "many"
DOCUMENTS = 240


@pytest.fixture(scope="module", params=DIALECTS)
def many(request, tmp_path_factory) -> Iterator[tuple[str, list[str]]]:
    """240 generated documents, two of the paid ones cancelled after the first sync. Built once
    per dialect, in a warehouse of its own: the tests only read it."""
    with (
        pytest.MonkeyPatch.context() as monkeypatch,
        BillingoSimulator() as simulator,
        warehouse_of_its_own(request.param, tmp_path_factory, "exports") as warehouse_url,
    ):
        monkeypatch.setenv(FERNET_KEY_ENV, generate_fernet_key())
        api_key = generate_api_key(SLUG)
        simulator.add_organization(api_key, name="Many Kft.", seed=SLUG, document_count=DOCUMENTS)
        register_company(get_engine(warehouse_url), SLUG, "Many Kft.", api_key, api_base_url=simulator.base_url)
        engine = get_engine(warehouse_url)
        assert all(r.success for r in sync_directly(engine, simulator, SLUG))
        paid = [d for d in simulator.documents(api_key)
                if d["payment_status"] == "paid" and d["type"] == "invoice" and not d.get("cancelled")]
        cancelled = [paid[0]["invoice_number"], paid[1]["invoice_number"]]
        for document in paid[:2]:
            simulator.cancel_document(api_key, document["id"])
        assert all(r.success for r in sync_directly(engine, simulator, SLUG, full=True))
        yield warehouse_url, cancelled


def _all_numbers(url: str, filters: InvoiceFilter | None = None) -> list[str]:
    return list(query_invoices(get_engine(url), SLUG, filters, page_size=1000)["invoice_number"])


def test_file_exports_hold_every_invoice_unless_a_page_is_asked_for(many, tmp_path):
    url, _ = many
    numbers = list(query_invoices(get_engine(url), SLUG, page_size=1000)["document_id"])
    total = len(numbers)
    assert total > 200  # more than two default pages of 100

    result = invoke_cli(url, "invoices", "--company", SLUG, "--format", "csv", "--output", str(tmp_path / "all.csv"))
    assert result.exit_code == 0, result.output
    assert result.stdout == f"wrote {total} rows to {tmp_path / 'all.csv'}\n"
    assert list(pd.read_csv(tmp_path / "all.csv")["document_id"]) == numbers

    result = invoke_cli(url, "invoices", "--company", SLUG, "--format", "csv")
    assert list(pd.read_csv(io.StringIO(result.stdout))["document_id"]) == numbers

    result = invoke_cli(url, "invoices", "--company", SLUG, "--format", "xlsx", "--output", str(tmp_path / "all.xlsx"))
    assert result.exit_code == 0, result.output
    assert list(pd.read_excel(tmp_path / "all.xlsx")["document_id"]) == numbers

    # An explicit page is that page only, in a file as on the terminal.
    result = invoke_cli(url, "invoices", "--company", SLUG, "--format", "csv", "--page-size", "50", "--page", "2")
    assert list(pd.read_csv(io.StringIO(result.stdout))["document_id"]) == numbers[50:100]
    result = invoke_cli(url, "invoices", "--company", SLUG, "--format", "xlsx", "--page", "3",
                  "--output", str(tmp_path / "page.xlsx"))
    assert result.stdout == f"wrote {total - 200} rows to {tmp_path / 'page.xlsx'}\n"

    # The terminal stays paged and says where the rest is.
    result = invoke_cli(url, "invoices", "--company", SLUG)
    lines = result.stdout.splitlines()
    assert len(lines) == 2 + 100 + 1
    assert lines[-1] == f"page 1 of 3 (rows 1-100 of {total} invoices; --page 2 for more)"
    result = invoke_cli(url, "invoices", "--company", SLUG, "--page", "3")
    assert result.stdout.splitlines()[-1] == f"page 3 of 3 (rows 201-{total} of {total} invoices)"


def test_chunks_are_the_whole_result_in_order(many):
    url, _ = many
    engine = get_engine(url)
    filters = InvoiceFilter(statuses=["paid", "outstanding"])
    chunks = list(iter_invoice_chunks(engine, SLUG, filters, sort="amount", descending=True, chunk_size=7))
    expected = query_invoices(engine, SLUG, filters, sort="amount", descending=True, page_size=1000)
    assert all(len(chunk) <= 7 for chunk in chunks) and len(chunks) == -(-len(expected) // 7)
    assert list(pd.concat(chunks)["document_id"]) == list(expected["document_id"])
    assert {chunk.attrs["total_rows"] for chunk in chunks} == {len(expected)}
    [empty] = iter_invoice_chunks(engine, SLUG, InvoiceFilter(invoice_number="no such invoice"))
    assert empty.empty and list(empty.columns) == list(expected.columns) and empty.attrs["total_rows"] == 0


def test_excel_hu_csv_has_bom_semicolons_and_decimal_commas(many, tmp_path):
    url, _ = many
    frame = query_invoices(get_engine(url), SLUG, page_size=1000)
    path = tmp_path / "hu.csv"
    result = invoke_cli(url, "invoices", "--company", SLUG, "--format", "csv", "--csv-dialect", "excel-hu",
                  "--output", str(path))
    assert result.exit_code == 0, result.output
    data = path.read_bytes()
    assert data.startswith(b"\xef\xbb\xbfdocument_id;invoice_number;")
    read = pd.read_csv(path, sep=";", dtype=str, keep_default_na=False, encoding="utf-8-sig")
    assert list(read["gross_total"]) == [str(v).replace(".", ",") for v in frame["gross_total"]]
    assert all("," in value for value in read["gross_total"])
    # What Hungarian Excel does with it: ';' fields, ',' decimals.
    numbers = pd.read_csv(path, sep=";", decimal=",", encoding="utf-8-sig")
    assert [Decimal(str(v)).quantize(Decimal("0.01")) for v in numbers["gross_total_huf"]] == list(
        frame["gross_total_huf"])

    default = tmp_path / "default.csv"
    invoke_cli(url, "invoices", "--company", SLUG, "--format", "csv", "--output", str(default))
    assert default.read_bytes().startswith(b"document_id,invoice_number,")
    assert list(pd.read_csv(default, dtype=str)["gross_total"]) == [str(v) for v in frame["gross_total"]]

    result = invoke_cli(url, "invoices", "--company", SLUG, "--csv-dialect", "excel-hu")
    assert (result.exit_code, result.stderr) == (1, "error: --csv-dialect excel-hu needs --format csv\n")
    result = invoke_cli(url, "invoices", "--company", SLUG, "--format", "csv", "--csv-dialect", "excel")
    assert result.exit_code == 1 and result.stderr.startswith("error: unknown CSV dialect 'excel'")


def test_excel_hu_keeps_formula_neutralization(tmp_path):
    frame = pd.DataFrame({"partner_name": ['=HYPERLINK("http://evil","x")', "-2+3", "Fő Kft."],
                          "amount": [Decimal("-1234.50"), Decimal("0.05"), None]})
    path = tmp_path / "hu.csv"
    assert write_csv(frame, path, dialect="excel-hu") == 3
    read = pd.read_csv(path, sep=";", dtype=str, keep_default_na=False, encoding="utf-8-sig")
    assert list(read["partner_name"]) == ['\'=HYPERLINK("http://evil","x")', "'-2+3", "Fő Kft."]
    assert list(read["amount"]) == ["-1234,50", "0,05", ""]  # a negative number is not text


def test_xlsx_autofilter_frozen_header_and_full_precision(many, tmp_path):
    url, _ = many
    path = tmp_path / "all.xlsx"
    invoke_cli(url, "invoices", "--company", SLUG, "--format", "xlsx", "--output", str(path))
    frame = query_invoices(get_engine(url), SLUG, page_size=1000)
    sheet = openpyxl.load_workbook(path).active
    assert sheet.freeze_panes == "A2"
    assert sheet.auto_filter.ref == f"A1:P{len(frame) + 1}"
    header = [cell.value for cell in sheet[1]]
    rate_column = header.index("conversion_rate") + 1
    for row, rate in zip(sheet.iter_rows(min_row=2, min_col=rate_column, max_col=rate_column), frame["conversion_rate"]):
        (cell,) = row
        assert Decimal(str(cell.value)) == rate, (cell.coordinate, cell.value, rate)

    rates = pd.DataFrame({
        "conversion_rate": [Decimal("395.12345678"), Decimal("0.00254321"), Decimal("400.5"),
                            Decimal("123456789012.12345678")],
        "gross": [Decimal("1.00"), Decimal("2.50"), Decimal("1000000.05"), Decimal("-3.10")],
    })
    path = tmp_path / "rates.xlsx"
    write_xlsx(rates, path, sheet_name="rates")
    sheet = openpyxl.load_workbook(path)["rates"]
    cells = [row[0] for row in sheet.iter_rows(min_row=2)]
    assert [c.value for c in cells[:3]] == [395.12345678, 0.00254321, 400.5]
    assert [c.number_format for c in cells[:3]] == ["0.00######", "0.00######", "0.0"]
    # More digits than Excel keeps: text, every digit of it.
    assert (cells[3].value, cells[3].data_type) == ("123456789012.12345678", "s")
    assert [row[1].number_format for row in sheet.iter_rows(min_row=2)] == ["#,##0.00"] * 4
    assert sheet.auto_filter.ref == "A1:B5" and sheet.freeze_panes == "A2"
    from_pandas = pd.read_excel(path, sheet_name="rates")
    assert list(from_pandas["gross"]) == [1.0, 2.5, 1000000.05, -3.1]


def test_one_definition_of_paid(many):
    url, cancelled = many
    engine = get_engine(url)
    paid = set(_all_numbers(url, InvoiceFilter(statuses=["paid"])))
    assert paid and not paid & set(cancelled)
    with engine.connect() as conn:
        marked_paid = conn.execute(
            sa.select(billingo_invoices.c.invoice_number).where(billingo_invoices.c.payment_status == "paid")
        ).scalars().all()
        counted = conn.execute(sa.select(sa.func.count()).select_from(billingo_invoices).where(is_paid())).scalar_one()
    assert set(cancelled) <= set(marked_paid)  # Billingo still says "paid" on the cancelled ones
    summary = _summary(engine).set_index("company")
    assert summary.loc[SLUG, "paid"] == counted == len(paid)
    result = invoke_cli(url, "invoices", "--company", SLUG, "--status", "paid")
    assert f"{len(paid)} invoices" in result.stdout.splitlines()[-1]
