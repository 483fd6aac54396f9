"""The Billingo simulator against the published OpenAPI spec, over a real socket, without mocks.

Read-only tests share one simulator (``shared``); tests that mutate data, inject faults or need a
small rate limit get their own (``sim``). The whole file runs in a few seconds.
"""

from __future__ import annotations

import datetime
import http.client
import json
import math
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from openapi_core.exceptions import OpenAPIError

from billingo_pipeline.simulator import (
    REMOVE,
    BillingoSimulator,
    IncomingRequest,
    generate_api_key,
    generate_documents,
)
from billingo_pipeline_tests import spec

TODAY = datetime.date(2026, 3, 15)
KEY = generate_api_key("acme")
OTHER_KEY = generate_api_key("globex")
NO_SUBSCRIPTION_KEY = generate_api_key("broke")
SHARED_COUNT = 400
PAID = {"paid", "partially_paid"}
UNPAID = {"expired", "none", "outstanding"}
RATE_HEADERS = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")


@pytest.fixture(scope="module")
def shared() -> Iterator[BillingoSimulator]:
    """Read-only: 400 documents for Acme, 30 for Globex, and an organization without subscription."""
    with BillingoSimulator(rate_limit_per_minute=100_000, today=TODAY) as sim:
        sim.add_organization(KEY, name="Acme Kft.", seed=7, document_count=SHARED_COUNT)
        sim.add_organization(OTHER_KEY, name="Globex Zrt.", seed=8, document_count=30)
        sim.add_organization(NO_SUBSCRIPTION_KEY, name="Broke Bt.", seed=9, document_count=3, has_subscription=False)
        yield sim


@pytest.fixture
def sim() -> Iterator[BillingoSimulator]:
    """A fresh simulator a test may change."""
    with BillingoSimulator(today=TODAY) as simulator:
        simulator.add_organization(KEY, name="Acme Kft.", seed=1, document_count=60)
        simulator.add_organization(OTHER_KEY, name="Globex Zrt.", seed=2, document_count=10)
        yield simulator


@pytest.fixture(scope="module")
def documents(shared) -> list[dict[str, Any]]:
    return shared.documents(KEY)


def get(sim: BillingoSimulator, path: str, key: str | None = KEY, **params: Any) -> requests.Response:
    headers = {"X-API-KEY": key} if key is not None else {}
    return requests.get(sim.base_url + path, params=params, headers=headers, timeout=5)


def conforms(response: requests.Response) -> requests.Response:
    """Validate against the spec, plus what the spec cannot say: JSON and rate-limit headers always."""
    spec.validate_response(response)
    assert response.headers["Content-Type"] == "application/json"
    assert all(name in response.headers for name in RATE_HEADERS)
    return response


def fetch_all(sim: BillingoSimulator, key: str = KEY, *, validate: bool = True, **filters: Any) -> list[dict[str, Any]]:
    """Every page of ``GET /documents`` (100 a page), each validated unless a test corrupted data."""
    documents, page = [], 1
    while True:
        response = get(sim, "/documents", key, per_page=100, page=page, **filters)
        body = (conforms(response) if validate else response).json()
        documents.extend(body["data"])
        if "next_page_url" not in body:
            return documents
        page += 1


def dec(value: int | float) -> Decimal:
    return Decimal(str(value))


# -- every endpoint's answers against the spec ------------------------------------------------------


@pytest.mark.parametrize("per_page", [1, 25, 100])
def test_document_pages_conform_first_last_and_past_the_end(shared, per_page):
    last_page = math.ceil(SHARED_COUNT / per_page)
    first = conforms(get(shared, "/documents", per_page=per_page)).json()
    assert (first["total"], first["per_page"], first["current_page"], first["last_page"]) == (
        SHARED_COUNT, per_page, 1, last_page)
    assert len(first["data"]) == per_page
    assert "prev_page_url" not in first  # non-nullable in the spec: absent rather than null
    assert first["next_page_url"] == f"{shared.base_url}/documents?per_page={per_page}&page=2"

    last = conforms(get(shared, "/documents", per_page=per_page, page=last_page)).json()
    assert len(last["data"]) == SHARED_COUNT - (last_page - 1) * per_page
    assert "next_page_url" not in last and last["prev_page_url"].endswith(f"page={last_page - 1}")

    beyond = conforms(get(shared, "/documents", per_page=per_page, page=last_page + 1)).json()
    assert beyond["data"] == [] and beyond["current_page"] == last_page + 1 and beyond["total"] == SHARED_COUNT


def test_every_served_document_conforms_and_default_page_size_is_25(shared):
    assert len(fetch_all(shared)) == SHARED_COUNT  # fetch_all validates each page of 100
    assert len(conforms(get(shared, "/documents")).json()["data"]) == 25


def test_single_document_and_not_found_conform(shared, documents):
    newest = documents[0]
    assert conforms(get(shared, f"/documents/{newest['id']}")).json() == newest
    globex_id = shared.documents(OTHER_KEY)[0]["id"]
    for missing in (globex_id, 999):  # another organization's document is not ours either
        response = conforms(get(shared, f"/documents/{missing}"))
        assert response.status_code == 404 and response.json()["error"]["message"]
    assert get(shared, "/documents/abc").status_code == 404


@pytest.mark.parametrize("path", ["/documents", "/documents/1", "/documents/1/payments", "/partners", "/partners/1",
                                  "/spendings", "/spendings/1", "/document-blocks", "/bank-accounts",
                                  "/bank-accounts/1", "/organization", "/utils/time"])
@pytest.mark.parametrize(
    "key, status, message",
    [
        (None, 401, "Authorization information (Header: X-API-KEY) is missing or invalid."),
        ("not-a-key", 401, "Authorization information (Header: X-API-KEY) is missing or invalid."),
        (NO_SUBSCRIPTION_KEY, 402, "You do not have subscription for this operation"),
    ],
)
def test_auth_errors_conform(shared, path, key, status, message):
    response = conforms(get(shared, path, key))
    assert response.status_code == status and response.json() == {"error": {"message": message}}


def test_server_time_and_organization_conform(shared, documents):
    clock = conforms(get(shared, "/utils/time")).json()
    assert clock["timezone"] == "Europe/Budapest"
    assert abs(clock["epoch"] - shared.now().timestamp()) < 5
    assert clock["formatted"].startswith(TODAY.isoformat()) and re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", clock["formatted"])
    assert datetime.datetime.fromisoformat(clock["w3c"]).timestamp() == clock["epoch"]

    organization = conforms(get(shared, "/organization")).json()
    assert organization["tax_code"] == documents[0]["organization"]["tax_number"]
    assert organization["subscription"]["expiration_date"] > TODAY.isoformat()
    assert set(organization["subscription"]["features"]) <= set(spec.schema("Feature")["enum"])


@pytest.mark.parametrize(
    "params, field",
    [
        ({"per_page": 0}, "per_page"),
        ({"per_page": 101}, "per_page"),
        ({"per_page": "abc"}, "per_page"),
        ({"page": 0}, "page"),
        ({"page": "2.5"}, "page"),
        ({"payment_status": "unpaid"}, "payment_status"),
        ({"payment_method": "crypto"}, "payment_method"),
        ({"type": "bill"}, "type"),
        ({"start_date": "2026-02-30"}, "start_date"),
        ({"end_date": "15/03/2026"}, "end_date"),
        ({"paid_start_date": "yesterday"}, "paid_start_date"),
        ({"fulfillment_end_date": "2026-3-1"}, "fulfillment_end_date"),
        ({"partner_id": "x"}, "partner_id"),
        ({"block_id": "1e3"}, "block_id"),
        ({"last_modified_date": "last week"}, "last_modified_date"),
        ({"start_number": 3}, "start_year"),
    ],
)
def test_bad_query_values_are_422_naming_the_field(shared, params, field):
    response = conforms(get(shared, "/documents", **params))
    body = response.json()
    assert response.status_code == 422 and body["message"]
    assert field in [error["field"] for error in body["errors"]]


def test_unknown_paths_and_methods_answer_json_errors(shared):
    unknown = get(shared, "/products")
    assert unknown.status_code == 404 and "/v3/products" in unknown.json()["error"]["message"]
    for method in ("POST", "DELETE"):
        response = requests.request(method, shared.base_url + "/documents/1", headers={"X-API-KEY": KEY}, json={})
        assert response.status_code == 405 and response.headers["Allow"] == "GET"
        assert response.json()["error"]["message"]
    assert all(name in unknown.headers and name in response.headers for name in RATE_HEADERS)


# -- generated data ------------------------------------------------------------------------------


def test_documents_fill_every_field_the_spec_defines(documents):
    def properties(name: str) -> set[str]:
        return set(spec.schema(name)["properties"])

    for document in documents:
        assert set(document) == properties("Document")
        assert set(document["document_partner"]) == properties("DocumentPartner")
        assert set(document["partner"]) == properties("Partner")
        assert set(document["organization"]) == properties("DocumentOrganization")
        assert set(document["summary"]) == properties("DocumentSummary")
        assert set(document["settings"]) == properties("DocumentSettings")
        for item in document["items"]:
            # entitlement is left out for taxable items: the spec's enum is not nullable.
            assert set(item) | {"entitlement"} == properties("DocumentItem")


def test_every_payment_status_method_and_common_type_appears(documents):
    assert {d["payment_status"] for d in documents} == set(spec.schema("PaymentStatus")["enum"])
    assert {d["payment_method"] for d in documents} == set(spec.schema("PaymentMethod")["enum"])
    types = [d["type"] for d in documents]
    assert {"invoice", "proforma", "advance", "draft", "cancellation"} <= set(types)
    assert types.count("invoice") > len(types) / 2


def test_vat_rates_and_currencies(documents):
    items = [item for d in documents for item in d["items"]]
    assert {"27%", "18%", "5%", "0%", "AAM"} <= {item["vat"] for item in items}
    for item in items:
        if item["vat"] == "AAM":
            assert item["vat_amount"] == 0 and item["entitlement"] == "AAM"
        else:
            assert "entitlement" not in item
    assert {d["currency"] for d in documents} == {"HUF", "EUR"}
    for document in documents:
        summary = document["summary"]
        if document["currency"] == "HUF":
            assert document["conversion_rate"] == 1
            amounts = [document["gross_total"], *(v for k, v in summary.items() if k != "vat_rate_summary"),
                       *(i[k] for i in document["items"] for k in ("net_unit_amount", "net_amount", "vat_amount", "gross_amount"))]
            assert all(type(amount) is int for amount in amounts)  # whole forints
            assert summary["net_amount_local"] == summary["net_amount"]
        else:
            assert 380 <= document["conversion_rate"] <= 410
            rate = dec(document["conversion_rate"])
            assert summary["net_amount_local"] == int((dec(summary["net_amount"]) * rate).quantize(Decimal(1), ROUND_HALF_UP))
            for item in document["items"]:
                assert all(dec(item[k]).as_tuple().exponent >= -2 for k in ("net_unit_amount", "net_amount", "gross_amount"))


def test_amounts_add_up(documents):
    cash_rounded = 0
    for document in documents:
        step = Decimal("0.01") if document["currency"] == "EUR" else Decimal(1)
        for item in document["items"]:
            net = dec(item["net_amount"])
            assert net == (dec(item["net_unit_amount"]) * dec(item["quantity"])).quantize(step, ROUND_HALF_UP)
            rate = Decimal(item["vat"].rstrip("%").replace(",", ".")) / 100 if item["vat"].endswith("%") else 0
            assert dec(item["vat_amount"]) == (net * rate).quantize(step, ROUND_HALF_UP)
            assert dec(item["gross_amount"]) == net + dec(item["vat_amount"])
        summary = document["summary"]
        net = sum(dec(i["net_amount"]) for i in document["items"])
        vat = sum(dec(i["vat_amount"]) for i in document["items"])
        assert (dec(summary["net_amount"]), dec(summary["vat_amount"])) == (net, vat)
        assert sum(dec(r["vat_rate_net_amount"]) for r in summary["vat_rate_summary"]) == net
        assert sum(dec(r["vat_rate_gross_amount"]) for r in summary["vat_rate_summary"]) == net + vat
        assert summary["gross_amount_local"] == summary["net_amount_local"] + summary["vat_amount_local"]
        gross_total, rounding = dec(document["gross_total"]), document["settings"]["round"]
        if rounding == "five":
            assert gross_total % 5 == 0 and abs(gross_total - (net + vat)) <= Decimal("2.5")
            cash_rounded += gross_total != net + vat
        else:
            assert rounding in ("none", "one") and gross_total == net + vat
        assert rounding == "none" or (document["currency"], document["payment_method"]) == ("HUF", "cash")
    assert cash_rounded, "cash rounding should make some gross_total differ from the item sum"


def test_cancellations_are_linked_both_ways(documents):
    by_id = {d["id"]: d for d in documents}
    cancellations = [d for d in documents if d["type"] == "cancellation"]
    assert cancellations
    for cancellation in cancellations:
        [reference] = cancellation["related_documents"]
        original = by_id[reference["id"]]
        assert reference["invoice_number"] == original["invoice_number"]
        assert original["cancelled"] and original["correction_type"] == "canceled"
        assert {"id": cancellation["id"], "invoice_number": cancellation["invoice_number"]} in original["related_documents"]
        assert cancellation["id"] > original["id"] and cancellation["invoice_date"] >= original["invoice_date"]
        assert dec(cancellation["gross_total"]) == -dec(original["gross_total"])
        assert cancellation["payment_status"] == "none" and cancellation["correction_type"] == "cancellation"
    assert sum(d["cancelled"] for d in documents) == len(cancellations)


def test_dates_ids_and_the_paid_date_quirk(documents):
    oldest_first = documents[::-1]
    assert [d["id"] for d in oldest_first] == sorted(d["id"] for d in documents)
    assert [d["invoice_date"] for d in oldest_first] == sorted(d["invoice_date"] for d in documents)
    for document in documents:
        assert document["fulfillment_date"] <= document["invoice_date"] <= document["due_date"]
        if document["payment_status"] in UNPAID:
            assert document["paid_date"] == TODAY.isoformat()  # the live API's "today" for unpaid
        else:
            assert document["invoice_date"] <= document["paid_date"] <= TODAY.isoformat()


def _iban_is_valid(iban: str) -> bool:
    return int("".join(str(int(c, 36)) for c in iban[4:] + iban[:4])) % 97 == 1


def test_hungarian_details_look_real(documents):
    tax_number = re.compile(r"\d{8}-[1-5]-\d{2}")
    for document in documents:
        assert tax_number.fullmatch(document["organization"]["tax_number"])
        partner = document["document_partner"]
        if partner["tax_type"] == "HAS_TAX_NUMBER":
            assert tax_number.fullmatch(partner["taxcode"]) and partner["name"].endswith(("Kft.", "Bt.", "Zrt."))
            assert partner["address"]["country_code"] == "HU" and re.fullmatch(r"\d{4}", partner["address"]["post_code"])
            assert partner["iban"].startswith("HU") and len(partner["iban"]) == 28 and _iban_is_valid(partner["iban"])
        if partner["iban"]:
            assert _iban_is_valid(partner["iban"])
        expected_number = "" if document["type"] == "draft" else r"(D-)?ACME-\d{4}-\d{6}"
        assert re.fullmatch(expected_number, document["invoice_number"])
    assert {d["document_partner"]["tax_type"] for d in documents} == {"HAS_TAX_NUMBER", "NO_TAX_NUMBER", "FOREIGN"}


def test_generation_is_deterministic():
    first = json.dumps(generate_documents(11, 50, today=TODAY))
    assert first == json.dumps(generate_documents(11, 50, today=TODAY))
    assert first != json.dumps(generate_documents(12, 50, today=TODAY))
    assert generate_api_key(1) == generate_api_key(1) != generate_api_key(2)
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", generate_api_key(1))


def test_organizations_have_separate_id_ranges(shared, documents):
    acme_ids = {d["id"] for d in documents}
    globex_ids = {d["id"] for d in shared.documents(OTHER_KEY)}
    assert max(acme_ids) < min(globex_ids)


# -- paging ----------------------------------------------------------------------------------------


def test_pages_cover_every_document_once_newest_first(shared, documents):
    ids: list[int] = []
    page_url = f"{shared.base_url}/documents?per_page=37"
    while page_url:  # follow the envelope's own links
        body = requests.get(page_url, headers={"X-API-KEY": KEY}, timeout=5).json()
        ids.extend(d["id"] for d in body["data"])
        page_url = body.get("next_page_url")
    assert ids == [d["id"] for d in documents] == sorted(ids, reverse=True)
    assert len(set(ids)) == SHARED_COUNT


def test_document_created_between_pages_shifts_the_next_page(sim):
    created = []
    sim.schedule(after_requests=len(sim.requests_log) + 1, action=lambda: created.append(sim.add_document(KEY)))
    first = get(sim, "/documents", per_page=10).json()
    second = get(sim, "/documents", per_page=10, page=2).json()
    assert second["total"] == first["total"] + 1
    assert second["data"][0]["id"] == first["data"][-1]["id"]  # seen again: offset paging drifted
    assert created[0]["id"] > first["data"][0]["id"]


def test_on_request_callbacks_see_each_request_before_it_is_answered(sim):
    seen: list[IncomingRequest] = []

    def issue_invoice_before_page_2(request: IncomingRequest) -> None:
        if request.query.get("page") == "2":
            sim.add_document(KEY)

    sim.on_request(seen.append)
    sim.on_request(issue_invoice_before_page_2)
    first = get(sim, "/documents", per_page=5).json()
    second = get(sim, "/documents", per_page=5, page=2).json()
    assert seen == [IncomingRequest("GET", "/v3/documents", {"per_page": "5"}),
                    IncomingRequest("GET", "/v3/documents", {"per_page": "5", "page": "2"})]
    assert second["total"] == first["total"] + 1


# -- filters ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "filters, predicate",
    [
        ({"payment_status": "paid"}, lambda d: d["payment_status"] == "paid"),
        ({"payment_status": "expired", "type": "invoice"}, lambda d: d["payment_status"] == "expired" and d["type"] == "invoice"),
        ({"payment_method": "cash"}, lambda d: d["payment_method"] == "cash"),
        ({"type": "proforma"}, lambda d: d["type"] == "proforma"),
        ({"start_date": "2026-01-01", "end_date": "2026-01-31"}, lambda d: "2026-01-01" <= d["invoice_date"] <= "2026-01-31"),
        ({"paid_start_date": "2026-02-01", "paid_end_date": "2026-02-28"},
         lambda d: d["payment_status"] in PAID and "2026-02-01" <= d["paid_date"] <= "2026-02-28"),
        ({"fulfillment_start_date": "2026-03-01"}, lambda d: d["fulfillment_date"] >= "2026-03-01"),
        ({"fulfillment_end_date": "2025-12-31"}, lambda d: d["fulfillment_date"] <= "2025-12-31"),
        ({"query": "gmail"}, lambda d: False),  # e-mail addresses are not searched
        ({"start_year": 2026, "start_number": 10, "end_year": 2026, "end_number": 19},
         lambda d: re.search(r"-2026-0000(1\d)$", d["invoice_number"]) is not None),
    ],
)
def test_filters(shared, documents, filters, predicate: Callable[[dict[str, Any]], bool]):
    expected = [d["id"] for d in documents if predicate(d)]
    assert [d["id"] for d in fetch_all(shared, **filters)] == expected
    assert len(expected) < len(documents)


def test_paid_date_filters_ignore_the_today_shown_for_unpaid_documents(shared, documents):
    since = (TODAY - datetime.timedelta(days=3)).isoformat()
    served = {d["id"] for d in fetch_all(shared, paid_start_date=since)}
    assert served == {d["id"] for d in documents if d["payment_status"] in PAID and d["paid_date"] >= since}
    assert any(d["payment_status"] in UNPAID for d in documents)  # they show today, yet are excluded


def test_partner_block_and_text_filters(shared, documents):
    partner = documents[0]["document_partner"]
    by_partner = fetch_all(shared, partner_id=partner["id"])
    assert by_partner and all(d["document_partner"]["id"] == partner["id"] for d in by_partner)
    assert len(by_partner) == sum(d["document_partner"]["id"] == partner["id"] for d in documents)

    proforma_block = next(d["block_id"] for d in documents if d["type"] == "proforma")
    assert {d["type"] for d in fetch_all(shared, block_id=proforma_block)} == {"proforma"}

    word = partner["name"].split()[0].upper()  # case-insensitive substring of the partner name
    assert [d["id"] for d in fetch_all(shared, query=word)] == [
        d["id"] for d in documents if word.lower() in (d["invoice_number"] + d["document_partner"]["name"]).lower()]
    number = documents[3]["invoice_number"] or documents[4]["invoice_number"]
    assert number in [d["invoice_number"] for d in fetch_all(shared, query=number)]


# -- faults and rate limits ------------------------------------------------------------------------


def test_rate_limit_fault_with_and_without_retry_after(sim):
    sim.inject_fault("rate_limit", retry_after=7)
    sim.inject_fault("rate_limit")
    with_header = conforms(get(sim, "/documents"))
    assert with_header.status_code == 429 and with_header.headers["Retry-After"] == "7"
    assert with_header.json() == {"error": {"message": "Too many requests"}}
    without_header = conforms(get(sim, "/documents"))
    assert without_header.status_code == 429 and "Retry-After" not in without_header.headers
    assert get(sim, "/documents").status_code == 200


@pytest.mark.parametrize("kind, status, message", [("server_error", 500, "Internal Server Error."),
                                                   ("unavailable", 503, "Service Unavailable.")])
def test_server_faults_fire_the_configured_times(sim, kind, status, message):
    fault = sim.inject_fault(kind, times=2)
    responses = [get(sim, "/documents") for _ in range(3)]
    assert [r.status_code for r in responses] == [status, status, 200]
    error = responses[0].json()["error"]
    assert error["message"] == message and re.fullmatch(r"[0-9a-f]{32}", error["trace_id"])
    if status == 500:  # the spec defines no 503 for any operation
        conforms(responses[0])
    assert fault.fired == 2 and fault.exhausted
    assert [e.fault for e in sim.requests_log[-3:]] == [kind, kind, None]


def test_a_request_the_simulator_fails_to_answer_is_recorded_not_printed(sim, capsys):
    def broken(_request):
        raise ZeroDivisionError("a bug in the simulator")

    sim.on_request(broken)
    with pytest.raises(requests.ConnectionError):
        get(sim, "/documents")
    [error] = sim.handler_errors
    assert "ZeroDivisionError: a bug in the simulator" in error
    assert capsys.readouterr().err == ""


def test_cleared_faults_fire_no_more(sim):
    sim.inject_fault("server_error", times=3)
    assert get(sim, "/documents").status_code == 500
    assert sim.clear_faults() == 1 and sim.clear_faults() == 0
    assert [get(sim, "/documents").status_code for _ in range(2)] == [200, 200]


def test_slow_fault_answers_normally_after_the_delay(sim):
    sim.inject_fault("slow", delay_seconds=0.3)
    started = time.monotonic()
    response = conforms(get(sim, "/documents"))
    assert response.status_code == 200 and time.monotonic() - started >= 0.3


def test_truncated_fault_announces_the_full_length_and_closes_early(sim):
    sim.inject_fault("truncated", times=2)
    connection = http.client.HTTPConnection(urlsplit(sim.base_url).netloc, timeout=5)
    connection.request("GET", "/v3/documents", headers={"X-API-KEY": KEY})
    response = connection.getresponse()
    announced = int(response.headers["Content-Length"])
    with pytest.raises(http.client.IncompleteRead) as excinfo:
        response.read()
    assert response.status == 200 and len(excinfo.value.partial) == announced // 2
    connection.close()
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        get(sim, "/documents")
    assert conforms(get(sim, "/documents")).status_code == 200


def test_malformed_page_fault_is_200_with_a_body_that_is_not_json(sim):
    sim.inject_fault("malformed_page")
    response = get(sim, "/documents")
    assert response.status_code == 200
    with pytest.raises(ValueError):
        json.loads(response.content)
    assert conforms(get(sim, "/documents")).status_code == 200


def test_rate_limit_nonsense_fault_serves_the_chosen_headers_only_while_injected(sim):
    sim.inject_fault("rate_limit_nonsense", headers={"X-RateLimit-Remaining": "-3", "X-RateLimit-Limit": "abc"})
    sim.inject_fault("rate_limit_nonsense")  # the default: a negative Remaining and a mid-sized Reset
    chosen, default, normal = (get(sim, "/documents", per_page=10) for _ in range(3))
    assert chosen.status_code == 200 and len(chosen.json()["data"]) == 10
    assert (chosen.headers["X-RateLimit-Remaining"], chosen.headers["X-RateLimit-Limit"]) == ("-3", "abc")
    assert int(chosen.headers["X-RateLimit-Reset"]) > time.time() - 5  # not chosen: the real window's
    assert (default.headers["X-RateLimit-Remaining"], default.headers["X-RateLimit-Reset"]) == ("-7", "863596234")
    assert 0 <= int(conforms(normal).headers["X-RateLimit-Remaining"]) < int(normal.headers["X-RateLimit-Limit"])
    assert [e.fault for e in sim.requests_log[-3:]] == ["rate_limit_nonsense", "rate_limit_nonsense", None]


def test_headers_option_sets_an_absurd_retry_after_on_a_429(sim):
    sim.inject_fault("rate_limit", headers={"Retry-After": "-40"})
    response = get(sim, "/documents")
    assert response.status_code == 429 and response.headers["Retry-After"] == "-40"


def test_paging_nonsense_fault_replaces_or_removes_envelope_fields_only_while_injected(sim):
    second_page = sim.documents(KEY)[10:20]
    sim.inject_fault("paging_nonsense", envelope={"current_page": 1, "last_page": REMOVE, "per_page": 7})
    sim.inject_fault("paging_nonsense")  # the default: a negative total
    chosen = get(sim, "/documents", per_page=10, page=2).json()
    assert (chosen["current_page"], chosen["per_page"], chosen["total"]) == (1, 7, 60) and "last_page" not in chosen
    assert [d["id"] for d in chosen["data"]] == [d["id"] for d in second_page]
    default = get(sim, "/documents", per_page=10).json()
    assert default["total"] == -1 and default["last_page"] == 6
    assert conforms(get(sim, "/documents", per_page=10)).json()["total"] == 60


def test_paging_nonsense_leaves_single_documents_alone(sim):
    sim.inject_fault("paging_nonsense", path_prefix="/v3/documents/")
    document = sim.documents(KEY)[0]
    assert conforms(get(sim, f"/documents/{document['id']}")).json() == document
    assert sim.requests_log[-1].fault == "paging_nonsense"


def test_faults_match_path_key_and_request_count(sim):
    sim.inject_fault("server_error", after_requests=2)  # the third /v3/documents request
    sim.inject_fault("unavailable", path_prefix="/v3/organization", api_key=OTHER_KEY)
    assert get(sim, "/organization").status_code == 200  # other path for the first, other key for the second
    assert [get(sim, "/documents").status_code for _ in range(4)] == [200, 200, 500, 200]
    assert [get(sim, "/organization", OTHER_KEY).status_code for _ in range(2)] == [503, 200]


def test_faults_fire_in_injection_order(sim):
    sim.inject_fault("server_error")
    sim.inject_fault("rate_limit", times=2)
    assert [get(sim, "/documents").status_code for _ in range(4)] == [500, 429, 429, 200]


def test_faults_can_be_configured_as_dicts():
    faults = [{"kind": "unavailable"}, {"kind": "rate_limit", "retry_after": 1, "path_prefix": "/v3/utils"}]
    with BillingoSimulator(today=TODAY, faults=faults) as sim:
        sim.add_organization(KEY, name="Acme Kft.", seed=1, document_count=3)
        assert [get(sim, path).status_code for path in ("/utils/time", "/documents", "/documents")] == [429, 503, 200]
    with pytest.raises(ValueError, match="unknown fault kind"):
        BillingoSimulator(faults=[{"kind": "meteor"}])


def test_rate_limit_answers_429_until_the_window_resets():
    # The windows run on a clock moved by hand: the test neither waits for a reset nor depends on
    # how fast the machine sends the requests inside one window.
    elapsed = [0]
    with BillingoSimulator(rate_limit_per_minute=3, today=TODAY, rate_clock=lambda: elapsed[0]) as sim:
        sim.add_organization(KEY, name="Acme Kft.", seed=1, document_count=3)
        sim.add_organization(OTHER_KEY, name="Globex Zrt.", seed=2, document_count=3)
        sent_at = time.time()
        allowed = [conforms(get(sim, "/utils/time")) for _ in range(3)]
        assert [r.headers["X-RateLimit-Remaining"] for r in allowed] == ["2", "1", "0"]
        assert allowed[0].headers["X-RateLimit-Limit"] == "3"
        assert int(allowed[0].headers["X-RateLimit-Reset"]) >= sent_at + 60  # a Unix time: the window's end
        refused = conforms(get(sim, "/documents"))
        assert refused.status_code == 429 and refused.json() == {"error": {"message": "Too many requests"}}
        assert int(refused.headers["Retry-After"]) == 60
        assert get(sim, "/documents", OTHER_KEY).status_code == 200  # limits are per API key
        elapsed[0] = 59
        still_refused = conforms(get(sim, "/documents"))
        assert still_refused.status_code == 429 and int(still_refused.headers["Retry-After"]) == 1
        elapsed[0] = 60
        recovered = conforms(get(sim, "/documents"))
        assert recovered.status_code == 200 and recovered.headers["X-RateLimit-Remaining"] == "2"


# -- mutations -------------------------------------------------------------------------------------


def test_mutations_are_served_at_once_and_found_by_last_modified_date(sim):
    documents = sim.documents(KEY)
    invoices = [d for d in documents if d["type"] == "invoice" and not d["cancelled"]]
    unpaid = next(d for d in invoices if d["payment_status"] in ("outstanding", "expired"))
    to_cancel, to_corrupt, to_delete = [d for d in invoices if d is not unpaid][:3]
    cutoff = sim.now().replace(microsecond=0)

    sim.pay_document(KEY, unpaid["id"], paid_date=TODAY - datetime.timedelta(days=1))
    added = sim.add_document(KEY, comment="Új megrendelés")
    cancellation = sim.cancel_document(KEY, to_cancel["id"])
    sim.corrupt_document(KEY, to_corrupt["id"], "items.0.quantity", "abc")
    sim.delete_document(KEY, to_delete["id"])

    paid = conforms(get(sim, f"/documents/{unpaid['id']}")).json()
    assert (paid["payment_status"], paid["paid_date"]) == ("paid", "2026-03-14")
    newest = conforms(get(sim, "/documents", per_page=2)).json()
    assert [d["id"] for d in newest["data"]] == [cancellation["id"], added["id"]]
    assert added["id"] > max(d["id"] for d in documents) and added["invoice_date"] == TODAY.isoformat()
    assert added["comment"] == "Új megrendelés" and newest["total"] == len(documents) + 2 - 1
    cancelled = conforms(get(sim, f"/documents/{to_cancel['id']}")).json()
    assert cancelled["cancelled"] and cancellation["related_documents"][0]["id"] == to_cancel["id"]
    corrupted = get(sim, f"/documents/{to_corrupt['id']}")
    assert corrupted.json()["items"][0]["quantity"] == "abc"
    with pytest.raises(OpenAPIError):
        spec.validate_response(corrupted)
    assert get(sim, f"/documents/{to_delete['id']}").status_code == 404

    since = cutoff.strftime("%Y-%m-%d %H:%M:%S")
    changed = {d["id"] for d in fetch_all(sim, validate=False, last_modified_date=since)}
    assert changed == {unpaid["id"], added["id"], to_cancel["id"], cancellation["id"], to_corrupt["id"]}


def test_last_modified_date_filter_excludes_untouched_documents(sim):
    cutoff = sim.now().replace(microsecond=0)
    assert get(sim, "/documents", last_modified_date=cutoff.isoformat(sep=" ")[:19]).json()["total"] == 0
    target = sim.documents(KEY)[7]["id"]
    sim.pay_document(KEY, target, partial=True)
    body = get(sim, "/documents", last_modified_date=cutoff.strftime("%Y-%m-%d %H:%M:%S")).json()
    assert [(d["id"], d["payment_status"], d["paid_date"]) for d in body["data"]] == [
        (target, "partially_paid", TODAY.isoformat())]
    assert get(sim, "/documents", last_modified_date="2000-01-01 00:00:00").json()["total"] == 60


def test_corruption_can_add_or_remove_fields(sim):
    first, second = sim.documents(KEY)[:2]
    sim.corrupt_document(KEY, first["id"], "gross_total", "12.700,00 Ft")
    sim.corrupt_document(KEY, second["id"], "id", REMOVE)
    served = get(sim, "/documents", per_page=2).json()["data"]
    assert served[0]["gross_total"] == "12.700,00 Ft" and "id" not in served[1]
    sim.corrupt_document(KEY, first["id"], "gross_total", first["gross_total"])
    sim.corrupt_document(KEY, first["id"], "surprise", 1)
    with pytest.raises(OpenAPIError):  # the spec helper rejects fields the spec does not define
        spec.validate_response(get(sim, f"/documents/{first['id']}"))


def test_mutations_reject_what_cannot_happen(sim):
    draft_or_proforma = next(d for d in sim.documents(KEY) if d["type"] in ("draft", "proforma"))
    with pytest.raises(ValueError, match="cannot be cancelled"):
        sim.cancel_document(KEY, draft_or_proforma["id"])
    with pytest.raises(KeyError):
        sim.pay_document(KEY, 12345)
    with pytest.raises(KeyError):
        sim.documents("unknown-key")
    with pytest.raises(ValueError):
        sim.add_document(KEY, id=1)
    with pytest.raises(ValueError, match="no field"):
        sim.corrupt_document(KEY, draft_or_proforma["id"], "items.99.name", "x")
    with pytest.raises(ValueError, match="already exists"):
        sim.add_organization(KEY, name="Again", seed=1, document_count=1)


# -- bookkeeping, speed, CLI -----------------------------------------------------------------------


def test_requests_log_counts_calls_and_never_holds_the_key(sim):
    get(sim, "/documents", per_page=3)
    get(sim, "/organization", key=None)
    get(sim, "/utils/time", key="wrong-key")
    entries = sim.requests_log[-3:]
    assert [(e.method, e.path, e.query, e.status, e.organization, e.has_api_key) for e in entries] == [
        ("GET", "/v3/documents", {"per_page": "3"}, 200, "Acme Kft.", True),
        ("GET", "/v3/organization", {}, 401, None, False),
        ("GET", "/v3/utils/time", {}, 401, None, True),
    ]
    assert KEY not in repr(sim.requests_log) and "wrong-key" not in repr(entries)
    assert KEY not in repr(sim.add_organization(generate_api_key("x"), name="X Kft.", seed=3, document_count=1))


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


# As a terminal starts it, and as a non-interactive shell starts a background job (SIGINT
# ignored, which Python keeps: it then never raises KeyboardInterrupt by itself).
@pytest.mark.parametrize("stop, preexec", [
    (signal.SIGINT, None), (signal.SIGINT, _ignore_sigint), (signal.SIGTERM, None),
], ids=["ctrl_c", "ctrl_c_in_a_background_job", "sigterm"])
def test_cli_prints_url_and_keys_and_stops_on_ctrl_c(stop, preexec):
    process = subprocess.Popen(
        [sys.executable, "-m", "billingo_pipeline.simulator", "--seed", "7", "--company", "acme:5",
         "--company", "globex:2", "--today", TODAY.isoformat(), "--fault", "server_error,times=1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=preexec,
    )
    try:
        banner = [process.stdout.readline() for _ in range(3)]
        base_url = re.search(r"(http://127\.0\.0\.1:\d+/v3)", banner[0]).group(1)
        keys = dict(re.findall(r"(\w+): \d+ documents, X-API-KEY: (\S+)", "".join(banner)))
        assert keys == {"acme": generate_api_key("7:acme"), "globex": generate_api_key("7:globex")}
        headers = {"X-API-KEY": keys["acme"]}
        assert requests.get(base_url + "/documents", headers=headers, timeout=5).status_code == 500
        assert requests.get(base_url + "/documents", headers=headers, timeout=5).json()["total"] == 5
    finally:
        process.send_signal(stop)
        # A deadline, not a timing: a loaded CI machine can take seconds to run the shutdown.
        assert process.wait(timeout=60) == 0
        process.stdout.close()
        process.stderr.close()


def test_add_document_can_be_dated_in_the_past():
    with BillingoSimulator(today=TODAY) as sim:
        sim.add_organization(KEY, name="Acme Kft.", seed=1, document_count=0)
        document = sim.add_document(KEY, invoice_date=(TODAY - datetime.timedelta(days=40)).isoformat())
        assert document["invoice_date"] == (TODAY - datetime.timedelta(days=40)).isoformat()
        assert document["due_date"] >= document["invoice_date"]
        conforms(get(sim, f"/documents/{document['id']}"))
