"""``GET /partners``: the company's partners (customers and suppliers), master data.

Newest created first; no modification filter, so every sync reads it whole and skips unchanged
partners by hash. Invoices name their partner by ``billingo_invoices.partner_id`` (the document's
``document_partner.id``) = ``billingo_partners.partner_id`` of the same company.
"""

from __future__ import annotations

from ..normalize import entity_field as f
from ..warehouse import schema
from ..warehouse.entities import EntityTables
from .entities import EntityEndpoint, entity_mapping

TABLES = EntityTables(schema.billingo_partners_raw, schema.billingo_partners, "partner_id")

FIELDS = (
    f("name", "name", "text"),
    f("tax_number", "taxcode", "text"),
    f("group_member_tax_number", "group_member_tax_number", "text"),
    f("tax_type", "tax_type", "text"),
    f("country_code", "address.country_code", "text"),
    f("post_code", "address.post_code", "text"),
    f("city", "address.city", "text"),
    f("address", "address.address", "text"),
    f("emails", "emails", "emails"),
    f("phone", "phone", "text"),
    f("iban", "iban", "text"),
    f("swift", "swift", "text"),
    f("account_number", "account_number", "text"),
    f("general_ledger_number", "general_ledger_number", "text"),
    f("default_payment_method", "custom_billing_settings.payment_method", "text"),
    f("default_due_days", "custom_billing_settings.due_days", "integer"),
)

RAW_ONLY = {
    "custom_billing_settings.discount": "the partner's default discount for new documents, an object",
    "custom_billing_settings.document_currency": "default currency of new documents; invoices carry their own",
    "custom_billing_settings.document_form": "paper or electronic default for new documents",
    "custom_billing_settings.template_language_code": "default language of new documents",
}

PARTNERS = EntityEndpoint(
    name="partners",
    entity="partner",
    path="/partners",
    tables=TABLES,
    mapping=entity_mapping(FIELDS, RAW_ONLY, TABLES, entity="partner"),
    description="The company's Billingo partners: name, tax numbers, address, e-mails, phone, bank account.",
    spec_schema="Partner",
)
