"""Writing report DataFrames out: a terminal table, CSV, or an Excel workbook (.xlsx).

Money stays exact until the last step: CSV writes the Decimal's own text (``1234.50``), the
terminal table shows it with two decimals, and Excel gets a number with a ``#,##0.00`` format
(Excel has nothing but doubles, which hold any amount below 10**13 to the cent).

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
from typing import IO, Any

import numpy as np
import pandas as pd
from openpyxl import Workbook
from openpyxl.styles import Font
from openpyxl.utils import get_column_letter

__all__ = [
    "EXPORT_FORMATS",
    "clean_text",
    "format_table",
    "neutralize_formula",
    "safe_frame",
    "sheet_title",
    "spreadsheet_text",
    "write_csv",
    "write_xlsx",
]

EXPORT_FORMATS = ("table", "csv", "xlsx")
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


def format_table(frame: pd.DataFrame) -> str:
    """A plain-text table for the terminal: one header line, right-aligned numbers, empty nulls."""
    if frame.empty:
        return "(no rows)"
    texts = {name: [_cell_text(value) for value in frame[name]] for name in frame.columns}
    numeric = {name: _is_numeric(frame[name]) for name in frame.columns}
    widths = {name: max(len(_cell_text(name)), *(len(t) for t in texts[name])) for name in frame.columns}

    def line(cells: dict[str, str]) -> str:
        return "  ".join(
            cells[name].rjust(widths[name]) if numeric[name] else cells[name].ljust(widths[name])
            for name in frame.columns
        ).rstrip()

    lines = [line({name: _cell_text(name) for name in frame.columns})]
    lines.append("  ".join("-" * widths[name] for name in frame.columns))
    lines.extend(line({name: texts[name][i] for name in frame.columns}) for i in range(len(frame)))
    return "\n".join(lines)


def write_csv(frame: pd.DataFrame, target: str | Path | IO[str]) -> None:
    """UTF-8 CSV with a header; Decimals as written (``1234.50``), dates ISO, nulls empty, text
    made safe by ``spreadsheet_text``."""
    safe_frame(frame).to_csv(target, index=False, date_format="%Y-%m-%dT%H:%M:%S%z")


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


def _append_row(sheet: Any, values: list[Any]) -> None:
    sheet.append(values)
    for cell, value in zip(sheet[sheet.max_row], values):
        if isinstance(value, str):
            # openpyxl makes any text starting "=" a formula; spreadsheet_text already prevents
            # that, and the type is set so that no text can ever be stored as one.
            cell.data_type = "s"


def write_xlsx(frame: pd.DataFrame, path: str | Path | IO[bytes], *, sheet_name: str = "report") -> None:
    """An Excel workbook with one sheet: bold frozen header, typed cells, readable widths, text made
    safe by ``spreadsheet_text`` and cut to Excel's 32,767 characters a cell."""
    frame = safe_frame(frame)
    workbook = Workbook()
    sheet = workbook.active
    sheet.title = sheet_title(sheet_name)
    _append_row(sheet, [_excel_value(str(name)) for name in frame.columns])
    for cell in sheet[1]:
        cell.font = Font(bold=True)
    sheet.freeze_panes = "A2"
    for row in frame.itertuples(index=False, name=None):
        _append_row(sheet, [_excel_value(value) for value in row])
    for index, name in enumerate(frame.columns, start=1):
        values = frame[name].dropna()
        letter = get_column_letter(index)
        number_format = None
        if len(values) and all(isinstance(v, Decimal) for v in values):
            number_format = "#,##0.00"
        elif len(values) and all(isinstance(v, dt.datetime) for v in values):
            number_format = "yyyy-mm-dd hh:mm:ss"
            sheet.cell(row=1, column=index).value = f"{name} (UTC)"
        elif len(values) and all(isinstance(v, dt.date) for v in values):
            number_format = "yyyy-mm-dd"
        if number_format:
            for (cell,) in sheet.iter_rows(min_row=2, min_col=index, max_col=index):
                cell.number_format = number_format
        longest = max([len(str(name))] + [len(_cell_text(v)) for v in values.head(200)])
        sheet.column_dimensions[letter].width = min(longest + 2, _MAX_COLUMN_WIDTH)
    workbook.save(path)
