"""Writing report DataFrames out: a terminal table, CSV, or an Excel workbook (.xlsx).

Money stays exact until the last step: CSV writes the Decimal's own text (``1234.50``), the
terminal table shows it with two decimals, and Excel gets a number with a ``#,##0.00`` format
(Excel has nothing but doubles, which hold any amount below 10**13 to the cent).
"""

from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd
from openpyxl import Workbook
from openpyxl.styles import Font
from openpyxl.utils import get_column_letter

__all__ = ["EXPORT_FORMATS", "format_table", "write_csv", "write_xlsx"]

EXPORT_FORMATS = ("table", "csv", "xlsx")
_MAX_COLUMN_WIDTH = 40


def _is_missing(value: Any) -> bool:
    return value is None or value is pd.NA or value is pd.NaT or (isinstance(value, float) and math.isnan(value))


def _cell_text(value: Any) -> str:
    if _is_missing(value):
        return ""
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


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
    widths = {name: max(len(str(name)), *(len(t) for t in texts[name])) for name in frame.columns}

    def line(cells: dict[str, str]) -> str:
        return "  ".join(
            cells[name].rjust(widths[name]) if numeric[name] else cells[name].ljust(widths[name])
            for name in frame.columns
        ).rstrip()

    lines = [line({name: str(name) for name in frame.columns})]
    lines.append("  ".join("-" * widths[name] for name in frame.columns))
    lines.extend(line({name: texts[name][i] for name in frame.columns}) for i in range(len(frame)))
    return "\n".join(lines)


def write_csv(frame: pd.DataFrame, target: str | Path | IO[str]) -> None:
    """UTF-8 CSV with a header; Decimals as written (``1234.50``), dates ISO, nulls empty."""
    frame.to_csv(target, index=False, date_format="%Y-%m-%dT%H:%M:%S%z")


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
    return value


def write_xlsx(frame: pd.DataFrame, path: str | Path, *, sheet_name: str = "report") -> None:
    """An Excel workbook with one sheet: bold frozen header, typed cells, readable widths."""
    workbook = Workbook()
    sheet = workbook.active
    sheet.title = sheet_name[:31]  # Excel's limit
    sheet.append([str(name) for name in frame.columns])
    for cell in sheet[1]:
        cell.font = Font(bold=True)
    sheet.freeze_panes = "A2"
    for row in frame.itertuples(index=False, name=None):
        sheet.append([_excel_value(value) for value in row])
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
