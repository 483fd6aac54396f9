"""The normalization core against the Billingo API v3 spec: plain pytest, no Dagster, no database.

The fixtures are JSON text parsed with ``json.loads``, so amounts reach the normalizer as the same
floats and ints a real response produces.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
import yaml

from billingo_pipeline.normalize import (
    MAPPED_FIELDS,
    PAID_STATUSES,
    RAW_ONLY_FIELDS,
    ColumnLimit,
    DocumentError,
    RowLimits,
    change_hash,
    content_hash,
    normalize_document,
    parse_vat_percent,
    to_decimal,
)
from billingo_pipeline.warehouse import schema

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SPEC = REPO_ROOT.parent / "shared" / "billingo-api-v3" / "openapi.yaml"

# Columns the writer fills, not the normalizer.
WRITER_INVOICE_COLUMNS = {"id", "company_id", "source_hash", "first_seen_at", "last_changed_at", "deleted_in_source_at"}
WRITER_ITEM_COLUMNS = {"id", "company_id", "document_id"}


# --- the spec -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def spec_schemas() -> dict[str, Any]:
    """``components.schemas`` of the spec; a missing spec fails the tests (never skips them)."""
    configured = os.environ.get("BILLINGO_OPENAPI_SPEC")
    path = Path(configured) if configured else DEFAULT_SPEC
    if not path.is_file():
        pytest.fail(
            f"Billingo OpenAPI spec not found at {path} "
            f"({'from BILLINGO_OPENAPI_SPEC' if configured else 'default location'}); "
            "set BILLINGO_OPENAPI_SPEC to the openapi.yaml of Billingo API v3",
            pytrace=False,
        )
    with path.open(encoding="utf-8") as stream:
        spec = yaml.load(stream, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    return spec["components"]["schemas"]


def _resolve(schemas: Mapping[str, Any], node: Mapping[str, Any]) -> tuple[str | None, Mapping[str, Any]]:
    """(schema name or None, schema) with ``$ref`` followed."""
    name = None
    while "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        node = schemas[name]
    return name, node


# --- fixtures: every field the spec defines, as a real response would carry them -------------------

HUF_DOCUMENT = """
{
  "id": 1001,
  "invoice_number": "SZLA-2024-000123",
  "type": "invoice",
  "cancelled": false,
  "block_id": 52,
  "payment_status": "paid",
  "payment_method": "cash",
  "gross_total": 198900,
  "currency": "HUF",
  "conversion_rate": 1,
  "invoice_date": "2024-03-01",
  "fulfillment_date": "2024-03-01",
  "due_date": "2024-03-09",
  "paid_date": "2024-03-05",
  "organization": {
    "name": "Példa Kft.",
    "tax_number": "12345678-2-42",
    "bank_account": {
      "id": 7,
      "name": "OTP",
      "account_number": "11773016-12345678-00000000",
      "account_number_iban": "HU42117730161234567800000000",
      "swift": "OTPVHUHB"
    },
    "address": {"country_code": "HU", "post_code": "1051", "city": "Budapest", "address": "Október 6. utca 1."},
    "small_taxpayer": false,
    "ev_number": "",
    "eu_tax_number": "HU12345678",
    "cash_settled": false
  },
  "partner": {
    "id": 301,
    "name": "Vevő Bt.",
    "address": {"country_code": "HU", "post_code": "6720", "city": "Szeged", "address": "Kárász utca 5."},
    "emails": ["szamla@vevo.hu", "konyveles@vevo.hu"],
    "taxcode": "87654321-1-06",
    "iban": "HU93116000060000000012345676",
    "swift": "GIBAHUHB",
    "account_number": "11600006-00000000-12345676",
    "phone": "+36 62 123 4567",
    "general_ledger_number": "311",
    "tax_type": "HAS_TAX_NUMBER",
    "custom_billing_settings": {
      "payment_method": "cash",
      "document_form": "electronic",
      "due_days": 8,
      "document_currency": "HUF",
      "template_language_code": "hu",
      "discount": {"type": "percent", "value": 0}
    },
    "group_member_tax_number": ""
  },
  "document_partner": {
    "id": 301,
    "name": "Vevő Bt.",
    "address": {"country_code": "HU", "post_code": "6720", "city": "Szeged", "address": "Kárász utca 5."},
    "emails": ["szamla@vevo.hu", "konyveles@vevo.hu"],
    "taxcode": "87654321-1-06",
    "iban": "HU93116000060000000012345676",
    "swift": "GIBAHUHB",
    "account_number": "11600006-00000000-12345676",
    "phone": "+36 62 123 4567",
    "tax_type": "HAS_TAX_NUMBER"
  },
  "electronic": true,
  "comment": "Köszönjük a vásárlást!",
  "tags": ["webshop", "2024Q1"],
  "notification_status": "opened",
  "language": "hu",
  "items": [
    {
      "product_id": 9001, "name": "Webfejlesztés", "net_unit_amount": 15000, "quantity": 10, "unit": "óra",
      "net_amount": 150000, "gross_amount": 190500, "vat": "27%", "vat_amount": 40500,
      "entitlement": null, "comment": "március"
    },
    {
      "product_id": null, "name": "Szakkönyv", "net_unit_amount": 4000, "quantity": 2, "unit": "db",
      "net_amount": 8000, "gross_amount": 8400, "vat": "5%", "vat_amount": 400,
      "entitlement": null, "comment": ""
    }
  ],
  "summary": {
    "net_amount": 158000,
    "net_amount_local": 158000,
    "gross_amount_local": 198900,
    "vat_amount": 40900,
    "vat_amount_local": 40900,
    "vat_rate_summary": [
      {"vat_name": "27%", "vat_percentage": 27, "vat_rate_net_amount": 150000, "vat_rate_vat_amount": 40500,
       "vat_rate_vat_amount_local": 40500, "vat_rate_gross_amount": 190500},
      {"vat_name": "5%", "vat_percentage": 5, "vat_rate_net_amount": 8000, "vat_rate_vat_amount": 400,
       "vat_rate_vat_amount_local": 400, "vat_rate_gross_amount": 8400}
    ]
  },
  "settings": {
    "mediated_service": false,
    "without_financial_fulfillment": false,
    "online_payment": "",
    "round": "five",
    "no_send_onlineszamla_by_user": false,
    "order_number": "PO-778",
    "place_id": null,
    "instant_payment": false,
    "selected_type": "invoice"
  },
  "online_szamla_status": "done",
  "related_documents": [{"id": 998, "invoice_number": "DIJ-2024-000045"}],
  "discount": {"type": "percent", "value": 0},
  "correction_type": "invoice"
}
"""

# Unpaid, so paid_date carries the API's "today" placeholder; amounts are floats in EUR.
EUR_DOCUMENT = """
{
  "id": 1002,
  "invoice_number": "SZLA-2024-000124",
  "type": "invoice",
  "cancelled": false,
  "block_id": 52,
  "payment_status": "outstanding",
  "payment_method": "wire_transfer",
  "gross_total": 1310.72,
  "currency": "EUR",
  "conversion_rate": 392.57,
  "invoice_date": "2024-03-04",
  "fulfillment_date": "2024-03-04",
  "due_date": "2024-03-19",
  "paid_date": "2024-03-06",
  "organization": {
    "name": "Példa Kft.",
    "tax_number": "12345678-2-42",
    "bank_account": {
      "id": 8,
      "name": "OTP EUR",
      "account_number": "11773016-12345678-00000001",
      "account_number_iban": "HU15117730161234567800000001",
      "swift": "OTPVHUHB"
    },
    "address": {"country_code": "HU", "post_code": "1051", "city": "Budapest", "address": "Október 6. utca 1."},
    "small_taxpayer": false,
    "ev_number": "",
    "eu_tax_number": "HU12345678",
    "cash_settled": false
  },
  "partner": {
    "id": 302,
    "name": "Beispiel GmbH",
    "address": {"country_code": "DE", "post_code": "10115", "city": "Berlin", "address": "Invalidenstraße 117"},
    "emails": [],
    "taxcode": "DE123456789",
    "iban": "DE89370400440532013000",
    "swift": "COBADEFFXXX",
    "account_number": "",
    "phone": "",
    "general_ledger_number": "",
    "tax_type": "FOREIGN",
    "custom_billing_settings": {
      "payment_method": "wire_transfer",
      "document_form": "electronic",
      "due_days": 15,
      "document_currency": "EUR",
      "template_language_code": "en",
      "discount": {"type": "percent", "value": 0}
    },
    "group_member_tax_number": ""
  },
  "document_partner": {
    "id": 302,
    "name": "Beispiel GmbH",
    "address": {"country_code": "DE", "post_code": "10115", "city": "Berlin", "address": "Invalidenstraße 117"},
    "emails": [],
    "taxcode": "DE123456789",
    "iban": "DE89370400440532013000",
    "swift": "COBADEFFXXX",
    "account_number": "",
    "phone": "",
    "tax_type": "FOREIGN"
  },
  "electronic": false,
  "comment": "",
  "tags": [],
  "notification_status": "none",
  "language": "en",
  "items": [
    {
      "product_id": 9002, "name": "Consulting", "net_unit_amount": 102.88, "quantity": 12, "unit": "hour",
      "net_amount": 1234.56, "gross_amount": 1234.56, "vat": "EUK", "vat_amount": 0,
      "entitlement": "EUFAD37", "comment": "Reverse charge"
    },
    {
      "product_id": 9003, "name": "Conference ticket (Budapest)", "net_unit_amount": 19.99, "quantity": 3,
      "unit": "pcs", "net_amount": 59.97, "gross_amount": 76.16, "vat": "27%", "vat_amount": 16.19,
      "entitlement": null, "comment": ""
    }
  ],
  "summary": {
    "net_amount": 1294.53,
    "net_amount_local": 508193.64,
    "gross_amount_local": 514549.35,
    "vat_amount": 16.19,
    "vat_amount_local": 6355.71,
    "vat_rate_summary": [
      {"vat_name": "EUK", "vat_percentage": 0, "vat_rate_net_amount": 1234.56, "vat_rate_vat_amount": 0,
       "vat_rate_vat_amount_local": 0, "vat_rate_gross_amount": 1234.56},
      {"vat_name": "27%", "vat_percentage": 27, "vat_rate_net_amount": 59.97, "vat_rate_vat_amount": 16.19,
       "vat_rate_vat_amount_local": 6355.71, "vat_rate_gross_amount": 76.16}
    ]
  },
  "settings": {
    "mediated_service": false,
    "without_financial_fulfillment": false,
    "online_payment": "no",
    "round": "none",
    "no_send_onlineszamla_by_user": false,
    "order_number": "",
    "place_id": null,
    "instant_payment": false,
    "selected_type": "invoice"
  },
  "online_szamla_status": "received",
  "related_documents": [],
  "discount": {"type": "percent", "value": 0},
  "correction_type": "invoice"
}
"""


def _huf() -> dict[str, Any]:
    return json.loads(HUF_DOCUMENT)


def _eur() -> dict[str, Any]:
    return json.loads(EUR_DOCUMENT)


def _typed(row: Mapping[str, object]) -> dict[str, tuple[str, object]]:
    """Compare values with their types: Decimal("5") == 5.0 and True == 1 would hide a leak."""
    return {column: (type(value).__name__, value) for column, value in row.items()}


def _set(document: dict[str, Any], path: tuple[str | int, ...], value: object) -> dict[str, Any]:
    target: Any = document
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return document


@pytest.mark.parametrize("name, document", [("HUF", HUF_DOCUMENT), ("EUR", EUR_DOCUMENT)])
def test_fixtures_carry_every_field_the_spec_defines(spec_schemas, name, document):
    missing: list[str] = []

    def walk(node: Mapping[str, Any], value: object, path: str) -> None:
        schema_name, node = _resolve(spec_schemas, node)
        if node.get("type") == "array" and isinstance(value, list):
            for index, element in enumerate(value):
                walk(node["items"], element, f"{path}[{index}]")
        elif "properties" in node and isinstance(value, dict):
            for prop, prop_node in node["properties"].items():
                if prop not in value:
                    missing.append(f"{path}.{prop} ({schema_name})")
                else:
                    walk(prop_node, value[prop], f"{path}.{prop}")

    walk(spec_schemas["Document"], json.loads(document), name)
    assert missing == []


# --- full documents, every column -----------------------------------------------------------------


def test_huf_invoice_every_column():
    normalized = normalize_document(_huf())

    assert normalized.document_id == 1001
    assert _typed(normalized.invoice) == _typed({
        "document_id": 1001,
        "invoice_number": "SZLA-2024-000123",
        "document_type": "invoice",
        "correction_type": "invoice",
        "block_id": 52,
        "cancelled": False,
        "invoice_date": dt.date(2024, 3, 1),
        "fulfillment_date": dt.date(2024, 3, 1),
        "due_date": dt.date(2024, 3, 9),
        "paid_date": dt.date(2024, 3, 5),
        "currency": "HUF",
        "conversion_rate": Decimal("1"),
        "net_total": Decimal("158000"),
        "vat_total": Decimal("40900"),
        "gross_total": Decimal("198900"),
        "net_total_local": Decimal("158000"),
        "vat_total_local": Decimal("40900"),
        "gross_total_local": Decimal("198900"),
        "payment_method": "cash",
        "payment_status": "paid",
        "rounding": "five",
        "language": "hu",
        "electronic": True,
        "partner_id": 301,
        "partner_name": "Vevő Bt.",
        "partner_tax_number": "87654321-1-06",
        "partner_iban": "HU93116000060000000012345676",
        "partner_swift": "GIBAHUHB",
        "partner_account_number": "11600006-00000000-12345676",
        "partner_country_code": "HU",
        "partner_post_code": "6720",
        "partner_city": "Szeged",
        "partner_address": "Kárász utca 5.",
        "partner_emails": "szamla@vevo.hu,konyveles@vevo.hu",
        "comment": "Köszönjük a vásárlást!",
    })
    assert [_typed(item) for item in normalized.items] == [
        _typed({
            "position": 1,
            "product_id": 9001,
            "name": "Webfejlesztés",
            "quantity": Decimal("10"),
            "unit": "óra",
            "net_unit_price": Decimal("15000"),
            "vat_rate": "27%",
            "vat_percent": Decimal("27"),
            "entitlement": None,
            "net_amount": Decimal("150000"),
            "vat_amount": Decimal("40500"),
            "gross_amount": Decimal("190500"),
            "comment": "március",
        }),
        _typed({
            "position": 2,
            "product_id": None,
            "name": "Szakkönyv",
            "quantity": Decimal("2"),
            "unit": "db",
            "net_unit_price": Decimal("4000"),
            "vat_rate": "5%",
            "vat_percent": Decimal("5"),
            "entitlement": None,
            "net_amount": Decimal("8000"),
            "vat_amount": Decimal("400"),
            "gross_amount": Decimal("8400"),
            "comment": "",
        }),
    ]


def test_eur_invoice_every_column():
    normalized = normalize_document(_eur())

    assert normalized.document_id == 1002
    assert _typed(normalized.invoice) == _typed({
        "document_id": 1002,
        "invoice_number": "SZLA-2024-000124",
        "document_type": "invoice",
        "correction_type": "invoice",
        "block_id": 52,
        "cancelled": False,
        "invoice_date": dt.date(2024, 3, 4),
        "fulfillment_date": dt.date(2024, 3, 4),
        "due_date": dt.date(2024, 3, 19),
        "paid_date": None,  # outstanding: the payload's "2024-03-06" is the API's "today"
        "currency": "EUR",
        "conversion_rate": Decimal("392.57"),
        "net_total": Decimal("1294.53"),
        "vat_total": Decimal("16.19"),
        "gross_total": Decimal("1310.72"),
        "net_total_local": Decimal("508193.64"),
        "vat_total_local": Decimal("6355.71"),
        "gross_total_local": Decimal("514549.35"),
        "payment_method": "wire_transfer",
        "payment_status": "outstanding",
        "rounding": "none",
        "language": "en",
        "electronic": False,
        "partner_id": 302,
        "partner_name": "Beispiel GmbH",
        "partner_tax_number": "DE123456789",
        "partner_iban": "DE89370400440532013000",
        "partner_swift": "COBADEFFXXX",
        "partner_account_number": "",
        "partner_country_code": "DE",
        "partner_post_code": "10115",
        "partner_city": "Berlin",
        "partner_address": "Invalidenstraße 117",
        "partner_emails": None,  # an empty list is no address
        "comment": "",
    })
    assert [_typed(item) for item in normalized.items] == [
        _typed({
            "position": 1,
            "product_id": 9002,
            "name": "Consulting",
            "quantity": Decimal("12"),
            "unit": "hour",
            "net_unit_price": Decimal("102.88"),
            "vat_rate": "EUK",
            "vat_percent": None,
            "entitlement": "EUFAD37",
            "net_amount": Decimal("1234.56"),
            "vat_amount": Decimal("0"),
            "gross_amount": Decimal("1234.56"),
            "comment": "Reverse charge",
        }),
        _typed({
            "position": 2,
            "product_id": 9003,
            "name": "Conference ticket (Budapest)",
            "quantity": Decimal("3"),
            "unit": "pcs",
            "net_unit_price": Decimal("19.99"),
            "vat_rate": "27%",
            "vat_percent": Decimal("27"),
            "entitlement": None,
            "net_amount": Decimal("59.97"),
            "vat_amount": Decimal("16.19"),
            "gross_amount": Decimal("76.16"),
            "comment": "",
        }),
    ]
    # Exact decimals add up where floats would not (1234.56 + 59.97 == 1294.5300000000002).
    assert sum(item["net_amount"] for item in normalized.items) == normalized.invoice["net_total"]


def test_rows_have_exactly_the_warehouse_columns():
    normalized = normalize_document(_huf())
    invoice_columns = {column.name for column in schema.billingo_invoices.columns} - WRITER_INVOICE_COLUMNS
    item_columns = {column.name for column in schema.billingo_invoice_items.columns} - WRITER_ITEM_COLUMNS

    assert (sorted(invoice_columns - set(normalized.invoice)), sorted(set(normalized.invoice) - invoice_columns)) == ([], [])
    assert normalized.items
    for item in normalized.items:
        assert (sorted(item_columns - set(item)), sorted(set(item) - item_columns)) == ([], [])


# --- the mapping is complete against the spec -----------------------------------------------------


def test_every_spec_field_is_mapped_or_raw_only(spec_schemas):
    """Walk Document and the objects the normalizer reads field by field (DocumentItem,
    DocumentPartner, DocumentSummary, DocumentSettings, Address): every property is mapped or raw-only.
    """
    # Objects mapped field by field: the proper prefixes of mapped paths ("summary", "items[]", ...).
    containers = {path.rsplit(".", depth)[0] for path in MAPPED_FIELDS for depth in range(1, path.count(".") + 1)}
    unaccounted: list[str] = []
    spec_paths: set[str] = set()
    walked_schemas: set[str] = set()

    def walk(schema_name: str, prefix: str) -> None:
        walked_schemas.add(schema_name)
        for prop, prop_node in spec_schemas[schema_name]["properties"].items():
            path = prefix + prop
            spec_paths.add(path)
            ref_name, prop_node = _resolve(spec_schemas, prop_node)
            if prop_node.get("type") == "array" and f"{path}[]" in containers:
                walk(_resolve(spec_schemas, prop_node["items"])[0], f"{path}[].")
            elif path in containers:
                walk(ref_name, f"{path}.")
            elif path not in MAPPED_FIELDS and path not in RAW_ONLY_FIELDS:
                unaccounted.append(f"{schema_name}.{prop} (path {path!r})")

    walk("Document", "")

    assert not unaccounted, (
        f"spec fields neither mapped nor listed as raw-only: {', '.join(unaccounted)}; map them in "
        "INVOICE_FIELDS / ITEM_FIELDS or list them with a reason in RAW_ONLY_FIELDS (billingo_pipeline/normalize.py)"
    )
    assert {"Document", "DocumentItem", "DocumentPartner", "DocumentSummary", "DocumentSettings", "Address"} <= walked_schemas
    # The tables name only real spec fields (a typo would otherwise read as "covered").
    assert sorted(set(MAPPED_FIELDS) - spec_paths) == []
    assert sorted(set(RAW_ONLY_FIELDS) - spec_paths) == []
    assert sorted(set(MAPPED_FIELDS) & set(RAW_ONLY_FIELDS)) == []


# --- live-API rules -------------------------------------------------------------------------------


def test_paid_statuses_exist_in_the_spec(spec_schemas):
    assert PAID_STATUSES <= set(spec_schemas["PaymentStatus"]["enum"])


def _payment_statuses() -> list[str]:
    # The enum as of 3.0.14; test_paid_date_for_every_spec_payment_status checks it is still complete.
    return ["expired", "none", "outstanding", "paid", "partially_paid"]


@pytest.mark.parametrize("status", _payment_statuses())
def test_paid_date_kept_only_for_paid_and_partially_paid(status):
    document = _set(_huf(), ("payment_status",), status)

    paid_date = normalize_document(document).invoice["paid_date"]

    assert paid_date == (dt.date(2024, 3, 5) if status in ("paid", "partially_paid") else None)


def test_paid_date_for_every_spec_payment_status(spec_schemas):
    assert sorted(spec_schemas["PaymentStatus"]["enum"]) == _payment_statuses()


@pytest.mark.parametrize("status", [None, "refunded"])
def test_paid_date_dropped_for_missing_or_unknown_status(status):
    assert normalize_document(_set(_huf(), ("payment_status",), status)).invoice["paid_date"] is None


def test_discarded_paid_date_is_not_validated():
    # Never stored, so a placeholder the API invents cannot fail the document.
    document = _set(_set(_huf(), ("payment_status",), "outstanding"), ("paid_date",), "0000-00-00")

    assert normalize_document(document).invoice["paid_date"] is None


def test_kept_paid_date_is_validated():
    with pytest.raises(DocumentError, match="paid_date"):
        normalize_document(_set(_huf(), ("paid_date",), "0000-00-00"))


def test_unknown_enum_values_are_kept_as_text():
    document = _huf()
    document.update(
        type="recurring_invoice", payment_method="revolut", currency="MKD", language="cz",
        payment_status="refunded", correction_type="storno",
    )
    document["settings"]["round"] = "fifty"
    document["items"][0].update(vat="25,5%", entitlement="WITHOUT_ENTITLEMENT")

    normalized = normalize_document(document)

    assert {key: normalized.invoice[key] for key in (
        "document_type", "payment_method", "currency", "language", "payment_status", "correction_type", "rounding",
    )} == {
        "document_type": "recurring_invoice", "payment_method": "revolut", "currency": "MKD", "language": "cz",
        "payment_status": "refunded", "correction_type": "storno", "rounding": "fifty",
    }
    item = normalized.items[0]
    assert (item["vat_rate"], item["vat_percent"], item["entitlement"]) == ("25,5%", Decimal("25.5"), "WITHOUT_ENTITLEMENT")


def test_unknown_fields_are_ignored():
    document = _huf()
    # Fields the unpublished 3.0.15 spec adds, and the live API already sends.
    document["recurring_id"] = 17
    document["items"][0].update(sku="WEB-01", ean="5999999999999", is_deposit_fee=False)
    document["document_partner"]["partner_shipping"] = {"city": "Szeged"}
    document["settings"]["should_send_email"] = True
    document["summary"]["something_new"] = [1, 2]

    assert normalize_document(document) == normalize_document(_huf())


def test_deprecated_partner_is_ignored_when_it_disagrees():
    document = _huf()
    document["partner"].update(id=999, name="Régi Név Kft.", taxcode="11111111-1-11", emails=["old@example.com"])
    document["partner"]["address"]["city"] = "Debrecen"

    assert normalize_document(document) == normalize_document(_huf())


@pytest.mark.parametrize("document_partner", ["absent", None])
def test_partner_columns_none_without_document_partner(document_partner):
    document = _huf()
    if document_partner == "absent":
        del document["document_partner"]
    else:
        document["document_partner"] = None

    invoice = normalize_document(document).invoice

    # The deprecated partner is still in the payload, and still not used.
    assert {column: value for column, value in invoice.items() if column.startswith("partner_")} == {
        column: None for column in invoice if column.startswith("partner_")
    }


def test_raw_only_fields_are_not_validated():
    document = _huf()
    document.update(organization="junk", partner=42, tags="not-a-list", related_documents={}, discount=None)
    document["summary"]["vat_rate_summary"] = "junk"

    assert normalize_document(document).invoice == normalize_document(_huf()).invoice


@pytest.mark.parametrize("items", ["absent", None, []])
def test_document_without_items(items):
    document = _huf()
    if items == "absent":
        del document["items"]
    else:
        document["items"] = items

    assert normalize_document(document).items == ()


@pytest.mark.parametrize("cancelled, expected", [("absent", False), (None, False), (True, True)])
def test_cancelled_defaults_to_false(cancelled, expected):
    document = _huf()
    if cancelled == "absent":
        del document["cancelled"]
    else:
        document["cancelled"] = cancelled

    assert normalize_document(document).invoice["cancelled"] is expected


def test_empty_date_string_is_no_date():
    assert normalize_document(_set(_huf(), ("fulfillment_date",), "")).invoice["fulfillment_date"] is None


def test_partner_emails_skip_blank_addresses():
    document = _set(_huf(), ("document_partner", "emails"), ["", " a@vevo.hu ", "b@vevo.hu"])

    assert normalize_document(document).invoice["partner_emails"] == "a@vevo.hu,b@vevo.hu"


def test_payload_may_be_any_mapping():
    assert normalize_document(MappingProxyType(_huf())) == normalize_document(_huf())


# --- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path, value, field",
    [
        (("gross_total",), "12.700,00 Ft", "gross_total"),
        (("summary", "net_amount"), True, "summary.net_amount"),
        (("items", 1, "quantity"), float("nan"), "items[1].quantity"),
        (("conversion_rate",), float("inf"), "conversion_rate"),
        (("items", 0, "net_unit_amount"), "abc", "items[0].net_unit_amount"),
        (("items", 0, "vat_amount"), [400], "items[0].vat_amount"),
        (("invoice_date",), "2024-02-30", "invoice_date"),
        (("due_date",), "09/03/2024", "due_date"),
        (("fulfillment_date",), 20240301, "fulfillment_date"),
        (("items",), "none", "items"),
        (("items",), {"0": {}}, "items"),
        (("items", 1), "Szakkönyv", "items[1]"),
        (("items", 0), None, "items[0]"),
        (("invoice_number",), {"prefix": "SZLA"}, "invoice_number"),
        (("items", 0, "vat"), 27, "items[0].vat"),
        (("cancelled",), "false", "cancelled"),
        (("electronic",), 1, "electronic"),
        (("block_id",), "52", "block_id"),
        (("items", 0, "product_id"), 9001.0, "items[0].product_id"),
        (("summary",), [], "summary"),
        (("settings", "round"), 5, "settings.round"),
        (("document_partner",), "Vevő Bt.", "document_partner"),
        (("document_partner", "address"), "Szeged", "document_partner.address"),
        (("document_partner", "emails"), "szamla@vevo.hu", "document_partner.emails"),
        (("document_partner", "emails", 1), 42, "document_partner.emails[1]"),
    ],
)
def test_bad_value_names_field_and_document(path, value, field):
    with pytest.raises(DocumentError) as raised:
        normalize_document(_set(_huf(), path, value))

    error = raised.value
    assert error.document_id == 1001
    assert error.message.startswith(f"{field}: ")
    assert str(error) == f"document 1001: {error.message}"


def test_error_message_reads_like_the_payload():
    with pytest.raises(DocumentError) as raised:
        normalize_document(_set(_huf(), ("items", 1, "quantity"), "abc"))

    assert raised.value.message == "items[1].quantity: 'abc' is not a number"


@pytest.mark.parametrize("document_id", ["absent", None, "1001", 1001.0, True, 0, -3])
def test_missing_or_bad_id_raises_without_document_id(document_id):
    document = _huf()
    if document_id == "absent":
        del document["id"]
    else:
        document["id"] = document_id

    with pytest.raises(DocumentError) as raised:
        normalize_document(document)

    assert raised.value.document_id is None
    assert raised.value.message.startswith("id: ")


def test_non_object_payload():
    with pytest.raises(DocumentError) as raised:
        normalize_document([_huf()])  # type: ignore[arg-type]

    assert raised.value.document_id is None
    assert raised.value.message == "document: expected an object, got array"


def test_document_error_survives_pickling():
    import pickle

    error = pickle.loads(pickle.dumps(DocumentError("gross_total: 'x' is not a number", 7)))

    assert (error.document_id, error.message) == (7, "gross_total: 'x' is not a number")


# --- to_decimal -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, expected",
    [
        (None, None),
        (0.1, Decimal("0.1")),
        (1234.56, Decimal("1234.56")),
        (0.1 + 0.2, Decimal("0.30000000000000004")),  # what the float is: no silent rounding
        (150000, Decimal("150000")),
        (-3, Decimal("-3")),
        (1e-07, Decimal("1E-7")),
        (Decimal("1.10"), Decimal("1.10")),
        ("12.5", Decimal("12.5")),
        ("-3", Decimal("-3")),
    ],
)
def test_to_decimal_accepts(value, expected):
    result = to_decimal(value, "f")

    assert result == expected and type(result) is type(expected)


@pytest.mark.parametrize(
    "value",
    ["12.700,00 Ft", "12,5", "1 000", "", " 12.5", "1e3", "NaN", "Infinity", "12.", ".5",
     True, False, math.nan, math.inf, -math.inf, Decimal("NaN"), [1], {"amount": 1}],
)
def test_to_decimal_rejects(value):
    with pytest.raises(DocumentError) as raised:
        to_decimal(value, "summary.net_amount")

    assert raised.value.message.startswith("summary.net_amount: ")
    assert raised.value.document_id is None  # normalize_document adds it


# --- parse_vat_percent ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "vat, expected",
    [
        ("27%", Decimal("27")),
        ("5,5%", Decimal("5.5")),
        ("0%", Decimal("0")),
        ("7,7%", Decimal("7.7")),
        ("9,5%", Decimal("9.5")),
        ("25,5%", Decimal("25.5")),  # newer than the spec
        ("8,1%", Decimal("8.1")),
        ("5.5%", Decimal("5.5")),
        (" 27 % ", Decimal("27")),
        ("AAM", None),
        ("TAM", None),
        ("EU", None),
        ("EUK", None),
        ("F.AFA", None),
        ("K.AFA", None),
        ("ÁKK", None),
        ("ÁTHK", None),
        ("27", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_vat_percent(vat, expected):
    assert parse_vat_percent(vat) == expected


def test_parse_vat_percent_every_spec_vat_value(spec_schemas):
    for vat in spec_schemas["Vat"]["enum"]:
        percent = parse_vat_percent(vat)
        if vat.endswith("%"):
            assert percent == Decimal(vat[:-1].replace(",", ".")), vat
        else:
            assert percent is None, vat


# --- content_hash ---------------------------------------------------------------------------------


def _reversed_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _reversed_keys(value[key]) for key in reversed(list(value))}
    if isinstance(value, list):
        return [_reversed_keys(element) for element in value]
    return value


def test_content_hash_ignores_key_order_and_whitespace():
    document = _huf()
    compact = json.loads(json.dumps(_reversed_keys(document), separators=(",", ":")))

    assert list(compact) != list(document)
    assert content_hash(compact) == content_hash(document)
    assert content_hash(json.loads(HUF_DOCUMENT)) == content_hash(document)
    assert content_hash(MappingProxyType(document)) == content_hash(document)


def test_content_hash_changes_with_any_value():
    baseline = content_hash(_huf())

    assert content_hash(_set(_huf(), ("payment_status",), "outstanding")) != baseline
    assert content_hash(_set(_huf(), ("items", 1, "quantity"), 3)) != baseline
    assert content_hash(_set(_huf(), ("tags",), ["webshop"])) != baseline


def test_content_hash_is_sha256_of_canonical_utf8_json():
    expected = hashlib.sha256('{"a":"Árvíztűrő","b":[1,2.5]}'.encode("utf-8")).hexdigest()

    assert content_hash({"b": [1, 2.5], "a": "Árvíztűrő"}) == expected


@pytest.mark.parametrize("status", ["outstanding", "expired", "none"])
def test_change_hash_ignores_the_fake_paid_date_of_unpaid_documents(status):
    today = {"id": 1, "payment_status": status, "paid_date": "2026-11-25", "gross_total": 100}
    tomorrow = dict(today, paid_date="2026-11-26")
    assert change_hash(today) == change_hash(tomorrow)
    assert content_hash(today) != content_hash(tomorrow)  # the raw hash still sees every byte
    assert change_hash(today) != change_hash(dict(today, gross_total=101))


@pytest.mark.parametrize("status", ["paid", "partially_paid"])
def test_change_hash_sees_real_payment_dates(status):
    paid = {"id": 1, "payment_status": status, "paid_date": "2026-11-25"}
    assert change_hash(paid) != change_hash(dict(paid, paid_date="2026-11-20"))


# --- column limits: the edges the checks' shortcuts rely on ---------------------------------------
# ColumnLimit.check skips the exact decimal rounding for values well inside the column and the
# surrogate scan for ASCII text; these pin the values right at those edges.

LIMITS = schema.WAREHOUSE_ROW_LIMITS


def _refusal(document: Mapping[str, Any], limits=LIMITS) -> str | None:
    """The document's error message under ``limits``, None when it normalizes."""
    try:
        normalize_document(document, limits)
    except DocumentError as error:
        assert error.document_id == document["id"]
        return error.message
    return None


@pytest.mark.parametrize(
    "path, amount, message",
    [
        # NUMERIC(20, 6) holds 14 digits before the point; rounding to 6 places decides.
        (("gross_total",), "99999999999999.999999", None),
        (("gross_total",), "99999999999999.9999994", None),  # rounds down to the largest value
        (("gross_total",), "99999999999999.9999995", "gross_total: 9.99999999999999999995E+13 is out of range for the "
                                                     "warehouse (at most 14 digits before the decimal point)"),
        (("summary", "net_amount"), "-99999999999999.9999995", "summary.net_amount: -9.99999999999999999995E+13 is out of "
                                                               "range for the warehouse (at most 14 digits before the decimal point)"),
        (("gross_total",), "100000000000000", "gross_total: 1E+14 is out of range for the warehouse "
                                              "(at most 14 digits before the decimal point)"),
        # 13 digits rounding up to 14: one digit gained, still inside the column.
        (("gross_total",), "9999999999999.9999995", None),
        (("items", 0, "quantity"), "99999999999999.9999995", "items[0].quantity: 9.99999999999999999995E+13 is out of "
                                                             "range for the warehouse (at most 14 digits before the decimal point)"),
        (("items", 0, "net_amount"), 99999999999999.98, None),  # a float as JSON gives it
        (("conversion_rate",), "999999999999.999999995", "conversion_rate: 9.99999999999999999995E+11 is out of range "
                                                          "for the warehouse (at most 12 digits before the decimal point)"),
        (("conversion_rate",), "99999999999.999999995", None),
        # vat_percent is NUMERIC(7, 4): 3 digits before the point.
        (("items", 0, "vat"), "999.99995%", "items[0].vat: 9.9999995E+2 is out of range for the warehouse "
                                    "(at most 3 digits before the decimal point)"),
        (("items", 0, "vat"), "999.99994%", None),
        (("items", 0, "vat"), "99.99995%", None),
    ],
)
def test_decimal_limit_decided_after_rounding_to_the_column_scale(path, amount, message):
    assert _refusal(_set(_huf(), path, amount)) == message


@pytest.mark.parametrize(
    "value, message",
    [
        (2**63 - 1, None),
        (-(2**63), None),
        (2**63, "block_id: 9223372036854775808 is out of range for a 64-bit integer column"),
        (-(2**63) - 1, "block_id: -9223372036854775809 is out of range for a 64-bit integer column"),
    ],
)
def test_integer_limit_at_the_column_bounds(value, message):
    assert _refusal(_set(_huf(), ("block_id",), value)) == message


SURROGATE = "document_partner.name: contains an unpaired UTF-16 surrogate, which is not valid Unicode text"
NUL = "document_partner.name: contains a NUL character, which the warehouse cannot store"


@pytest.mark.parametrize(
    "name, message",
    [
        ("Kiss Kft.", None),
        ("Árvíztűrő Kft. 🧾 𠜎", None),  # non-ASCII, astral characters included
        ("Kiss \ud800 Kft.", SURROGATE),
        ("Árvíztűrő tükörfúrógép Kft. 🧾" + "\udfff", SURROGATE),  # only the last code point is one
        ("\ud83d\ude00", SURROGATE),  # a pair written as two code points is still two surrogates
        ("Kiss\x00Kft", NUL),
        ("Árvíztűrő\x00Kft", NUL),
        ("Ő" * 255, None),
        ("Ő" * 256, "document_partner.name: 256 characters, more than the 255 the warehouse column holds"),
    ],
)
def test_text_limits_on_ascii_and_non_ascii_text(name, message):
    assert _refusal(_set(_huf(), ("document_partner", "name"), name)) == message


def test_lone_surrogate_refused_in_an_item_too():
    document = _set(_huf(), ("items", 1, "name"), "Szakkönyv \udc00")

    assert _refusal(document) == "items[1].name: contains an unpaired UTF-16 surrogate, which is not valid Unicode text"


def test_any_mapping_at_every_level_with_limits():
    document = _huf()
    document["document_partner"]["address"] = MappingProxyType(document["document_partner"]["address"])
    document["document_partner"] = MappingProxyType(document["document_partner"])
    document["items"] = [MappingProxyType(item) for item in document["items"]]

    assert normalize_document(MappingProxyType(document), LIMITS) == normalize_document(_huf(), LIMITS)


@pytest.mark.parametrize(
    "path, value, message",
    [
        (("document_partner", "address"), "Szeged", "document_partner.address: expected an object, got string"),
        (("document_partner",), ["Vevő Bt."], "document_partner: expected an object, got array"),
        (("summary",), 158000, "summary: expected an object, got number"),
        (("items", 2), {"quantity": "két darab"}, "items[2].quantity: 'két darab' is not a number"),
        (("items", 1, "product_id"), "9001", "items[1].product_id: expected an integer, got string '9001'"),
        (("document_partner", "emails", 1), 42, "document_partner.emails[1]: expected a string, got number"),
    ],
)
def test_error_messages_name_the_path_exactly(path, value, message):
    document = _huf()
    if path[0] == "items" and len(path) == 2:
        document["items"].append(value)
    else:
        _set(document, path, value)

    assert _refusal(document, None) == message
    assert _refusal(document) == message


def test_null_object_on_the_way_gives_none_columns_under_limits():
    document = _set(_set(_huf(), ("document_partner", "address"), None), ("summary",), None)

    invoice = normalize_document(document, LIMITS).invoice

    assert [invoice[c] for c in ("partner_city", "partner_post_code", "net_total", "vat_total_local")] == [None] * 4


def test_each_row_limits_applies_its_own_columns():
    tight = RowLimits(invoice={**LIMITS.invoice, "partner_name": ColumnLimit(max_length=3, text=True)}, item=LIMITS.item)

    for _ in range(2):  # alternating, as callers with different limits would
        assert _refusal(_huf()) is None
        assert _refusal(_huf(), tight) == "document_partner.name: 8 characters, more than the 3 the warehouse column holds"


def test_row_limits_cannot_change_after_construction():
    # normalize_document compiles a RowLimits once and reuses it; a later change would go unseen.
    invoice = {"partner_name": ColumnLimit(max_length=3, text=True)}
    limits = RowLimits(invoice=invoice, item={})
    invoice["partner_name"] = ColumnLimit(max_length=300, text=True)

    assert limits.invoice["partner_name"].max_length == 3
    with pytest.raises(TypeError):
        limits.invoice["partner_name"] = ColumnLimit()  # type: ignore[index]
    assert _refusal(_huf(), limits) == "document_partner.name: 8 characters, more than the 3 the warehouse column holds"


def test_row_limits_pickle():
    import pickle

    assert pickle.loads(pickle.dumps(LIMITS)) == LIMITS


@pytest.mark.parametrize(
    "value, expected",
    [(type("Amount", (float,), {})(2.5), Decimal("2.5")), (type("Count", (int,), {})(3), Decimal("3"))],
)
def test_to_decimal_number_subclasses(value, expected):
    result = to_decimal(value, "f")

    assert result == expected and type(result) is Decimal and str(result) == str(expected)
