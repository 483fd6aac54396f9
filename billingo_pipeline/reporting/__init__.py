"""Reporting on the warehouse: invoice queries for notebooks and the CLI, the reporting views
(created by migration 0002, documented in docs/reporting.md), and CSV / Excel / terminal exports."""

from .exports import EXPORT_FORMATS, format_table, write_csv, write_xlsx
from .queries import (
    INVOICE_STATUSES,
    PAYMENT_STATUSES,
    REPORT_VIEWS,
    SORT_KEYS,
    InvoiceFilter,
    ReportError,
    aging_by_company,
    aging_by_partner,
    cash_flow_forecast,
    open_on,
    outstanding_invoices,
    partner_balances,
    partner_days_to_pay,
    partner_payment_behaviour,
    query_invoices,
    read_view,
    sync_history,
)

__all__ = [
    "EXPORT_FORMATS",
    "INVOICE_STATUSES",
    "PAYMENT_STATUSES",
    "REPORT_VIEWS",
    "SORT_KEYS",
    "InvoiceFilter",
    "ReportError",
    "aging_by_company",
    "aging_by_partner",
    "cash_flow_forecast",
    "format_table",
    "open_on",
    "outstanding_invoices",
    "partner_balances",
    "partner_days_to_pay",
    "partner_payment_behaviour",
    "query_invoices",
    "read_view",
    "sync_history",
    "write_csv",
    "write_xlsx",
]
