"""The simulator's endpoints beyond documents (partners, spendings, payment histories, document
blocks, bank accounts) against the published spec, over a real socket, without mocks.

The fixtures are test_simulator's: read-only tests share one simulator (``shared``: 400 documents
for Acme, 30 for Globex, an organization without subscription); tests that mutate data or inject
faults get their own (``sim``: 60 and 10 documents).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import re
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pytest
import requests

from billingo_pipeline.simulator import BillingoSimulator, generate_api_key
from billingo_pipeline_tests import spec
from billingo_pipeline_tests.test_simulator import (  # noqa: F401 - shared, sim and documents are fixtures
    KEY,
    OTHER_KEY,
    SHARED_COUNT,
    TODAY,
    _iban_is_valid,
    conforms,
    dec,
    documents,
    get,
    shared,
    sim,
)

LISTS = ("/partners", "/spendings", "/document-blocks", "/bank-accounts")
SINGLE = {"/partners": "Partner", "/spendings": "Spending", "/bank-accounts": "Bank account"}
TAX_NUMBER = re.compile(r"\d{8}-[1-5]-\d{2}")


def fetch_list(sim: BillingoSimulator, path: str, key: str = KEY, *, per_page: int = 100, **filters: Any) -> list[dict[str, Any]]:
    """Every page of a list endpoint, following the envelope's ``next_page_url``, each validated."""
    items: list[dict[str, Any]] = []
    page_url: str | None = requests.Request("GET", sim.base_url + path, params={"per_page": per_page, **filters}).prepare().url
    while page_url:
        body = conforms(requests.get(page_url, headers={"X-API-KEY": key}, timeout=5)).json()
        items.extend(body["data"])
        page_url = body.get("next_page_url")
    return items


def payments_of(sim: BillingoSimulator, document_id: int, key: str = KEY) -> list[dict[str, Any]]:
    return conforms(get(sim, f"/documents/{document_id}/payments", key)).json()


def total(entries: list[dict[str, Any]], key: str = "price") -> Decimal:
    return sum((dec(entry[key]) for entry in entries), Decimal(0))


@pytest.fixture(scope="module")
def partners(shared) -> list[dict[str, Any]]:
    return fetch_list(shared, "/partners")


@pytest.fixture(scope="module")
def spendings(shared) -> list[dict[str, Any]]:
    return fetch_list(shared, "/spendings")


# -- /documents stays what it was ------------------------------------------------------------------

# sha256 of these answers at seed 7/8 and TODAY, computed on main before the new endpoints existed.
DOCUMENTS_BEFORE_LEDGER = "c461cc9028b4195267952ef29d2ded9eff7d64761396132c6dfa08af225dee7b"


def test_documents_are_byte_identical_to_before_the_new_endpoints():
    digest = hashlib.sha256()
    with BillingoSimulator(rate_limit_per_minute=100_000, today=TODAY) as sim:
        sim.add_organization(KEY, name="Acme Kft.", seed=7, document_count=400)
        sim.add_organization(OTHER_KEY, name="Globex Zrt.", seed=8, document_count=30)
        get(sim, "/partners")  # the ledger exists before the documents are read: it must not touch them
        get(sim, "/spendings", OTHER_KEY)
        for key in (KEY, OTHER_KEY):
            for page in (1, 2, 4):
                body = get(sim, "/documents", key, per_page=100, page=page).content
                digest.update(body.replace(sim.base_url.encode(), b"BASE"))  # the port differs per run
        digest.update(get(sim, "/documents/10000005").content)
        digest.update(json.dumps(sim.add_document(KEY, comment="x"), sort_keys=True).encode())
    assert digest.hexdigest() == DOCUMENTS_BEFORE_LEDGER


def test_the_ledger_is_built_only_when_one_of_its_endpoints_is_asked():
    with BillingoSimulator(today=TODAY) as sim:
        organization = sim.add_organization(KEY, name="Acme Kft.", seed=1, document_count=30)
        get(sim, "/documents")
        get(sim, f"/documents/{sim.documents(KEY)[0]['id']}")
        assert organization._ledger is None
        get(sim, "/bank-accounts")
        assert organization._ledger is not None


def test_ledger_data_does_not_depend_on_which_endpoint_is_asked_first():
    def served(order: tuple[str, ...]) -> dict[str, str]:
        with BillingoSimulator(today=TODAY) as sim:
            sim.add_organization(KEY, name="Acme Kft.", seed=3, document_count=40)
            document_id = sim.documents(KEY)[5]["id"]
            paths = {"partners": "/partners?per_page=100", "spendings": "/spendings?per_page=100",
                     "payments": f"/documents/{document_id}/payments"}
            return {name: requests.get(sim.base_url + paths[name], headers={"X-API-KEY": KEY}, timeout=5).text
                    .replace(sim.base_url, "BASE") for name in order}

    assert served(("partners", "spendings", "payments")) == served(("payments", "spendings", "partners"))


# -- every answer against the spec ----------------------------------------------------------------


@pytest.mark.parametrize("path", LISTS)
@pytest.mark.parametrize("per_page", [1, 3, 100])
def test_list_pages_conform_first_last_and_past_the_end(shared, path, per_page):
    first = conforms(get(shared, path, per_page=per_page)).json()
    count = first["total"]
    last_page = max(1, -(-count // per_page))
    assert (first["per_page"], first["current_page"], first["last_page"]) == (per_page, 1, last_page)
    assert len(first["data"]) == min(per_page, count) and "prev_page_url" not in first
    if last_page > 1:
        assert first["next_page_url"] == f"{shared.base_url}{path}?per_page={per_page}&page=2"
    last = conforms(get(shared, path, per_page=per_page, page=last_page)).json()
    assert len(last["data"]) == count - (last_page - 1) * per_page and "next_page_url" not in last
    beyond = conforms(get(shared, path, per_page=per_page, page=last_page + 1)).json()
    assert beyond["data"] == [] and beyond["total"] == count and beyond["prev_page_url"].endswith(f"page={last_page}")


@pytest.mark.parametrize("path", LISTS)
def test_default_page_size_is_25_and_pages_cover_every_item_once(shared, path):
    everything = fetch_list(shared, path)
    assert len(conforms(get(shared, path)).json()["data"]) == min(25, len(everything))
    in_sevens = fetch_list(shared, path, per_page=7)
    assert [item["id"] for item in in_sevens] == [item["id"] for item in everything]
    assert len({item["id"] for item in everything}) == len(everything)


def test_list_orders_newest_first_and_spendings_by_due_date(partners, spendings, shared):
    assert [p["id"] for p in partners] == sorted((p["id"] for p in partners), reverse=True)
    assert [s["id"] for s in fetch_list(shared, "/document-blocks")] == sorted(
        (b["id"] for b in fetch_list(shared, "/document-blocks")), reverse=True)
    assert [(s["due_date"], s["id"]) for s in spendings] == sorted((s["due_date"], s["id"]) for s in spendings)


@pytest.mark.parametrize("path", list(SINGLE))
def test_single_objects_conform_and_unknown_ids_are_404(shared, path):
    items = fetch_list(shared, path)
    for item in items[:5]:
        single = conforms(get(shared, f"{path}/{item['id']}")).json()
        # The spec's list item of a spending has is_created_by_nav; its single Spending does not.
        assert single == {k: v for k, v in item.items() if k != "is_created_by_nav"}
    other_organizations = fetch_list(shared, path, OTHER_KEY)[0]["id"]
    for missing in (other_organizations, 999, "abc"):
        response = get(shared, f"{path}/{missing}")
        assert response.status_code == 404 and response.json() == {"error": {"message": f"{SINGLE[path]} {missing} not found."}}
        if missing != "abc":  # the spec's id is an integer: a word matches no operation to validate
            conforms(response)


def test_payments_conform_and_unknown_documents_are_404(shared, documents):
    for status in spec.schema("PaymentStatus")["enum"]:  # a sample: validating every answer takes long
        for document in [d for d in documents if d["payment_status"] == status][:6]:
            payments_of(shared, document["id"])
    for missing in (shared.documents(OTHER_KEY)[0]["id"], 999):
        response = conforms(get(shared, f"/documents/{missing}/payments"))
        assert response.status_code == 404 and response.json() == {"error": {"message": f"Document {missing} not found."}}


@pytest.mark.parametrize(
    "path, params, field",
    [
        ("/partners", {"per_page": 0}, "per_page"),
        ("/partners", {"page": "x"}, "page"),
        ("/spendings", {"per_page": 101}, "per_page"),
        ("/spendings", {"payment_status": "open"}, "payment_status"),
        ("/spendings", {"spending_date": "paid_at"}, "spending_date"),
        ("/spendings", {"start_date": "2026-02-30"}, "start_date"),
        ("/spendings", {"end_date": "15/03/2026"}, "end_date"),
        ("/spendings", {"spending_type": "imported"}, "spending_type"),
        ("/spendings", {"categories": "food"}, "categories"),
        ("/spendings", {"currencies": "XYZ"}, "currencies"),
        ("/spendings", {"payment_methods": "crypto"}, "payment_methods"),
        ("/document-blocks", {"type": "proforma"}, "type"),
        ("/document-blocks", {"page": 0}, "page"),
        ("/bank-accounts", {"per_page": "1e2"}, "per_page"),
    ],
)
def test_bad_query_values_are_422_naming_the_field(shared, path, params, field):
    response = get(shared, path, **params)
    body = response.json()
    assert response.status_code == 422 and body["message"]
    assert field in [error["field"] for error in body["errors"]]
    if field not in ("per_page", "page") or isinstance(params[field], int):
        conforms(response)  # a non-integer page is already invalid as a request to the spec


def test_writes_are_405_and_unknown_paths_404(shared):
    for method, path in (("POST", "/partners"), ("PUT", "/documents/1/payments"), ("DELETE", "/spendings/1")):
        response = requests.request(method, shared.base_url + path, headers={"X-API-KEY": KEY}, json=[], timeout=5)
        assert response.status_code == 405 and response.headers["Allow"] == "GET"
    unknown = get(shared, "/documents/1/payments/2")
    assert unknown.status_code == 404 and "/v3/documents/{id}/payments" in unknown.json()["error"]["message"]


# -- consistency ---------------------------------------------------------------------------------


def test_every_document_partner_is_a_partner_with_the_same_details(documents, partners):
    by_id = {p["id"]: p for p in partners}
    for document in documents:
        partner = by_id[document["document_partner"]["id"]]
        assert partner == document["partner"]  # the deprecated object is the partner itself
        for key in ("name", "taxcode", "address", "iban", "emails", "account_number", "swift", "tax_type"):
            assert document["document_partner"][key] == partner[key]


def test_partners_have_addresses_emails_iban_and_group_tax_numbers(partners):
    def properties(name: str) -> set[str]:
        return set(spec.schema(name)["properties"])

    assert len(partners) >= 40
    for partner in partners:
        assert set(partner) == properties("Partner")
        assert partner["address"]["city"] and partner["address"]["post_code"] and partner["emails"]
        if partner["iban"]:
            assert _iban_is_valid(partner["iban"])
        if partner["tax_type"] == "HAS_TAX_NUMBER":
            assert TAX_NUMBER.fullmatch(partner["taxcode"]) and partner["address"]["country_code"] == "HU"
            assert partner["iban"].startswith("HU") and partner["account_number"]
        if partner["tax_type"] == "FOREIGN":
            assert re.fullmatch(r"(ATU|DE|SK)\d{8,10}", partner["taxcode"])
    group_members = [p for p in partners if p["group_member_tax_number"]]
    assert len(group_members) == 2
    for member in group_members:  # a VAT group's number has VAT code 5, its member's own number code 4
        assert re.fullmatch(r"\d{8}-5-\d{2}", member["taxcode"])
        assert re.fullmatch(r"\d{8}-4-\d{2}", member["group_member_tax_number"])
    assert {p["tax_type"] for p in partners} == {"HAS_TAX_NUMBER", "NO_TAX_NUMBER", "FOREIGN"}


def test_payments_add_up_per_payment_status(shared, documents):
    seen: dict[str, int] = {}
    for document in documents:
        payments = get(shared, f"/documents/{document['id']}/payments").json()
        status, gross = document["payment_status"], dec(document["gross_total"])
        seen[status] = seen.get(status, 0) + bool(payments)
        if status == "paid":
            assert payments and total(payments) == gross
        elif status == "partially_paid":
            assert payments and 0 < total(payments) < gross
        else:
            assert payments == []
        if payments:
            assert max(p["date"] for p in payments) == payments[-1]["date"] == document["paid_date"]
            assert all(min(document["invoice_date"], document["paid_date"]) <= p["date"] for p in payments)
            assert all(p["price"] > 0 and p["payment_method"] == document["payment_method"] for p in payments)
            step = Decimal(1) if document["currency"] == "HUF" else Decimal("0.01")
            assert all(dec(p["price"]) == dec(p["price"]).quantize(step) for p in payments)
            if document["currency"] == "HUF":
                assert all(p["conversion_rate"] == 1 for p in payments)
    assert seen["paid"] and seen["partially_paid"] and not seen.get("outstanding") and not seen.get("expired")
    assert any(len(shared.payments(KEY, d["id"])) > 1 for d in documents if d["payment_status"] == "paid")


def test_spendings_name_suppliers_that_are_partners_with_ibans(spendings, partners):
    by_id = {p["id"]: p for p in partners}
    assert len(spendings) == SHARED_COUNT // 4
    for spending in spendings:
        partner = by_id[spending["partner"]["id"]]
        assert (spending["partner"]["name"], spending["partner"]["tax_code"], spending["partner"]["address"]) == (
            partner["name"], partner["taxcode"], partner["address"])
        assert spending["partner"]["iban"] == partner["iban"] and _iban_is_valid(partner["iban"])
    assert any(s["partner"]["group_member_tax_number"] for s in spendings)


def test_spending_amounts_dates_and_enums_add_up(spendings):
    for spending in spendings:
        rate = dec(spending["conversion_rate"])
        gross, vat = dec(spending["total_gross"]), dec(spending["total_vat_amount"])
        assert 0 <= vat < gross
        assert dec(spending["total_gross_local"]) == (gross * rate).quantize(Decimal(1), ROUND_HALF_UP)
        assert dec(spending["total_vat_amount_local"]) == (vat * rate).quantize(Decimal(1), ROUND_HALF_UP)
        if spending["currency"] == "HUF":
            assert rate == 1 and vat == ((gross - vat) * Decimal("0.27")).quantize(Decimal(1), ROUND_HALF_UP)
        else:
            assert spending["currency"] == "EUR" and 380 <= rate <= 410 and vat == 0  # reverse charge
        assert spending["fulfillment_date"] <= spending["invoice_date"] <= spending["due_date"]
        if spending["paid_at"] is not None:
            assert spending["invoice_date"] <= spending["paid_at"] <= TODAY.isoformat()
        assert spending["organization_id"] == spendings[0]["organization_id"]
    assert {s["category"] for s in spendings} <= set(spec.schema("Category")["enum"])
    assert len({s["category"] for s in spendings}) >= 5
    assert {s["currency"] for s in spendings} == {"HUF", "EUR"}
    assert {"wire_transfer", "bankcard"} <= {s["payment_method"] for s in spendings} <= {"wire_transfer", "bankcard", "cash"}
    assert {s["paid_at"] is None for s in spendings} == {True, False}
    assert {s["is_created_by_nav"] for s in spendings} == {True, False}
    assert len({(s["partner"]["id"], s["invoice_number"]) for s in spendings}) == len(spendings)


def test_bank_accounts_and_document_blocks_match_the_documents(shared, documents):
    accounts = fetch_list(shared, "/bank-accounts")
    on_documents = documents[0]["organization"]["bank_account"]
    [huf] = [a for a in accounts if a["currency"] == "HUF"]
    assert {k: huf[k] for k in on_documents} == on_documents
    assert {a["currency"] for a in accounts} == {"HUF", "EUR"} and all(_iban_is_valid(a["account_number_iban"]) for a in accounts)

    blocks = {b["id"]: b for b in fetch_list(shared, "/document-blocks")}
    for document in documents:
        block = blocks[document["block_id"]]
        assert block["type"] == "invoice"
        if document["invoice_number"]:
            assert document["invoice_number"].startswith(block["prefix"] + "-")
    assert {b["type"] for b in blocks.values()} == {"invoice", "offer", "waybill"}


# -- filters ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "filters, predicate",
    [
        ({"payment_status": "paid"}, lambda s: s["paid_at"] is not None),
        ({"payment_status": "unpaid"}, lambda s: s["paid_at"] is None),
        ({"payment_status": "all", "spending_type": "all"}, lambda s: True),
        ({"spending_type": "nav"}, lambda s: s["is_created_by_nav"]),
        ({"spending_type": "manual"}, lambda s: not s["is_created_by_nav"]),
        ({"categories": "overheads"}, lambda s: s["category"] == "overheads"),
        ({"currencies": "EUR"}, lambda s: s["currency"] == "EUR"),
        ({"payment_methods": "bankcard"}, lambda s: s["payment_method"] == "bankcard"),
        ({"start_date": "2026-01-01", "end_date": "2026-01-31"}, lambda s: "2026-01-01" <= s["invoice_date"] <= "2026-01-31"),
        ({"spending_date": "due_date", "start_date": "2026-03-10"}, lambda s: s["due_date"] >= "2026-03-10"),
        ({"spending_date": "fulfillment_date", "end_date": "2025-12-31"}, lambda s: s["fulfillment_date"] <= "2025-12-31"),
        ({"q": "mátra"}, lambda s: "mátra" in s["partner"]["name"].lower()),
    ],
)
def test_spending_filters(shared, spendings, filters, predicate):
    expected = [s["id"] for s in spendings if predicate(s)]
    assert [s["id"] for s in fetch_list(shared, "/spendings", **filters)] == expected
    assert expected


def test_partner_query_and_document_block_type_filters(shared, partners, spendings):
    number = spendings[0]["invoice_number"]
    assert [s["invoice_number"] for s in fetch_list(shared, "/spendings", q=number)] == [number]
    word = partners[0]["name"].split()[0].upper()
    assert [p["id"] for p in fetch_list(shared, "/partners", query=word)] == [
        p["id"] for p in partners if word.lower() in p["name"].lower()]
    tax_code = partners[-1]["taxcode"]
    assert [p["id"] for p in fetch_list(shared, "/partners", query=tax_code)] == [partners[-1]["id"]]
    assert fetch_list(shared, "/partners", query="nincs ilyen partner") == []
    assert {b["type"] for b in fetch_list(shared, "/document-blocks", type="offer")} == {"offer"}
    assert fetch_list(shared, "/document-blocks", type="receipt") == []


# -- mutations -------------------------------------------------------------------------------------


def test_recorded_payments_move_status_paid_date_and_modification_at_once(sim):
    document = next(d for d in sim.documents(KEY) if d["type"] == "invoice" and d["payment_status"] in ("outstanding", "expired"))
    assert payments_of(sim, document["id"]) == []
    cutoff = sim.now().replace(microsecond=0).strftime("%Y-%m-%d %H:%M:%S")
    gross = dec(document["gross_total"])
    part = (gross / 3).quantize(Decimal(1) if document["currency"] == "HUF" else Decimal("0.01"))

    sim.record_payment(KEY, document["id"], price=part, date=TODAY - datetime.timedelta(days=2),
                       payment_method="cash", voucher_number="PB-2026-00042")
    served = conforms(get(sim, f"/documents/{document['id']}")).json()
    assert (served["payment_status"], served["paid_date"]) == ("partially_paid", "2026-03-13")
    assert payments_of(sim, document["id"]) == [{
        "date": "2026-03-13", "price": float(part) if part % 1 else int(part), "payment_method": "cash",
        "voucher_number": "PB-2026-00042", "conversion_rate": document["conversion_rate"]}]
    changed = [d["id"] for d in get(sim, "/documents", last_modified_date=cutoff).json()["data"]]
    assert changed == [document["id"]]

    sim.record_payment(KEY, document["id"])  # the rest, today
    served = conforms(get(sim, f"/documents/{document['id']}")).json()
    assert (served["payment_status"], served["paid_date"]) == ("paid", TODAY.isoformat())
    assert total(payments_of(sim, document["id"])) == gross
    with pytest.raises(ValueError, match="already paid"):
        sim.record_payment(KEY, document["id"])

    sim.set_payments(KEY, document["id"], [])  # what DELETE /documents/{id}/payments leaves
    served = conforms(get(sim, f"/documents/{document['id']}")).json()
    assert served["payment_status"] == ("expired" if document["due_date"] < TODAY.isoformat() else "outstanding")
    assert served["paid_date"] == TODAY.isoformat() and payments_of(sim, document["id"]) == []


def test_pay_document_keeps_the_payment_history_consistent(sim):
    unpaid = [d for d in sim.documents(KEY) if d["type"] == "invoice" and d["payment_status"] in ("outstanding", "expired")]
    fully, partly = unpaid[:2]
    sim.pay_document(KEY, fully["id"], paid_date=TODAY - datetime.timedelta(days=1))
    sim.pay_document(KEY, partly["id"], partial=True)
    assert total(payments_of(sim, fully["id"])) == dec(fully["gross_total"])
    assert payments_of(sim, fully["id"])[-1]["date"] == "2026-03-14"
    assert 0 < total(payments_of(sim, partly["id"])) < dec(partly["gross_total"])
    sim.pay_document(KEY, partly["id"])
    assert total(payments_of(sim, partly["id"])) == dec(partly["gross_total"])
    assert sim.payments(KEY, partly["id"]) == payments_of(sim, partly["id"])


def test_payments_cannot_be_recorded_where_none_are_owed(sim):
    draft = next(d for d in sim.documents(KEY) if d["type"] == "draft")
    with pytest.raises(ValueError, match="takes no payments"):
        sim.record_payment(KEY, draft["id"], price=100)
    with pytest.raises(ValueError, match="positive"):
        sim.record_payment(KEY, sim.documents(KEY)[0]["id"], price=0)
    with pytest.raises(KeyError):
        sim.record_payment(KEY, 12345, price=1)


def test_added_spendings_are_served_at_once_in_due_date_order(sim):
    before = fetch_list(sim, "/spendings")
    supplier = before[0]["partner"]["id"]
    added = sim.add_spending(KEY, partner_id=supplier, invoice_date="2026-03-01", comment="Új számla")
    assert added["id"] > max(s["id"] for s in before) and added["partner"]["id"] == supplier
    after = fetch_list(sim, "/spendings")
    assert len(after) == len(before) + 1
    assert [(s["due_date"], s["id"]) for s in after] == sorted((s["due_date"], s["id"]) for s in after)
    single = conforms(get(sim, f"/spendings/{added['id']}")).json()
    assert single["comment"] == "Új számla" and single["invoice_date"] == "2026-03-01"

    unpaid = next(s for s in after if s["paid_at"] is None)
    sim.pay_spending(KEY, unpaid["id"], paid_at=TODAY)
    assert conforms(get(sim, f"/spendings/{unpaid['id']}")).json()["paid_at"] == TODAY.isoformat()
    assert unpaid["id"] in [s["id"] for s in fetch_list(sim, "/spendings", payment_status="paid")]
    assert sim.spendings(KEY) == [{**s, "paid_at": TODAY.isoformat()} if s["id"] == unpaid["id"] else s for s in after]
    with pytest.raises(KeyError):
        sim.add_spending(KEY, partner_id=1)
    with pytest.raises(ValueError):
        sim.add_spending(KEY, id=1)


def test_added_and_changed_partners_are_stamped_and_named_by_new_documents_and_spendings(sim):
    old_documents = sim.documents(KEY)
    before = sim.now()
    added = sim.add_partner(KEY, name="Friss Ügyfél Kft.", emails=["penzugy@friss.hu"])
    assert conforms(get(sim, "/partners")).json()["data"][0] == added
    assert added["taxcode"] and sim.partner_modified_at(KEY, added["id"]) >= before
    invoice = sim.add_document(KEY, partner_id=added["id"])
    assert invoice["partner"] == added and invoice["document_partner"]["name"] == "Friss Ügyfél Kft."
    conforms(get(sim, f"/documents/{invoice['id']}"))

    customer = old_documents[0]["document_partner"]
    supplier = fetch_list(sim, "/spendings")[0]["partner"]
    sim.update_partner(KEY, customer["id"], name="Átnevezett Kft.", iban="")
    sim.update_partner(KEY, supplier["id"], name="Új Beszállító Kft.")
    assert conforms(get(sim, f"/partners/{customer['id']}")).json()["name"] == "Átnevezett Kft."
    assert sim.partner_modified_at(KEY, customer["id"]) >= before
    assert {s["partner"]["name"] for s in fetch_list(sim, "/spendings") if s["partner"]["id"] == supplier["id"]} == {
        "Új Beszállító Kft."}
    # Documents keep the partner they were issued to; new ones name it as it is now.
    assert conforms(get(sim, f"/documents/{old_documents[0]['id']}")).json()["document_partner"] == customer
    renamed = sim.add_document(KEY, partner_id=customer["id"])
    assert (renamed["document_partner"]["name"], renamed["document_partner"]["iban"]) == ("Átnevezett Kft.", "")

    with pytest.raises(ValueError, match="id"):
        sim.update_partner(KEY, customer["id"], id=5)
    with pytest.raises(ValueError, match="not fields of a Partner"):
        sim.add_partner(KEY, nickname="x")
    with pytest.raises(KeyError):
        sim.update_partner(KEY, 12345, name="x")
    with pytest.raises(KeyError):
        sim.add_document(KEY, partner_id=12345)


def test_partners_stay_within_their_organization(sim):
    sim.add_partner(KEY, name="Csak Acme Kft.")
    assert "Csak Acme Kft." not in [p["name"] for p in fetch_list(sim, "/partners", OTHER_KEY)]
    acme_ids = {p["id"] for p in fetch_list(sim, "/partners")}
    assert not acme_ids & {p["id"] for p in fetch_list(sim, "/partners", OTHER_KEY)}
    assert not {s["id"] for s in sim.spendings(KEY)} & {s["id"] for s in sim.spendings(OTHER_KEY)}


# -- faults and rate limits ------------------------------------------------------------------------


@pytest.mark.parametrize("path", [*LISTS, "/documents/{id}/payments", "/partners/{id}"])
def test_faults_fire_on_every_endpoint_matched_by_path_prefix(sim, path):
    if "{id}" in path:
        item = sim.documents(KEY)[0] if path.startswith("/documents") else fetch_list(sim, "/partners")[0]
        path = path.replace("{id}", str(item["id"]))
    sim.inject_fault("server_error", path_prefix="/v3" + path)
    sim.inject_fault("rate_limit", path_prefix="/v3" + path, retry_after=3)
    assert get(sim, "/documents").status_code == 200  # another path: not hit
    failed, limited, served = (conforms(get(sim, path)) for _ in range(3))
    assert (failed.status_code, limited.status_code, served.status_code) == (500, 429, 200)
    assert limited.headers["Retry-After"] == "3"
    assert [e.fault for e in sim.requests_log[-3:]] == ["server_error", "rate_limit", None]


def test_data_not_list_and_paging_nonsense_hit_the_new_lists(sim):
    paid = next(d for d in sim.documents(KEY) if d["payment_status"] == "paid")
    sim.inject_fault("data_not_list", path_prefix="/v3/partners")
    sim.inject_fault("data_not_list", path_prefix=f"/v3/documents/{paid['id']}/payments")
    sim.inject_fault("paging_nonsense", path_prefix="/v3/spendings", envelope={"total": -1, "last_page": None})
    partners = get(sim, "/partners", per_page=2).json()
    assert list(partners["data"]) == ["1", "2"] and partners["data"]["1"]["id"] == sim.partners(KEY)[0]["id"]
    payments = get(sim, f"/documents/{paid['id']}/payments").json()
    assert isinstance(payments, dict) and list(payments.values()) == sim.payments(KEY, paid["id"])
    spendings = get(sim, "/spendings").json()
    assert (spendings["total"], spendings["last_page"]) == (-1, None) and len(spendings["data"]) == len(sim.spendings(KEY))
    assert conforms(get(sim, "/spendings")).json()["total"] > 0


def test_truncated_and_malformed_faults_on_new_paths(sim):
    sim.inject_fault("truncated", path_prefix="/v3/bank-accounts")
    sim.inject_fault("malformed_page", path_prefix="/v3/document-blocks")
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        get(sim, "/bank-accounts")
    malformed = get(sim, "/document-blocks")
    assert malformed.status_code == 200
    with pytest.raises(ValueError):
        json.loads(malformed.content)
    assert conforms(get(sim, "/bank-accounts")).status_code == conforms(get(sim, "/document-blocks")).status_code == 200


def test_the_rate_limit_counts_every_endpoint_of_a_key():
    with BillingoSimulator(rate_limit_per_minute=4, rate_window_seconds=60.0, today=TODAY) as sim:
        sim.add_organization(KEY, name="Acme Kft.", seed=1, document_count=3)
        sim.add_organization(OTHER_KEY, name="Globex Zrt.", seed=2, document_count=3)
        document_id = sim.documents(KEY)[0]["id"]
        allowed = [conforms(get(sim, path)) for path in ("/partners", "/spendings", "/documents",
                                                        f"/documents/{document_id}/payments")]
        assert [r.headers["X-RateLimit-Remaining"] for r in allowed] == ["3", "2", "1", "0"]
        refused = conforms(get(sim, "/bank-accounts"))
        assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
        assert get(sim, "/document-blocks", OTHER_KEY).status_code == 200  # limits are per API key


def test_requests_log_records_the_new_paths_without_the_key(sim):
    get(sim, "/spendings", per_page=5, q="x")
    get(sim, "/partners/1")
    assert [(e.path, e.query, e.status, e.organization) for e in sim.requests_log[-2:]] == [
        ("/v3/spendings", {"per_page": "5", "q": "x"}, 200, "Acme Kft."), ("/v3/partners/1", {}, 404, "Acme Kft.")]
    assert KEY not in repr(sim.requests_log)


def test_another_simulator_with_the_same_seed_serves_the_same_ledger():
    def ledger(seed: int) -> str:
        with BillingoSimulator(today=TODAY) as sim:
            sim.add_organization(generate_api_key(seed), name="Acme Kft.", seed=seed, document_count=50)
            key = generate_api_key(seed)
            return json.dumps([sim.partners(key), sim.spendings(key),
                               [sim.payments(key, d["id"]) for d in sim.documents(key)]])

    assert ledger(4) == ledger(4) != ledger(5)


def test_a_spending_due_early_added_between_pages_shifts_every_later_page(sim):
    first = get(sim, "/spendings", per_page=5).json()
    earliest_invoice = min(s["invoice_date"] for s in sim.spendings(KEY))
    added = sim.add_spending(KEY, invoice_date=earliest_invoice, due_date=first["data"][0]["due_date"])
    second = get(sim, "/spendings", per_page=5, page=2).json()
    assert second["total"] == first["total"] + 1 and added["id"] not in [s["id"] for s in second["data"]]
    assert second["data"][0]["id"] == first["data"][-1]["id"]  # seen again: due-date order drifted
