"""``GET /spendings``: incoming bills (the payables side), with exact money.

Ordered by due date, so a bill created or re-dated while we page shifts any later page: the
engine's sweep de-duplicates by id and runs another pass when a pass saw fewer distinct bills
than Billingo reports. No modification filter: a full sweep reads it whole (unchanged bills
skipped by hash), an incremental sync reads only the unpaid bills (below).
"""

from __future__ import annotations

from ..normalize import entity_field as f
from ..warehouse import schema
from ..warehouse.entities import EntityTables
from .entities import EntityEndpoint, entity_mapping

TABLES = EntityTables(schema.billingo_spendings_raw, schema.billingo_spendings, "spending_id")

FIELDS = (
    f("invoice_number", "invoice_number", "text"),
    f("category", "category", "text"),
    f("invoice_date", "invoice_date", "date"),
    f("fulfillment_date", "fulfillment_date", "date"),
    f("due_date", "due_date", "date"),
    f("paid_at", "paid_at", "date"),
    f("currency", "currency", "text"),
    f("conversion_rate", "conversion_rate", "decimal"),
    f("gross_total", "total_gross", "decimal"),
    f("vat_total", "total_vat_amount", "decimal"),
    f("gross_total_local", "total_gross_local", "decimal"),
    f("vat_total_local", "total_vat_amount_local", "decimal"),
    f("payment_method", "payment_method", "text"),
    f("created_by_nav", "is_created_by_nav", "flag"),
    f("partner_id", "partner.id", "integer"),
    f("partner_name", "partner.name", "text"),
    f("partner_tax_number", "partner.tax_code", "text"),
    # Where a payment transfer would send the money.
    f("partner_iban", "partner.iban", "text"),
    f("partner_account_number", "partner.account_number", "text"),
    f("comment", "comment", "text"),
)

RAW_ONLY = {
    "organization_id": "the company itself: the same on every spending",
    "partner.address": "the supplier's address: billingo_partners has it by partner_id",
    "partner.group_member_tax_number": "billingo_partners has it by partner_id",
    "partner.internal_comment": "free text about the supplier",
    "partner.phone": "billingo_partners has it by partner_id",
    "partner.swift": "billingo_partners has it by partner_id",
}

SPENDINGS = EntityEndpoint(
    name="spendings",
    entity="spending",
    path="/spendings",
    tables=TABLES,
    mapping=entity_mapping(FIELDS, RAW_ONLY, TABLES, entity="spending"),
    description="Incoming bills (payables): supplier, category, dates, due and paid, exact gross/VAT totals.",
    spec_schema="SpendingListItem",
    # Paid bills do not change: an incremental sync reads the unpaid ones (a page per 100), then
    # re-reads one by one the bills stored unpaid that are no longer listed (paid since, or gone).
    # A bill entered already paid waits for the next full sweep.
    incremental_filters={"payment_status": "unpaid"},
    incremental_subset=lambda spendings: spendings.c.paid_at.is_(None),
)
