"""The Billingo client against the simulator over a real socket: paging, drift, retries, errors.

Every request the client sends is also checked against the published OpenAPI spec.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import random
import re

import pytest
import requests

from billingo_pipeline.billingo_client import (
    BillingoApiError,
    BillingoClient,
    SweepResult,
    may_hold_a_long_integer,
    parse_json_body,
    sweep_documents,
)
from billingo_pipeline.credentials import CredentialError
from billingo_pipeline.simulator import BillingoSimulator, generate_api_key
from billingo_pipeline.simulator.data import generate_documents
from billingo_pipeline_tests import spec

API_KEY = generate_api_key(42)


@pytest.fixture
def org(simulator):
    simulator.add_organization(API_KEY, name="Acme Kft.", seed=42, document_count=250)
    return simulator


def _client(sim, key=API_KEY, **kwargs) -> BillingoClient:
    options = {"page_size": 100, "backoff_seconds": 0.01, "max_backoff_seconds": 2.0, **kwargs}
    return BillingoClient(sim.base_url, key, company="acme", **options)


def _sweep(client, **filters):
    result = SweepResult()
    documents = list(sweep_documents(client, result, **filters))
    return documents, result


def _assert_requests_follow_spec(sim):
    for entry in sim.requests_log:
        url = f"{sim.base_url.removesuffix('/v3')}{entry.path}"
        spec.validate_request(entry.method, url, {"X-API-KEY": "present"} if entry.has_api_key else {}, entry.query)


def test_pages_are_streamed_newest_first_and_counted(org):
    client = _client(org)
    pages = list(client.iter_document_pages())
    assert [len(p.documents) for p in pages] == [100, 100, 50]
    ids = [d["id"] for p in pages for d in p.documents]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == 250
    assert client.stats.api_calls == 3 and client.stats.pages_fetched == 3 and client.stats.retries == 0
    _assert_requests_follow_spec(org)


def test_filters_are_sent_as_the_spec_names_them(org):
    documents, _ = _sweep(_client(org), payment_status="paid", type="invoice")
    assert documents and all(d["payment_status"] == "paid" and d["type"] == "invoice" for d in documents)
    assert {"payment_status": "paid", "type": "invoice"}.items() <= org.requests_log[-1].query.items()
    _assert_requests_follow_spec(org)


def test_sweep_survives_a_document_created_mid_sync(org):
    created = []
    org.schedule(after_requests=len(org.requests_log) + 1, action=lambda: created.append(org.add_document(API_KEY)))
    documents, result = _sweep(_client(org))
    ids = [d["id"] for d in documents]
    assert len(ids) == len(set(ids)) == 251
    assert created[0]["id"] in ids
    assert result.drift_detected and result.complete and result.duplicates_skipped >= 1 and result.passes == 2


def test_sweep_survives_a_document_deleted_mid_sync(org):
    # Deleting a newer document after page 1 shifts page 2 back by one: one document would be skipped.
    victim = org.documents(API_KEY)[10]
    org.schedule(after_requests=len(org.requests_log) + 1, action=lambda: org.delete_document(API_KEY, victim["id"]))
    documents, result = _sweep(_client(org))
    ids = {d["id"] for d in documents}
    assert {d["id"] for d in org.documents(API_KEY)} <= ids
    assert result.complete and result.drift_detected
    assert result.final_pass_ids == {d["id"] for d in org.documents(API_KEY)}
    assert victim["id"] not in result.final_pass_ids


def test_steady_sweep_is_one_pass(org):
    documents, result = _sweep(_client(org))
    assert len(documents) == 250 and result.complete and result.passes == 1 and not result.drift_detected


@pytest.mark.parametrize("kind", ["server_error", "unavailable", "truncated", "malformed_page", "rate_limit"])
def test_transient_faults_are_retried(org, kind):
    org.inject_fault(kind, times=2)
    client = _client(org)
    documents, result = _sweep(client)
    assert len(documents) == 250 and result.complete
    assert client.stats.retries == 2 and client.stats.api_calls == 3 + 2


def test_retry_after_is_honoured(org):
    org.inject_fault("rate_limit", times=1, retry_after=1)
    sleeps: list[float] = []
    client = _client(org, sleep=sleeps.append)
    client.get_document_page(1)
    assert sleeps == [1.0] and client.stats.slept_seconds == 1.0 and client.stats.retries == 1


def test_slow_response_times_out_and_is_retried(org):
    org.inject_fault("slow", times=1, delay_seconds=1.0)
    client = _client(org, read_timeout=0.3)
    page = client.get_document_page(1)
    assert len(page.documents) == 100 and client.stats.retries == 1


def test_gives_up_after_three_retries(org, caplog):
    caplog.set_level(logging.DEBUG)
    org.inject_fault("server_error", times=10)
    client = _client(org)
    with pytest.raises(BillingoApiError) as excinfo:
        client.get_document_page(1)
    assert client.stats.api_calls == 4
    message = str(excinfo.value)
    assert "failed after 4 attempts" in message and "HTTP 500" in message and "'acme'" in message
    assert excinfo.value.retryable
    assert caplog.text.count("retry") == 3
    assert API_KEY not in caplog.text and API_KEY not in message


def test_rate_limit_window_is_respected_without_429(simulator):
    # 3 requests per 1-second window: the client waits for the reset instead of collecting 429s.
    sim = BillingoSimulator(rate_limit_per_minute=3, rate_window_seconds=1.0)
    sim.start()
    try:
        sim.add_organization(API_KEY, name="Acme", seed=1, document_count=50)
        client = _client(sim, page_size=10)
        documents, result = _sweep(client)
        assert len(documents) == 50 and result.complete
        assert [e.status for e in sim.requests_log].count(429) == 0
        assert client.stats.slept_seconds > 0
    finally:
        sim.stop()


def test_rate_limit_429_without_retry_after_backs_off(org):
    org.inject_fault("rate_limit", times=1, retry_after=None)
    client = _client(org)
    client.get_document_page(1)
    assert client.stats.retries == 1 and client.stats.slept_seconds > 0


@pytest.mark.parametrize(
    "setup, status, words",
    [
        (lambda sim: "not-a-key", 401, "API key missing or invalid"),
        (lambda sim: (sim.add_organization("no-sub-key", name="Broke", seed=3, document_count=1, has_subscription=False), "no-sub-key")[1], 402, "no active Billingo subscription"),
    ],
)
def test_client_errors_fail_at_once_naming_company_and_status(org, setup, status, words, caplog):
    caplog.set_level(logging.DEBUG)
    key = setup(org)
    client = _client(org, key=key)
    with pytest.raises(BillingoApiError) as excinfo:
        client.get_document_page(1)
    message = str(excinfo.value)
    assert excinfo.value.status == status and f"HTTP {status}" in message and words in message and "'acme'" in message
    assert client.stats.api_calls == 1 and not excinfo.value.retryable
    assert key not in message and key not in caplog.text and key not in repr(client)


def test_unknown_document_is_404(org):
    with pytest.raises(BillingoApiError) as excinfo:
        _client(org).get_document(999_999_999)
    assert excinfo.value.status == 404


def test_invalid_filter_is_422_with_the_field(org):
    with pytest.raises(BillingoApiError) as excinfo:
        _client(org).get_document_page(1, start_date="not-a-date")
    assert excinfo.value.status == 422 and "start_date" in str(excinfo.value)


def test_key_check_endpoint(org):
    organization = _client(org).get_organization()
    assert "tax_code" in organization
    _assert_requests_follow_spec(org)


def test_key_with_surrounding_whitespace_is_sent_without_it(org):
    # A key read from a CRLF file or pasted with a blank: requests refuses such a header value.
    assert "tax_code" in _client(org, key=f" {API_KEY}\r\n").get_organization()


def test_key_that_cannot_be_a_header_is_refused_without_echoing_it(org):
    # requests would refuse it too, but with the whole value (the key) in its exception text.
    with pytest.raises(CredentialError) as excinfo:
        _client(org, key=f"{API_KEY}\nX-Other: 1").get_organization()
    assert API_KEY not in str(excinfo.value)
    assert org.requests_log == []


def test_page_size_outside_the_spec_is_refused_locally():
    with pytest.raises(ValueError, match="between 1 and 100"):
        BillingoClient("http://127.0.0.1:1/v3", API_KEY, company="acme", page_size=101)


def _response(body: bytes) -> requests.Response:
    response = requests.Response()
    response._content = body
    response.status_code = 200
    return response


@pytest.mark.parametrize(
    "body",
    [
        b'{"data": [{"id": 1, "gross_total": 12700.5, "paid": null, "ok": true, "tiny": 5e-324, "neg": -0}]}',
        b'{"id": 123456789012345678901234567890}',  # beyond 64 bits: must stay an exact int
        b'{"a": [1, -98765432109876543210, 3]}',
        b'{"id":\n\t -1234567890123456789012.5, "b": [ 12345678901234567890 ]}',  # whitespace before them
        b'{"iban": "HU42117730161111101800000000", "n": 12}',  # long digits inside a string
        b'{"amount": NaN, "big": Infinity}',  # not JSON: handed on, the document checks refuse it
        b'{"comment": "lone \\ud800 surrogate"}',
        b'{"comment": "nul \\u0000 and \\u00e1rv\\u00edzt\\u0171r\\u0151"}',
        '{"name": "Árvíztűrő tükörfúrógép"}'.encode(),
    ],
)
def test_a_body_is_read_to_exactly_what_the_stdlib_reads(body):
    expected = json.loads(body.decode("utf-8"))
    parsed = parse_json_body(_response(body))
    # Compared with their types, and NaN by its text (it never equals itself).
    assert json.dumps(parsed, sort_keys=True) == json.dumps(expected, sort_keys=True)
    assert repr(parsed) == repr(expected) or any(isinstance(v, float) and math.isnan(v) for v in expected.values())


def test_every_body_with_a_long_number_is_found_and_a_realistic_page_is_not():
    """The detector against its definition, a regular expression: a number value of 19 digits or
    more (after ':', ',' or '[', whitespace and a minus) is always found; a false alarm only sends
    a body to the slower stdlib parser, which a page of Billingo documents must not meet."""
    definition = re.compile(rb"[:,\[]\s*-?\d{19}")
    rng = random.Random(19)
    pieces = [b":", b",", b"[", b" ", b"\n", b"\t", b"-", b'"', b"a", b".", b"e", b"0", b"7", b"9" * 10, b"1" * 19]
    bodies = [b"".join(rng.choice(pieces) for _ in range(rng.randint(1, 30))) for _ in range(20_000)]
    found = [body for body in bodies if definition.search(body)]
    assert len(found) > 1_000  # the sample holds plenty of both
    assert all(may_hold_a_long_integer(body) for body in found)
    page = json.dumps({"data": generate_documents(3, 100, today=dt.date(2026, 11, 30))}).encode()
    assert not may_hold_a_long_integer(page)


def test_a_body_that_is_not_json_raises_as_the_stdlib_does():
    with pytest.raises(ValueError):
        parse_json_body(_response(b'{"data": [1, 2'))
    with pytest.raises(UnicodeDecodeError):
        parse_json_body(_response(b'{"name": "\xff"}'))


def test_simulator_pages_read_the_same_as_the_stdlib_reads_them(org):
    session = requests.Session()
    response = session.get(f"{org.base_url}/documents", params={"page": 1, "per_page": 100}, headers={"X-API-KEY": API_KEY})
    assert response.status_code == 200
    assert repr(parse_json_body(response)) == repr(json.loads(response.content.decode("utf-8")))
