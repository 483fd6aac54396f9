"""Exports are not an attack surface: hostile text from Billingo is synced for real, exported
through the real CLI as CSV and xlsx, and the files are opened again with openpyxl and pandas.

What is checked, on SQLite and PostgreSQL:
- a cell starting with = + - @ tab or CR is written with a leading ' (OWASP's CSV injection
  advice) and never as an xlsx formula; numbers, negative ones included, stay numbers;
- control characters are cleaned (U+FFFD) instead of crashing openpyxl; a CR cannot start a row;
- an existing --output file is refused (and left byte for byte as it was) unless --force;
- out-of-range --page / --page-size are one line of error, never a traceback.
"""

from __future__ import annotations

import datetime as dt
import io
from decimal import Decimal

import openpyxl
import pandas as pd
import pytest

from billingo_pipeline.admin import register_company
from billingo_pipeline.cli.reporting import MAX_PAGE
from billingo_pipeline.reporting.exports import (
    EXCEL_CELL_LIMIT,
    clean_text,
    format_table,
    neutralize_formula,
    safe_frame,
    sheet_title,
    spreadsheet_text,
    write_csv,
    write_xlsx,
)
from billingo_pipeline.simulator import generate_api_key
from billingo_pipeline.warehouse.engine import get_engine

from .conftest import invoke_cli, sync_directly

SLUG = "hostile"
HYPERLINK = '=HYPERLINK("http://evil","x")'

# Partner name as Billingo sends it -> the text every export must hold. Written out by hand, not
# computed with the function under test.
HOSTILE_NAMES = {
    HYPERLINK: "'" + HYPERLINK,
    "+SUM(1,2)": "'+SUM(1,2)",
    "-2+3+cmd|' /C calc'!A0": "'-2+3+cmd|' /C calc'!A0",
    "@SUM(A1:A2)": "'@SUM(A1:A2)",
    "\t=1+1": "'\t=1+1",
    "\r=1+1": "'\n=1+1",
    "Evil Kft.\r=1+1": "Evil Kft.\n=1+1",  # a CR inside must not start a row of its own
    "Bell\x07 Kft.\x1b[2J\x0b\x0c\x1f": "Bell\ufffd Kft.\ufffd[2J\ufffd\ufffd\ufffd",
    "Two\tcolumns\nand two lines": "Two\tcolumns\nand two lines",
    "Plain Kft.": "Plain Kft.",
}
HOSTILE_NUMBER = "-2026/7"  # an invoice number is text, so a leading minus is neutralized too
NEGATIVE_GROSS = -20000


def _partner(partner_id: int, name: str) -> dict:
    return {
        "id": partner_id, "name": name,
        "address": {"country_code": "HU", "post_code": "1052", "city": "Budapest", "address": "Fő utca 1."},
        "emails": ["szamla@example.hu"], "taxcode": "12345676-2-41", "iban": "", "swift": "",
        "account_number": "", "phone": "", "tax_type": "HAS_TAX_NUMBER",
    }


@pytest.fixture
def hostile(warehouse_url, simulator, fernet_key):
    """A company whose every invoice has a hostile partner name, synced into the warehouse."""
    api_key = generate_api_key("hostile")
    simulator.add_organization(api_key, name="Hostile Kft.", seed="hostile", document_count=0)
    register_company(get_engine(warehouse_url), SLUG, "Hostile Kft.", api_key, api_base_url=simulator.base_url)
    for index, name in enumerate(HOSTILE_NAMES):
        simulator.add_document(
            api_key, invoice_number=f"H-{index:02d}", document_partner=_partner(900 + index, name),
            gross_total=1000 + index, currency="HUF", conversion_rate=1, payment_status="outstanding",
            due_date=(dt.date.today() + dt.timedelta(days=10)).isoformat(),
        )
    simulator.add_document(
        api_key, type="modification", invoice_number=HOSTILE_NUMBER, document_partner=_partner(899, HYPERLINK),
        gross_total=NEGATIVE_GROSS, currency="HUF", conversion_rate=1, payment_status="outstanding",
        due_date=(dt.date.today() + dt.timedelta(days=10)).isoformat(),
    )
    [result] = sync_directly(get_engine(warehouse_url), simulator, SLUG)
    assert result.success, result.error
    return warehouse_url


def _one_error_line(result) -> str:
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: "), result.stderr
    return result.stderr.rstrip("\n")


def _assert_no_formula(path) -> list[tuple]:
    """Every cell of every sheet; fails on any formula cell."""
    workbook = openpyxl.load_workbook(path)
    rows = []
    for sheet in workbook.worksheets:
        for row in sheet.iter_rows():
            for cell in row:
                assert cell.data_type != "f", (cell.coordinate, cell.value)
                if isinstance(cell.value, str):
                    assert cell.data_type == "s", (cell.coordinate, cell.value)
            rows.append(tuple(cell.value for cell in row))
    return rows


EXPECTED_NAMES = sorted([*HOSTILE_NAMES.values(), "'" + HYPERLINK])


# --- the real CLI on both databases ---------------------------------------------------------------


def test_invoices_csv_is_neutralized_and_numbers_stay_numbers(hostile, tmp_path):
    path = tmp_path / "invoices.csv"
    result = invoke_cli(hostile, "invoices", "--company", SLUG, "--format", "csv", "--output", str(path))
    assert result.exit_code == 0, result.output
    assert result.stdout == f"wrote {len(HOSTILE_NAMES) + 1} rows to {path}\n"

    as_text = pd.read_csv(path, dtype=str, keep_default_na=False)
    assert len(as_text) == len(HOSTILE_NAMES) + 1  # no row was split by a CR
    assert sorted(as_text["partner_name"]) == EXPECTED_NAMES
    assert HOSTILE_NUMBER not in set(as_text["invoice_number"])
    assert "'" + HOSTILE_NUMBER in set(as_text["invoice_number"])
    typed = pd.read_csv(path)
    text_columns = [c for c in typed.columns if not pd.api.types.is_numeric_dtype(typed[c])]
    assert {"partner_name", "invoice_number"} <= set(text_columns)
    for column in text_columns:
        for value in as_text[column]:
            assert not value.startswith(("=", "+", "-", "@", "\t", "\r")), (column, value)
            assert clean_text(value) == value, (column, value)
    assert pd.api.types.is_numeric_dtype(typed["gross_total"])
    assert typed.loc[typed["document_type"] == "modification", "gross_total"].item() == NEGATIVE_GROSS
    assert pd.api.types.is_numeric_dtype(typed["document_id"])

    # The same text goes to stdout when there is no --output.
    result = invoke_cli(hostile, "invoices", "--company", SLUG, "--format", "csv")
    assert result.exit_code == 0, result.output
    assert sorted(pd.read_csv(io.StringIO(result.stdout), dtype=str)["partner_name"]) == EXPECTED_NAMES


def test_invoices_xlsx_has_no_formula_and_opens_in_pandas(hostile, tmp_path):
    path = tmp_path / "invoices.xlsx"
    result = invoke_cli(hostile, "invoices", "--company", SLUG, "--format", "xlsx", "--output", str(path))
    assert result.exit_code == 0, result.output  # no IllegalCharacterError

    rows = _assert_no_formula(path)
    header = list(rows[0])
    names = sorted(row[header.index("partner_name")] for row in rows[1:])
    assert names == EXPECTED_NAMES
    sheet = openpyxl.load_workbook(path).active
    gross_column = header.index("gross_total") + 1
    [negative] = [
        sheet.cell(row=r, column=gross_column) for r in range(2, sheet.max_row + 1)
        if sheet.cell(row=r, column=header.index("invoice_number") + 1).value == "'" + HOSTILE_NUMBER
    ]
    assert negative.data_type == "n" and negative.value == NEGATIVE_GROSS

    frame = pd.read_excel(path, dtype={"partner_name": str})
    assert sorted(frame["partner_name"]) == EXPECTED_NAMES
    assert pd.api.types.is_numeric_dtype(frame["gross_total"])
    assert frame["gross_total"].min() == NEGATIVE_GROSS


def test_report_views_are_neutralized_too(hostile, tmp_path):
    csv_path, xlsx_path = tmp_path / "balances.csv", tmp_path / "balances.xlsx"
    for output_format, path in (("csv", csv_path), ("xlsx", xlsx_path)):
        result = invoke_cli(hostile, "report", "partner-balances", "--company", SLUG,
                      "--format", output_format, "--output", str(path))
        assert result.exit_code == 0, result.output
    from_csv = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    from_xlsx = pd.read_excel(xlsx_path, dtype={"partner_name": str})
    # Which invoices count as open receivables is the view's business (the simulator draws the
    # rest of each document); every name it shows must be the neutralized one.
    names = sorted(from_csv["partner_name"])
    assert names == sorted(from_xlsx["partner_name"])
    assert set(names) <= set(EXPECTED_NAMES) and len(names) >= len(HOSTILE_NAMES) - 2
    assert names.count("'" + HYPERLINK) == 2  # the modification's partner and the invoice's
    _assert_no_formula(xlsx_path)
    assert pd.api.types.is_numeric_dtype(pd.read_csv(csv_path)["open_huf"])


def test_terminal_table_shows_no_control_characters(hostile):
    result = invoke_cli(hostile, "invoices", "--company", SLUG)
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.stdout and "\x07" not in result.stdout and "\r" not in result.stdout
    lines = result.stdout.splitlines()
    # header, rule, one line per invoice and the paging line: no name broke a row in two
    assert len(lines) == 2 + len(HOSTILE_NAMES) + 1 + 1


def test_existing_output_is_refused_and_kept_unless_force(hostile, tmp_path):
    for output_format in ("csv", "xlsx", "table"):
        folder = tmp_path / output_format
        folder.mkdir()
        path = folder / f"export.{output_format}"
        path.write_bytes(b"precious, not an export\n")
        line = _one_error_line(invoke_cli(hostile, "invoices", "--company", SLUG, "--format", output_format,
                                    "--output", str(path)))
        assert line == f"error: {path} already exists; nothing written (pass --force to replace it)"
        assert path.read_bytes() == b"precious, not an export\n"
        line = _one_error_line(invoke_cli(hostile, "report", "outstanding", "--company", SLUG, "--format", output_format,
                                    "--output", str(path)))
        assert "already exists" in line and path.read_bytes() == b"precious, not an export\n"

        result = invoke_cli(hostile, "invoices", "--company", SLUG, "--format", output_format, "--output", str(path),
                      "--force")
        assert result.exit_code == 0, result.output
        assert result.stdout == f"wrote {len(HOSTILE_NAMES) + 1} rows to {path} (replaced the existing file)\n"
        assert b"precious" not in path.read_bytes()
        assert sorted(p.name for p in folder.iterdir()) == [path.name]  # no temporary file left
        if output_format == "xlsx":
            _assert_no_formula(path)


def test_output_symlink_directory_and_missing_folder(hostile, tmp_path):
    target = tmp_path / "target.txt"
    target.write_text("keep me\n")
    link = tmp_path / "link.csv"
    link.symlink_to(target)
    assert "already exists" in _one_error_line(
        invoke_cli(hostile, "invoices", "--company", SLUG, "--format", "csv", "--output", str(link)))
    assert target.read_text() == "keep me\n"

    assert _one_error_line(invoke_cli(hostile, "invoices", "--company", SLUG, "--format", "csv", "--output",
                                str(tmp_path))) == f"error: --output {tmp_path} is a directory, not a file"

    missing = tmp_path / "no" / "such" / "folder.csv"
    line = _one_error_line(invoke_cli(hostile, "invoices", "--company", SLUG, "--format", "csv", "--output", str(missing)))
    assert line == f"error: cannot write {missing}: No such file or directory"
    line = _one_error_line(invoke_cli(hostile, "invoices", "--company", SLUG, "--format", "csv", "--output", str(missing),
                                "--force"))
    assert line == f"error: cannot write {missing}: No such file or directory"
    assert not (tmp_path / "no").exists()


ABSURD_NUMBERS = [
    (["--page", "99999999999999999999"], "error: page must be between 1 and 1000000000, got 99999999999999999999"),
    (["--page", "0"], "error: page must be between 1 and 1000000000, got 0"),
    (["--page", "-3"], "error: page must be between 1 and 1000000000, got -3"),
    (["--page", "9" * 5000], "error: page must be between 1 and 1000000000, got a number of 5000 digits"),
    (["--page", "1e3"], "error: page must be a whole number, got '1e3'"),
    (["--page-size", "99999999999999999999"], "error: page size must be between 1 and 10000, got 99999999999999999999"),
    (["--page-size", "10001"], "error: page size must be between 1 and 10000, got 10001"),
    (["--page-size", "many"], "error: page size must be a whole number, got 'many'"),
]


def test_absurd_numbers_are_one_line_errors(hostile, tmp_path):
    out = tmp_path / "never.csv"
    for args, message in ABSURD_NUMBERS:
        assert _one_error_line(invoke_cli(hostile, "invoices", "--company", SLUG, *args)) == message
        result = invoke_cli(hostile, "invoices", "--company", SLUG, "--format", "csv", "--output", str(out), *args)
        assert _one_error_line(result) == message and not out.exists()


def test_largest_page_is_an_empty_page_not_an_overflow(hostile):
    result = invoke_cli(hostile, "invoices", "--company", SLUG, "--page", str(MAX_PAGE), "--page-size", "10000")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["(no rows)", f"page {MAX_PAGE} of 1 ({len(HOSTILE_NAMES) + 1} invoices)"]


# --- the pure functions ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (HYPERLINK, "'" + HYPERLINK),
        ("+1", "'+1"), ("-1", "'-1"), ("@x", "'@x"), ("\tx", "'\tx"), ("\rx", "'\rx"), ("\nx", "'\nx"),
        ("a=b", "a=b"), ("'=already quoted", "'=already quoted"), ("", ""), (" =1", " =1"), ("Kft.", "Kft."),
    ],
)
def test_neutralize_formula(text, expected):
    assert neutralize_formula(text) == expected


def test_clean_text_replaces_every_control_character_and_keeps_tab_and_newline():
    controls = "".join(chr(c) for c in range(0x20)) + "\x7f" + "".join(chr(c) for c in range(0x80, 0xA0))
    cleaned = clean_text(controls)
    assert cleaned == "\ufffd" * 9 + "\t\n" + "\ufffd" * 2 + "\n" + "\ufffd" * (0x20 - 14) + "\ufffd" * 33
    assert clean_text("a\r\nb\rc\nd") == "a\nb\nc\nd"
    assert clean_text("lone \ud800 surrogate, \ufffe\uffff") == "lone \ufffd surrogate, \ufffd\ufffd"
    assert clean_text("Árvíztűrő tükörfúrógép 🧾 עברית") == "Árvíztűrő tükörfúrógép 🧾 עברית"
    assert spreadsheet_text("\r\x00=1") == "'\n\ufffd=1"


def test_safe_frame_touches_only_text():
    frame = pd.DataFrame({
        "=header": ["=a", None],
        "amount": [Decimal("-5.00"), Decimal("1.00")],
        "count": pd.array([-1, None], dtype="Int64"),
        "flag": pd.array([True, None], dtype="boolean"),
        "day": [dt.date(2026, 1, 1), None],
    })
    safe = safe_frame(frame)
    assert list(safe.columns) == ["'=header", "amount", "count", "flag", "day"]
    assert safe["'=header"].tolist()[0] == "'=a" and safe["'=header"].isna().tolist()[1]
    assert safe["amount"].tolist() == [Decimal("-5.00"), Decimal("1.00")]
    assert safe["count"].dtype == "Int64" and safe["count"][0] == -1
    assert safe["flag"].dtype == "boolean"
    assert safe["day"][0] == dt.date(2026, 1, 1)
    assert frame.columns[0] == "=header" and frame["=header"][0] == "=a"  # the input is unchanged


def test_write_xlsx_survives_every_character_and_excel_limits(tmp_path):
    every_control = "".join(chr(c) for c in range(0x20)) + "\x7f\x9b"
    frame = pd.DataFrame({
        "=SUM(1)": [every_control, "=1+1", "x" * (EXCEL_CELL_LIMIT + 10)],
        "amount": [Decimal("-1.50"), Decimal("0"), Decimal("2")],
    })
    path = tmp_path / "hostile.xlsx"
    write_xlsx(frame, path, sheet_name="'=[evil]:*?/\\\x00 sheet name longer than thirty-one'")
    rows = _assert_no_formula(path)
    assert rows[0] == ("'=SUM(1)", "amount")
    assert rows[1][0] == clean_text(every_control) and rows[1][1] == -1.5
    assert rows[2][0] == "'=1+1"
    assert len(rows[3][0]) == EXCEL_CELL_LIMIT and rows[3][0].endswith("\u2026")
    assert openpyxl.load_workbook(path).sheetnames == ["=_evil______ sheet name longer"]

    buffer = io.StringIO()
    write_csv(frame, buffer)
    from_csv = pd.read_csv(io.StringIO(buffer.getvalue()), dtype=str, keep_default_na=False)
    assert list(from_csv.columns) == ["'=SUM(1)", "amount"]
    assert from_csv["'=SUM(1)"].tolist()[:2] == [clean_text(every_control), "'=1+1"]
    assert len(from_csv) == 3


@pytest.mark.parametrize(
    ("name", "title"),
    [("acme invoices", "acme invoices"), ("", "report"), ("'''", "report"), ("a/b\\c[d]e:f*g?h", "a_b_c_d_e_f_g_h"),
     ("x" * 40, "x" * 31), ("tab\tnew\nline\r", "tab new line")],
)
def test_sheet_title(name, title):
    assert sheet_title(name) == title


def test_format_table_cleans_controls_and_keeps_one_line_per_row():
    frame = pd.DataFrame({"name": ["\x1b[2JEvil\r\nKft.", "Tab\there"], "amount": [Decimal("-1.00"), Decimal("2.00")]})
    lines = format_table(frame).splitlines()
    assert len(lines) == 4
    assert lines[2].startswith("\ufffd[2JEvil Kft.") and lines[3].startswith("Tab here")
