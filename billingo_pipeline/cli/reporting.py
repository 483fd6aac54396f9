"""`billingo-pipeline invoices` and `billingo-pipeline report`: query and export the warehouse.

Both commands are registered on the main group (``billingo_pipeline.cli.main``) and take the
warehouse engine from its context object (``click.get_current_context().obj.engine``, which also
reports a warehouse that cannot be opened). This module does not import the package's
``__init__``, which imports it. Every error is one line on stderr starting ``error: `` and exit code 1, like the
rest of the CLI: that includes an out-of-range ``--page``/``--page-size`` and an ``--output`` file
that already exists (replaced only with ``--force``, and then atomically). An unknown ``--columns``
name is a usage error (exit 2) that lists the valid names.

``invoices`` pages only what a person reads: the terminal table shows one page and says how to
get the next, while a CSV (to a file or stdout) or a workbook holds every matching invoice unless
``--page`` or ``--page-size`` is given on the command line.
"""

from __future__ import annotations

import io
import itertools
import os
import re
import secrets
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO, Any, NoReturn

import click
import pandas as pd
from click.core import ParameterSource

from ..terminal import echo_table
from ..reporting.exports import CSV_DIALECTS, EXPORT_FORMATS, format_table, table_cells, write_csv, write_xlsx
from ..reporting.payables import (
    PAYABLE_COLUMNS,
    PAYABLES_AGING_COLUMNS,
    payables_aging,
    payables_due,
    payables_outstanding,
)
from ..reporting.queries import (
    INVOICE_COLUMNS,
    MAX_PAGE_SIZE,
    REPORT_VIEWS,
    SORT_KEYS,
    InvoiceFilter,
    ReportError,
    iter_invoice_chunks,
    parse_date,
    query_invoices,
    read_view,
)

__all__ = ["MAX_PAGE", "REPORT_NAMES", "invoices_command", "report_command"]

# Far beyond any real portfolio, and small enough that page x page size stays a 64-bit OFFSET on
# both databases (a bigger one is an OverflowError in the driver, not an empty page).
MAX_PAGE = 1_000_000_000

# Short names for `billingo-pipeline report NAME`; the full view names are accepted too.
REPORT_NAMES = {
    "receivables": "report_receivables",
    "outstanding": "report_outstanding_invoices",
    "aging-by-company": "report_aging_by_company",
    "aging-by-partner": "report_aging_by_partner",
    "cash-flow": "report_cash_flow_forecast",
    "partner-balances": "report_partner_balances",
    "payment-behaviour": "report_partner_payment_behaviour",
    "days-to-pay": "report_partner_days_to_pay",
    "sync-history": "report_sync_history",
}
# Reports computed in Python rather than read from a view (incoming bills): name -> (function, columns).
PAYABLES_REPORTS: dict[str, tuple[Callable[..., pd.DataFrame], Sequence[str]]] = {
    "payables": (payables_outstanding, PAYABLE_COLUMNS),
    "payables-due": (payables_due, PAYABLE_COLUMNS),
    "payables-aging": (payables_aging, PAYABLES_AGING_COLUMNS),
}


def _fail(message: str) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


# A report is read for one company (--company): in the terminal its company columns say nothing.
# Files keep them: they leave the terminal and get combined with other companies' files.
COMPANY_COLUMNS = ("company_id", "company_slug")


def _chosen_columns(text: str | None, available: Sequence[str], what: str) -> list[str] | None:
    """The --columns names, in their order (None: not given); an unknown name is a usage error
    (exit 2) listing the valid ones, before the warehouse is read."""
    if text is None:
        return None
    names = list(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
    unknown = [name for name in names if name not in available]
    if unknown or not names:
        problem = f"unknown column{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}" if unknown else "no column named"
        click.echo(f"error: --columns: {problem} for {what}; valid columns: {', '.join(available)}", err=True)
        sys.exit(2)
    return names


def _shown_columns(frame_columns: Sequence[str], chosen: list[str] | None, to_terminal: bool) -> list[str]:
    if chosen is not None:
        return chosen
    return [name for name in frame_columns if not (to_terminal and name in COMPANY_COLUMNS)]


class _BoundedInt(click.ParamType):
    """A whole number in [low, high]; anything else is the CLI's one-line error, not a usage page."""

    name = "integer"

    def __init__(self, low: int, high: int, label: str):
        self.low, self.high, self.label = low, high, label

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        text = str(value).strip()
        if not re.fullmatch(r"[+-]?[0-9]+", text):
            _fail(f"{self.label} must be a whole number, got {text[:40]!r}")
        # Compared as text first: Python refuses to parse integers of more than 4,300 digits.
        digits = text.lstrip("+-").lstrip("0")
        number = int(text) if len(digits) <= len(str(self.high)) else None
        if number is None or not self.low <= number <= self.high:
            shown = text if len(text) <= 40 else f"a number of {len(digits)} digits"
            _fail(f"{self.label} must be between {self.low} and {self.high}, got {shown}")
        return number


def _check_output(output_format: str, output: Path | None, force: bool, csv_dialect: str = "default") -> None:
    """Refuse what cannot be written before the warehouse is read."""
    if output_format not in EXPORT_FORMATS:
        _fail(f"unknown format {output_format!r}: expected one of {', '.join(EXPORT_FORMATS)}")
    if csv_dialect not in CSV_DIALECTS:
        _fail(f"unknown CSV dialect {csv_dialect!r}: expected one of {', '.join(CSV_DIALECTS)}")
    if csv_dialect != "default" and output_format != "csv":
        _fail(f"--csv-dialect {csv_dialect} needs --format csv")
    if output_format == "xlsx" and output is None:
        _fail("--format xlsx needs --output PATH (a workbook cannot go to the terminal)")
    if output is None:
        return
    if output.is_dir():
        _fail(f"--output {output} is a directory, not a file")
    if os.path.lexists(output) and not force:
        _fail(f"{output} already exists; nothing written (pass --force to replace it)")


Frames = pd.DataFrame | Iterable[pd.DataFrame]


def _writer(frames: Frames, output_format: str, sheet_name: str, csv_dialect: str) -> Callable[[IO[bytes]], int]:
    """A function writing the export to a binary file and returning its row count."""

    def write(file: IO[bytes]) -> int:
        if output_format == "xlsx":
            return write_xlsx(frames, file, sheet_name=sheet_name)
        text = io.TextIOWrapper(file, encoding="utf-8", newline="", write_through=True)
        try:
            if output_format == "csv":
                return write_csv(frames, text, dialect=csv_dialect)
            frame = frames if isinstance(frames, pd.DataFrame) else pd.concat(list(frames))
            text.write(format_table(frame) + "\n")
            return len(frame)
        finally:
            text.detach()  # the caller owns (and closes) the file

    return write


def _write_file(output: Path, write: Callable[[IO[bytes]], int], force: bool) -> tuple[int, bool]:
    """Write the export to ``output``, the whole file or nothing: (rows, whether a file was replaced).

    Without ``force`` the file is created exclusively (O_EXCL), so a file that appeared since the
    early check, or a symlink, is refused, never truncated; a write that fails removes it again.
    With ``force`` the data goes to a temporary file beside it that replaces it in one rename: a
    failed write leaves the old file. The export is streamed into the file (an export of 100,000
    invoices is never held in memory whole).
    """
    if not force:
        try:
            descriptor = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            _fail(f"{output} already exists; nothing written (pass --force to replace it)")
        try:
            with os.fdopen(descriptor, "wb") as file:
                rows = write(file)
        except BaseException:
            output.unlink(missing_ok=True)
            raise
        return rows, False
    existed = os.path.lexists(output)
    temporary = output.with_name(f".{output.name}.{secrets.token_hex(4)}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(descriptor, "wb") as file:
            rows = write(file)
        os.replace(temporary, output)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return rows, existed


def _only(frames: Frames, columns: list[str]) -> Frames:
    if isinstance(frames, pd.DataFrame):
        return frames[columns]
    return (frame[columns] for frame in frames)


def _emit(
    frames: Frames, output_format: str, output: Path | None, sheet_name: str, force: bool,
    csv_dialect: str = "default", columns: list[str] | None = None,
) -> None:
    """Write the frame (or the chunks of one result) as asked, with ``columns`` only when given;
    a file gets a confirmation line, stdout gets only the data. An export that fails leaves no new
    or truncated file."""
    if columns is not None:
        frames = _only(frames, columns)
    if output is None:
        if output_format == "csv":
            write_csv(frames, sys.stdout, dialect=csv_dialect)
        else:
            frame = frames if isinstance(frames, pd.DataFrame) else pd.concat(list(frames))
            _echo_frame(frame)
        return
    try:
        rows, replaced = _write_file(output, _writer(frames, output_format, sheet_name, csv_dialect), force)
    except OSError as exc:
        _fail(f"cannot write {output}: {exc.strerror or exc}")
    click.echo(f"wrote {rows} rows to {output}" + (" (replaced the existing file)" if replaced else ""))


def _echo_frame(frame: pd.DataFrame) -> None:
    """The terminal table: as wide as the terminal in one, the plain table otherwise."""
    if frame.empty:
        click.echo(format_table(frame))
        return
    names, rows, numeric = table_cells(frame)
    echo_table(names, rows, plain=lambda: format_table(frame), numeric=numeric)


def _columns_option(available: Sequence[str]):
    return click.option(
        "--columns", "columns_text", default=None, metavar="NAME,...",
        help="Only these columns, in this order (comma-separated). "
             + (f"One of: {', '.join(available)}." if available else "The report's own column names."),
    )


_format_option = click.option(
    "--format", "output_format", default="table", show_default=True, metavar="|".join(EXPORT_FORMATS),
    help="Terminal table, CSV, or an Excel workbook (needs --output).",
)
_output_option = click.option(
    "--output", type=click.Path(path_type=Path), default=None,
    help="Write to this file instead of the terminal (required for xlsx); it must not exist yet.",
)
_force_option = click.option(
    "--force", is_flag=True, help="Replace an existing --output file (atomically: all or nothing).",
)
_csv_dialect_option = click.option(
    "--csv-dialect", default="default", show_default=True, metavar="|".join(CSV_DIALECTS),
    help="default: UTF-8, ',' and '.' decimals; excel-hu: what Hungarian Excel opens by double-click "
         "(UTF-8 with a byte order mark, ';' and decimal commas).",
)


@click.command("invoices")
@click.option("--company", required=True, help="Company slug: every query is scoped to one company.")
@click.option("--status", "statuses", multiple=True, metavar="STATUS",
              help="Repeatable: outstanding, expired, paid, partially_paid, none (Billingo's payment "
                   "statuses, not cancelled) or cancelled.")
@click.option("--invoice-date-from", metavar="YYYY-MM-DD")
@click.option("--invoice-date-to", metavar="YYYY-MM-DD")
@click.option("--due-from", metavar="YYYY-MM-DD")
@click.option("--due-to", metavar="YYYY-MM-DD")
@click.option("--paid-from", metavar="YYYY-MM-DD")
@click.option("--paid-to", metavar="YYYY-MM-DD")
@click.option("--partner-tax-number", help="12345678-1-12, an 8-digit tax base, or an EU VAT number.")
@click.option("--number", "invoice_number", help="Invoice number contains this text (case-insensitive).")
@click.option("--sort", default="date", show_default=True, metavar="|".join(SORT_KEYS),
              help="date: invoice date; amount: gross in HUF; partner: partner name.")
@click.option("--desc", "descending", is_flag=True, help="Sort descending.")
@click.option("--page-size", default=100, show_default=True, type=_BoundedInt(1, MAX_PAGE_SIZE, "page size"),
              help=f"Rows per page of the terminal table, 1 to {MAX_PAGE_SIZE}; given with CSV or xlsx, "
                   "the export holds that page only (without it, every matching invoice).")
@click.option("--page", default=1, show_default=True, type=_BoundedInt(1, MAX_PAGE, "page"),
              help=f"Page number, 1 to {MAX_PAGE}; given with CSV or xlsx, the export holds that page only.")
@_columns_option(INVOICE_COLUMNS)
@_format_option
@_output_option
@_force_option
@_csv_dialect_option
def invoices_command(
    company: str,
    statuses: tuple[str, ...],
    invoice_date_from: str | None,
    invoice_date_to: str | None,
    due_from: str | None,
    due_to: str | None,
    paid_from: str | None,
    paid_to: str | None,
    partner_tax_number: str | None,
    invoice_number: str | None,
    sort: str,
    descending: bool,
    page_size: int,
    page: int,
    output_format: str,
    output: Path | None,
    force: bool,
    csv_dialect: str,
    columns_text: str | None,
) -> None:
    """List one company's invoices with filters, sorting and paging; as a table, CSV or Excel.

    The table shows one page; CSV and xlsx hold every matching invoice unless --page or
    --page-size is given.
    """
    chosen = _chosen_columns(columns_text, INVOICE_COLUMNS, "invoices")
    _check_output(output_format, output, force, csv_dialect)
    ctx = click.get_current_context()
    paged = output_format == "table" or any(
        ctx.get_parameter_source(name) not in (ParameterSource.DEFAULT, None) for name in ("page", "page_size")
    )
    try:
        filters = InvoiceFilter(
            statuses=statuses,
            invoice_date_from=parse_date(invoice_date_from, "--invoice-date-from"),
            invoice_date_to=parse_date(invoice_date_to, "--invoice-date-to"),
            due_date_from=parse_date(due_from, "--due-from"),
            due_date_to=parse_date(due_to, "--due-to"),
            paid_date_from=parse_date(paid_from, "--paid-from"),
            paid_date_to=parse_date(paid_to, "--paid-to"),
            partner_tax_number=partner_tax_number,
            invoice_number=invoice_number,
        )
        if paged:
            frames: Frames = query_invoices(
                ctx.obj.engine, company, filters, sort=sort, descending=descending, page_size=page_size, page=page,
            )
        else:
            chunks = iter_invoice_chunks(ctx.obj.engine, company, filters, sort=sort, descending=descending)
            # The first chunk is read here, so that an unknown company or a failing query is an
            # error before any file is created.
            frames = itertools.chain([next(chunks)], chunks)
    except ReportError as exc:
        _fail(str(exc))
    _emit(
        frames, output_format, output, sheet_name=f"{company} invoices", force=force, csv_dialect=csv_dialect,
        columns=chosen,
    )
    if output_format == "table" and output is None:
        click.echo(_page_line(frames.attrs, len(frames)))


def _page_line(attrs: dict, rows: int) -> str:
    """Where the table's page sits in the result, and how to see the rest."""
    page, page_count, total = attrs["page"], attrs["page_count"], attrs["total_rows"]
    if rows == 0 or page_count == 1:
        return f"page {page} of {page_count} ({total} invoices)"
    first = (page - 1) * attrs["page_size"] + 1
    more = f"; --page {page + 1} for more" if page < page_count else ""
    return f"page {page} of {page_count} (rows {first}-{first + rows - 1} of {total} invoices{more})"


@click.command("report")
@click.argument("name", metavar="REPORT")
@click.option("--company", required=True, help="Company slug.")
@click.option("--as-of", "as_of_text", default=None, metavar="YYYY-MM-DD",
              help="Payables reports: the day ages and due dates count from (default: today, UTC).")
@_columns_option(())
@_format_option
@_output_option
@_force_option
@_csv_dialect_option
def report_command(
    name: str, company: str, output_format: str, output: Path | None, force: bool, csv_dialect: str,
    columns_text: str | None, as_of_text: str | None,
) -> None:
    """Show a reporting view for one company.

    REPORT is one of: receivables, outstanding, aging-by-company, aging-by-partner, cash-flow,
    partner-balances, payment-behaviour, sync-history (or a full view name, report_...), and for
    incoming bills payables, payables-due (due within 30 days or overdue), payables-aging.
    The terminal table leaves out the company columns (the report is one company's);
    files keep them.
    """
    payables = PAYABLES_REPORTS.get(name)
    view_name = REPORT_NAMES.get(name, name)
    if payables is None and view_name not in REPORT_NAMES.values():
        _fail(f"unknown report {name!r}: expected one of {', '.join([*REPORT_NAMES, *PAYABLES_REPORTS])}")
    if payables is not None:
        available = list(payables[1])
    else:
        available = [column.name for column in REPORT_VIEWS[view_name].table.columns]
    chosen = _chosen_columns(columns_text, available, f"report {name}")
    _check_output(output_format, output, force, csv_dialect)
    engine = click.get_current_context().obj.engine
    try:
        if payables is not None:
            frame = payables[0](engine, company, as_of=parse_date(as_of_text, "--as-of"))
        else:
            frame = read_view(engine, view_name, company)
    except ReportError as exc:
        _fail(str(exc))
    to_terminal = output_format == "table" and output is None
    _emit(
        frame, output_format, output, sheet_name=name, force=force, csv_dialect=csv_dialect,
        columns=_shown_columns(list(frame.columns), chosen, to_terminal),
    )
