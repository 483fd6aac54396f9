"""``GET /bank-accounts``: the company's own bank accounts (printed on its invoices). A reference
table, read whole every sync."""

from __future__ import annotations

from ..normalize import entity_field as f
from ..warehouse import schema
from ..warehouse.entities import EntityTables
from .entities import EntityEndpoint, entity_mapping

TABLES = EntityTables(schema.billingo_bank_accounts_raw, schema.billingo_bank_accounts, "bank_account_id")

FIELDS = (
    f("name", "name", "text"),
    f("account_number", "account_number", "text"),
    f("iban", "account_number_iban", "text"),
    f("swift", "swift", "text"),
    f("currency", "currency", "text"),
)

RAW_ONLY = {
    "need_qr": "deprecated in the spec",
}

BANK_ACCOUNTS = EntityEndpoint(
    name="bank_accounts",
    entity="bank account",
    path="/bank-accounts",
    tables=TABLES,
    mapping=entity_mapping(FIELDS, RAW_ONLY, TABLES, entity="bank account"),
    description="The company's own bank accounts: name, account number, IBAN, SWIFT, currency.",
    spec_schema="BankAccount",
)
