"""`billingo-pipeline invoices` and `billingo-pipeline report`: query and export the warehouse.

Both commands are registered on the main group (``billingo_pipeline.cli.main``) and take the
warehouse engine from its context object (``click.get_current_context().obj.engine``, which also
reports a warehouse that cannot be opened). This module does not import ``billingo_pipeline.cli``,
which imports it. Every error is one line on stderr starting ``error: `` and exit code 1, like the
rest of the CLI: that includes an out-of-range ``--page``/``--page-size`` and an ``--output`` file
that already exists (replaced only with ``--force``, and then atomically).
"""

from __future__ import annotations

import io
import os
import re
import secrets
import sys
from pathlib import Path
from typing import Any, NoReturn

import click
import pandas as pd

from .exports import EXPORT_FORMATS, format_table, write_csv, write_xlsx
from .queries import MAX_PAGE_SIZE, SORT_KEYS, InvoiceFilter, ReportError, parse_date, query_invoices, read_view

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
    "sync-history": "report_sync_history",
}


def _fail(message: str) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


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


def _check_output(output_format: str, output: Path | None, force: bool) -> None:
    """Refuse what cannot be written before the warehouse is read."""
    if output_format not in EXPORT_FORMATS:
        _fail(f"unknown format {output_format!r}: expected one of {', '.join(EXPORT_FORMATS)}")
    if output_format == "xlsx" and output is None:
        _fail("--format xlsx needs --output PATH (a workbook cannot go to the terminal)")
    if output is None:
        return
    if output.is_dir():
        _fail(f"--output {output} is a directory, not a file")
    if os.path.lexists(output) and not force:
        _fail(f"{output} already exists; nothing written (pass --force to replace it)")


def _render(frame: pd.DataFrame, output_format: str, sheet_name: str) -> bytes:
    if output_format == "xlsx":
        buffer = io.BytesIO()
        write_xlsx(frame, buffer, sheet_name=sheet_name)
        return buffer.getvalue()
    if output_format == "csv":
        text = io.StringIO()
        write_csv(frame, text)
        return text.getvalue().encode("utf-8")
    return (format_table(frame) + "\n").encode("utf-8")


def _write_file(output: Path, data: bytes, force: bool) -> bool:
    """Write ``data`` to ``output``, the whole file or nothing; True when a file was replaced.

    Without ``force`` the file is created exclusively (O_EXCL), so a file that appeared since the
    early check, or a symlink, is refused, never truncated. With ``force`` the data goes to a
    temporary file beside it that replaces it in one rename: a failed write leaves the old file.
    """
    if not force:
        try:
            descriptor = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            _fail(f"{output} already exists; nothing written (pass --force to replace it)")
        try:
            with os.fdopen(descriptor, "wb") as file:
                file.write(data)
        except BaseException:
            output.unlink(missing_ok=True)
            raise
        return False
    existed = os.path.lexists(output)
    temporary = output.with_name(f".{output.name}.{secrets.token_hex(4)}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
        os.replace(temporary, output)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return existed


def _emit(frame: pd.DataFrame, output_format: str, output: Path | None, sheet_name: str, force: bool) -> None:
    """Write the frame as asked; a file gets a confirmation line, stdout gets only the data.

    A file's content is rendered in full before the file is touched, so an export that fails
    creates or truncates nothing.
    """
    if output is None:
        if output_format == "csv":
            write_csv(frame, sys.stdout)
        else:
            click.echo(format_table(frame))
        return
    data = _render(frame, output_format, sheet_name)
    try:
        replaced = _write_file(output, data, force)
    except OSError as exc:
        _fail(f"cannot write {output}: {exc.strerror or exc}")
    click.echo(f"wrote {len(frame)} rows to {output}" + (" (replaced the existing file)" if replaced else ""))


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
              help=f"Rows per page, 1 to {MAX_PAGE_SIZE}.")
@click.option("--page", default=1, show_default=True, type=_BoundedInt(1, MAX_PAGE, "page"),
              help=f"Page number, 1 to {MAX_PAGE}.")
@_format_option
@_output_option
@_force_option
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
) -> None:
    """List one company's invoices with filters, sorting and paging; as a table, CSV or Excel."""
    _check_output(output_format, output, force)
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
        frame = query_invoices(
            click.get_current_context().obj.engine, company, filters,
            sort=sort, descending=descending, page_size=page_size, page=page,
        )
    except ReportError as exc:
        _fail(str(exc))
    _emit(frame, output_format, output, sheet_name=f"{company} invoices", force=force)
    if output_format == "table" and output is None:
        attrs = frame.attrs
        click.echo(f"page {attrs['page']} of {attrs['page_count']} ({attrs['total_rows']} invoices)")


@click.command("report")
@click.argument("name", metavar="REPORT")
@click.option("--company", required=True, help="Company slug.")
@_format_option
@_output_option
@_force_option
def report_command(name: str, company: str, output_format: str, output: Path | None, force: bool) -> None:
    """Show a reporting view for one company.

    REPORT is one of: receivables, outstanding, aging-by-company, aging-by-partner, cash-flow,
    partner-balances, payment-behaviour, sync-history (or a full view name, report_...).
    """
    view_name = REPORT_NAMES.get(name, name)
    if view_name not in REPORT_NAMES.values():
        _fail(f"unknown report {name!r}: expected one of {', '.join(REPORT_NAMES)}")
    _check_output(output_format, output, force)
    try:
        frame = read_view(click.get_current_context().obj.engine, view_name, company)
    except ReportError as exc:
        _fail(str(exc))
    _emit(frame, output_format, output, sheet_name=name, force=force)
