"""`billingo-pipeline invoices` and `billingo-pipeline report`: query and export the warehouse.

Both commands are registered on the main group (``billingo_pipeline.cli.main``) and take the
warehouse engine from its context object (``click.get_current_context().obj.engine``, which also
reports a warehouse that cannot be opened). This module does not import ``billingo_pipeline.cli``,
which imports it. Every error is one line on stderr starting ``error: `` and exit code 1, like the
rest of the CLI.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NoReturn

import click
import pandas as pd

from .exports import EXPORT_FORMATS, format_table, write_csv, write_xlsx
from .queries import SORT_KEYS, InvoiceFilter, ReportError, parse_date, query_invoices, read_view

__all__ = ["REPORT_NAMES", "invoices_command", "report_command"]

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


def _check_output(output_format: str, output: Path | None) -> None:
    if output_format not in EXPORT_FORMATS:
        _fail(f"unknown format {output_format!r}: expected one of {', '.join(EXPORT_FORMATS)}")
    if output_format == "xlsx" and output is None:
        _fail("--format xlsx needs --output PATH (a workbook cannot go to the terminal)")


def _emit(frame: pd.DataFrame, output_format: str, output: Path | None, sheet_name: str) -> None:
    """Write the frame as asked; a file gets a confirmation line, stdout gets only the data."""
    try:
        if output_format == "xlsx":
            write_xlsx(frame, output, sheet_name=sheet_name)
        elif output_format == "csv":
            write_csv(frame, output if output is not None else sys.stdout)
        elif output is not None:
            output.write_text(format_table(frame) + "\n", encoding="utf-8")
        else:
            click.echo(format_table(frame))
    except OSError as exc:
        _fail(f"cannot write {output}: {exc.strerror or exc}")
    if output is not None:
        click.echo(f"wrote {len(frame)} rows to {output}")


_format_option = click.option(
    "--format", "output_format", default="table", show_default=True, metavar="|".join(EXPORT_FORMATS),
    help="Terminal table, CSV, or an Excel workbook (needs --output).",
)
_output_option = click.option(
    "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="Write to this file instead of the terminal (required for xlsx).",
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
@click.option("--page-size", default=100, show_default=True, type=int)
@click.option("--page", default=1, show_default=True, type=int)
@_format_option
@_output_option
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
) -> None:
    """List one company's invoices with filters, sorting and paging; as a table, CSV or Excel."""
    _check_output(output_format, output)
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
    _emit(frame, output_format, output, sheet_name=f"{company} invoices")
    if output_format == "table" and output is None:
        attrs = frame.attrs
        click.echo(f"page {attrs['page']} of {attrs['page_count']} ({attrs['total_rows']} invoices)")


@click.command("report")
@click.argument("name", metavar="REPORT")
@click.option("--company", required=True, help="Company slug.")
@_format_option
@_output_option
def report_command(name: str, company: str, output_format: str, output: Path | None) -> None:
    """Show a reporting view for one company.

    REPORT is one of: receivables, outstanding, aging-by-company, aging-by-partner, cash-flow,
    partner-balances, payment-behaviour, sync-history (or a full view name, report_...).
    """
    view_name = REPORT_NAMES.get(name, name)
    if view_name not in REPORT_NAMES.values():
        _fail(f"unknown report {name!r}: expected one of {', '.join(REPORT_NAMES)}")
    _check_output(output_format, output)
    try:
        frame = read_view(click.get_current_context().obj.engine, view_name, company)
    except ReportError as exc:
        _fail(str(exc))
    _emit(frame, output_format, output, sheet_name=name)
