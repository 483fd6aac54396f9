"""Writing report DataFrames out: a terminal table, CSV, or an Excel workbook (.xlsx).

Money stays exact until the last step: CSV writes the Decimal's own text (``1234.50``), the
terminal table shows it with two decimals, and Excel gets a number with a ``#,##0.00`` format
(Excel has nothing but doubles, which hold any amount below 10**13 to the cent). Any other
Decimal (a conversion rate, an average) is a number whose format shows every decimal it has;
one of more than 15 significant digits, more than Excel keeps, is written as text so that no
digit is lost.

CSV comes in two dialects (``CSV_DIALECTS``): ``default`` is UTF-8, ``,`` and ``.`` decimals
(what pandas, Python and most tools read); ``excel-hu`` is what Excel in a Hungarian locale opens
by double-click: a UTF-8 byte order mark (without it Excel reads the file as Windows-1250 and
garbles ő and ű), ``;`` between fields and a decimal comma in numbers.

Exports of any size: ``write_csv`` and ``write_xlsx`` also take an iterable of DataFrames (the
chunks of one result, as ``queries.iter_invoice_chunks`` yields them) and write them one after
the other, so memory holds one chunk; the workbook is written in openpyxl's write-only mode.

Every text cell (headers included) is made safe for a spreadsheet before it is written, the same way
in CSV and xlsx (``spreadsheet_text``):

- control characters become U+FFFD: C0 controls except tab, LF and CR (XML 1.0, and so openpyxl,
  refuses them), DEL and C1 (invisible, and ESC/CSI drive a terminal), unpaired surrogates
  (not encodable) and U+FFFE/U+FFFF (not XML). Tab and LF stay: multi-line addresses and comments
  are real text, XML keeps them, and the CSV writer quotes a field that holds LF. CR and CR LF become
  LF, because the CSV writer does not quote a lone CR while readers (pandas, Excel) end a row on it:
  kept, it would let a value start a row of its own.
- a cell that starts with ``=``, ``+``, ``-``, ``@``, tab, CR or LF gets a leading ``'`` (OWASP's
  CSV injection advice), so no spreadsheet reads it as a formula; in xlsx such cells are also stored
  as strings explicitly. Numbers are never touched: a negative amount stays a number.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from decimal import Decimal
from pathlib import Path
from collections.abc import Iterable, Iterator
from typing import IO, Any

import numpy as np
import pandas as pd
from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.styles import Font
from openpyxl.utils import get_column_letter

__all__ = [
    "CSV_DIALECTS",
    "EXPORT_FORMATS",
    "clean_text",
    "format_table",
    "table_cells",
    "neutralize_formula",
    "safe_frame",
    "sheet_title",
    "spreadsheet_text",
    "write_csv",
    "write_xlsx",
]

EXPORT_FORMATS = ("table", "csv", "xlsx")
CSV_DIALECTS = ("default", "excel-hu")
BYTE_ORDER_MARK = "\ufeff"
# Excel keeps 15 significant digits of a number; a Decimal with more is written as text.
EXCEL_SIGNIFICANT_DIGITS = 15
MONEY_FORMAT = "#,##0.00"
_MAX_COLUMN_WIDTH = 40
# The characters a spreadsheet may start a formula with (OWASP lists = + - @ tab CR); LF because a
# CR is written as LF (see clean_text), so a value that began with CR still counts.
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r", "\n")
_CONTROL_CHARACTERS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")
_LINE_BREAK = re.compile("\r\n?")
REPLACEMENT_CHARACTER = "\ufffd"
# Excel stores at most this many characters in a cell and calls a workbook with more corrupt.
EXCEL_CELL_LIMIT = 32_767
_SHEET_TITLE_FORBIDDEN = re.compile(r"[\[\]:*?/\\]")


def clean_text(text: str) -> str:
    """``text`` without control characters (each becomes U+FFFD) and with every line break as LF."""
    return _LINE_BREAK.sub("\n", _CONTROL_CHARACTERS.sub(REPLACEMENT_CHARACTER, text))


def neutralize_formula(text: str) -> str:
    """``text`` with a leading ``'`` when a spreadsheet could read it as a formula."""
    return "'" + text if text.startswith(FORMULA_TRIGGERS) else text


def spreadsheet_text(text: str) -> str:
    """A text cell as every export writes it: cleaned, then neutralized."""
    return neutralize_formula(clean_text(text))


def _safe_cell(value: Any) -> Any:
    return spreadsheet_text(value) if isinstance(value, str) else value


def safe_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``frame`` whose headers and text cells went through ``spreadsheet_text``.

    Only ``str`` values change; Decimals, numbers, dates, flags and nulls are the same objects.
    """
    safe = frame.rename(columns=lambda name: spreadsheet_text(str(name)))
    for index, name in enumerate(frame.columns):
        column = frame.iloc[:, index]
        if column.dtype == object or pd.api.types.is_string_dtype(column):
            safe.isetitem(index, column.map(_safe_cell))
    return safe


def sheet_title(name: str) -> str:
    """A valid Excel sheet title from ``name``: no control or ``[]:*?/\\`` characters, no quote at
    either end (Excel refuses both), at most 31 characters; ``report`` if nothing is left."""
    title = _SHEET_TITLE_FORBIDDEN.sub("_", _CONTROL_CHARACTERS.sub("", name).replace("\r", "").replace("\n", " "))
    title = title.replace("\t", " ").strip("' ")[:31].rstrip("' ")
    return title or "report"


def _is_missing(value: Any) -> bool:
    return value is None or value is pd.NA or value is pd.NaT or (isinstance(value, float) and math.isnan(value))


def _cell_text(value: Any) -> str:
    if _is_missing(value):
        return ""
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    # A terminal has no formulas, but control characters move its cursor and a line break would
    # split the row: both are cleaned, and tabs and line breaks shown as spaces.
    return clean_text(str(value)).replace("\t", " ").replace("\n", " ")


def _is_numeric(column: pd.Series) -> bool:
    if pd.api.types.is_bool_dtype(column):
        return False
    if pd.api.types.is_numeric_dtype(column):
        return True
    values = column.dropna()
    return len(values) > 0 and all(isinstance(v, Decimal) for v in values)


def table_cells(frame: pd.DataFrame) -> tuple[list[str], list[dict[str, str]], list[str]]:
    """What a terminal table shows of ``frame``: its column names, each row's cells as text (empty
    nulls, cleaned of control characters) and the columns of numbers (right-aligned)."""
    columns = [_cell_text(name) for name in frame.columns]
    texts = [[_cell_text(value) for value in frame.iloc[:, index]] for index in range(len(columns))]
    rows = [{name: texts[index][row] for index, name in enumerate(columns)} for row in range(len(frame))]
    numeric = [name for index, name in enumerate(columns) if _is_numeric(frame.iloc[:, index])]
    return columns, rows, numeric


def format_table(frame: pd.DataFrame) -> str:
    """A plain-text table for the terminal: one header line, right-aligned numbers, empty nulls."""
    if frame.empty:
        return "(no rows)"
    columns, rows, numeric = table_cells(frame)
    widths = {name: max(len(name), *(len(row[name]) for row in rows)) for name in columns}

    def line(cells: dict[str, str]) -> str:
        return "  ".join(
            cells[name].rjust(widths[name]) if name in numeric else cells[name].ljust(widths[name])
            for name in columns
        ).rstrip()

    lines = [line({name: name for name in columns})]
    lines.append("  ".join("-" * widths[name] for name in columns))
    lines.extend(line(row) for row in rows)
    return "\n".join(lines)


Frames = pd.DataFrame | Iterable[pd.DataFrame]


def _chunks(frames: Frames) -> Iterator[pd.DataFrame]:
    if isinstance(frames, pd.DataFrame):
        yield frames
    else:
        yield from frames


def _decimal_comma(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value).replace(".", ",")
    return value


def _excel_hu_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Decimals as text with a decimal comma (pandas' ``decimal=`` only touches floats)."""
    converted = frame.copy()
    for index in range(len(frame.columns)):
        column = frame.iloc[:, index]
        if column.dtype == object:
            converted.isetitem(index, column.map(_decimal_comma))
    return converted


def write_csv(frames: Frames, target: str | Path | IO[str], *, dialect: str = "default") -> int:
    """CSV with a header; Decimals as written (``1234.50``, or ``1234,50`` in ``excel-hu``),
    dates ISO, nulls empty, text made safe by ``spreadsheet_text``. ``frames`` is one DataFrame or
    the chunks of one result (the header comes from the first). Returns the number of rows.

    A path is written as UTF-8 (with a byte order mark in ``excel-hu``); to an open text stream
    the byte order mark is written as the character U+FEFF, which its UTF-8 encoding makes the mark.
    """
    if dialect not in CSV_DIALECTS:
        raise ValueError(f"unknown CSV dialect {dialect!r}: expected one of {', '.join(CSV_DIALECTS)}")
    if isinstance(target, (str, Path)):
        with open(target, "w", encoding="utf-8", newline="") as file:
            return write_csv(frames, file, dialect=dialect)
    excel_hu = dialect == "excel-hu"
    if excel_hu:
        target.write(BYTE_ORDER_MARK)
    rows = 0
    for number, frame in enumerate(_chunks(frames)):
        safe = safe_frame(frame)
        if excel_hu:
            safe = _excel_hu_frame(safe)
        safe.to_csv(
            target, index=False, header=number == 0, date_format="%Y-%m-%dT%H:%M:%S%z",
            sep=";" if excel_hu else ",", decimal="," if excel_hu else ".",
        )
        rows += len(frame)
    return rows


def _excel_value(value: Any) -> Any:
    if _is_missing(value):
        return None
    if isinstance(value, pd.Timestamp):
        value = value.to_pydatetime()
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        # Excel has no time zones: timestamps are written as naive UTC (the header says so).
        return value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    if isinstance(value, np.generic):
        return value.item()  # openpyxl takes Python numbers, not numpy's
    if isinstance(value, str) and len(value) > EXCEL_CELL_LIMIT:
        return value[: EXCEL_CELL_LIMIT - 1] + "\u2026"
    return value


def _decimal_format(value: Decimal) -> str:
    """The number format that shows every decimal of ``value``; money's own for two decimals."""
    places = max(0, -int(value.as_tuple().exponent))
    if places == 2:
        return MONEY_FORMAT
    return "0" if places == 0 else "0." + "0" * min(places, 2) + "#" * max(0, places - 2)


def _xlsx_cell(sheet: Any, value: Any) -> WriteOnlyCell | None:
    value = _excel_value(value)
    if value is None:
        return None
    cell = WriteOnlyCell(sheet, value=value)
    if isinstance(value, str):
        # openpyxl makes any text starting "=" a formula; spreadsheet_text already prevents
        # that, and the type is set so that no text can ever be stored as one.
        cell.data_type = "s"
    elif isinstance(value, Decimal):
        if value.is_finite() and len(value.normalize().as_tuple().digits) > EXCEL_SIGNIFICANT_DIGITS:
            cell.value = str(value)
            cell.data_type = "s"
        else:
            cell.number_format = _decimal_format(value)
    elif isinstance(value, dt.datetime):
        cell.number_format = "yyyy-mm-dd hh:mm:ss"
    elif isinstance(value, dt.date):
        cell.number_format = "yyyy-mm-dd"
    return cell


def write_xlsx(frames: Frames, path: str | Path | IO[bytes], *, sheet_name: str = "report") -> int:
    """An Excel workbook with one sheet: bold frozen header with an autofilter, typed cells,
    readable widths, text made safe by ``spreadsheet_text`` and cut to Excel's 32,767 characters
    a cell. ``frames`` is one DataFrame or the chunks of one result: column widths and the
    "(UTC)" header of timestamp columns come from the first. Returns the number of rows."""
    chunks = _chunks(frames)
    first = safe_frame(next(chunks))
    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet(sheet_title(sheet_name))
    header = []
    for index, name in enumerate(first.columns, start=1):
        values = first[name].dropna()
        label = str(name)
        if len(values) and all(isinstance(v, dt.datetime) for v in values):
            label = f"{name} (UTC)"
        longest = max([len(str(name))] + [len(_cell_text(v)) for v in values.head(200)])
        sheet.column_dimensions[get_column_letter(index)].width = min(longest + 2, _MAX_COLUMN_WIDTH)
        cell = WriteOnlyCell(sheet, value=_excel_value(label))
        cell.data_type = "s"
        cell.font = Font(bold=True)
        header.append(cell)
    sheet.freeze_panes = "A2"
    sheet.append(header)
    rows = 0
    frame = first
    while True:
        for row in frame.itertuples(index=False, name=None):
            sheet.append([_xlsx_cell(sheet, value) for value in row])
        rows += len(frame)
        try:
            frame = safe_frame(next(chunks))
        except StopIteration:
            break
    if len(first.columns):
        sheet.auto_filter.ref = f"A1:{get_column_letter(len(first.columns))}{rows + 1}"
    workbook.save(path)
    return rows
