"""Billingo misbehaving on the wire: 429 storms, 5xx, slow answers, cut-off and non-JSON bodies,
pages whose ``data`` is not a list, a revoked key. On SQLite and PostgreSQL.

A fault the client can ride out (within its 3 retries) leaves a COMPLETED sync with every document;
one that outlasts the retries fails the sync with one specific, key-free line, keeps everything
stored before, marks nothing as vanished, and the next sync completes by itself.
"""

from __future__ import annotations

import pytest
import requests
import sqlalchemy as sa

from billingo_pipeline.admin import replace_api_key
from billingo_pipeline.simulator import generate_api_key
from billingo_pipeline.warehouse.schema import billingo_invoices
from billingo_pipeline.warehouse.sync_log import COMPLETED, FAILED
from billingo_pipeline_tests.faults.conftest import DOCUMENTS, PAGE_SIZE

PAGES = DOCUMENTS // PAGE_SIZE
# A read timeout the slow fault outlasts (its delay is far longer), yet one a loaded CI machine
# answering a normal page of 10 documents stays well inside.
READ_TIMEOUT_SECONDS = 0.5
SLOW_SECONDS = 1.0


# Every sync reads Billingo's clock first (GET /utils/time, the incremental cursor): one call.
CLOCK = 1


def _fault_statuses(rig) -> list[int]:
    return [entry.status for entry in rig.simulator.requests_log if entry.fault]


@pytest.mark.parametrize("retry_after", [None, 1], ids=["without-retry-after", "with-retry-after"])
def test_429_storms_within_the_retries_complete_the_sync(rig, retry_after):
    # Three 429s in a row on page 1, three more on page 3: each storm is exactly what 3 retries absorb.
    rig.simulator.inject_fault("rate_limit", times=3, retry_after=retry_after)
    rig.simulator.inject_fault("rate_limit", times=3, after_requests=2, retry_after=retry_after)

    result = rig.sync()
    log = rig.last_log()
    assert (result.status, log.status, log.error_message) == (COMPLETED, COMPLETED, None)
    assert _fault_statuses(rig) == [429] * 6
    assert (log.api_calls, log.pages_fetched) == (CLOCK + PAGES + 6, PAGES)  # every 429 counts against the key's limit
    rig.assert_nothing_lost_or_doubled()
    rig.assert_recovers(unchanged=True)


TRANSIENT = [
    ("server_error", "HTTP 500"),
    ("unavailable", "HTTP 503"),
    ("truncated", "on GET /documents"),
    ("malformed_page", "invalid JSON body on GET /documents"),
    ("slow", "Timeout on GET /documents"),
]


@pytest.mark.parametrize("kind, _words", TRANSIENT, ids=[k for k, _ in TRANSIENT])
def test_transient_faults_within_the_retries_complete_the_sync(rig, kind, _words):
    # Two failures on the middle page: retried, and the sweep goes on where it was.
    fault = rig.simulator.inject_fault(kind, times=2, after_requests=1, delay_seconds=SLOW_SECONDS if kind == "slow" else 0)

    result = rig.sync(read_timeout_seconds=READ_TIMEOUT_SECONDS)
    log = rig.last_log()
    assert (result.status, log.status, log.error_message) == (COMPLETED, COMPLETED, None)
    assert log.invoices_created == DOCUMENTS
    assert fault.fired == 2
    assert log.api_calls == CLOCK + PAGES + 2  # every retried attempt counts against the key's limit
    rig.assert_nothing_lost_or_doubled()
    rig.assert_recovers(unchanged=True)


PERSISTENT = [
    ("rate_limit", "HTTP 429 on GET /documents: Too many requests"),
    *TRANSIENT,
]


@pytest.mark.parametrize("kind, words", PERSISTENT, ids=[k for k, _ in PERSISTENT])
def test_faults_outlasting_the_retries_fail_the_sync_and_lose_nothing(rig, kind, words):
    first = rig.sync()
    assert first.status == COMPLETED
    # Billingo moves on meanwhile: a payment and a new invoice.
    unpaid = next(d for d in rig.source().values() if d["payment_status"] == "outstanding" and not d["cancelled"])
    rig.simulator.pay_document(rig.api_key, unpaid["id"])
    new = rig.simulator.add_document(rig.api_key)
    # A full sweep (three pages): page 1 passes, page 2 fails on all 4 attempts.
    rig.simulator.inject_fault(kind, times=4, after_requests=1, delay_seconds=SLOW_SECONDS if kind == "slow" else 0)

    result = rig.sync(full=True, read_timeout_seconds=READ_TIMEOUT_SECONDS)
    log = rig.last_log()
    assert (result.success, result.status, log.status) == (False, FAILED, FAILED)
    assert f"company '{rig.slug}'" in log.error_message and "failed after 4 attempts" in log.error_message
    assert words in log.error_message and "\n" not in log.error_message
    assert log.api_calls == CLOCK + 1 + 4 and log.fetch_complete is not True
    rig.assert_key_free(log.error_message, result.error)
    # What the first sync stored is all still there, nothing is marked as vanished from Billingo,
    # and page 1, stored as it arrived, is kept (it holds the new invoice: newest first).
    assert rig.live_invoice_ids() == set(rig.source())

    rig.assert_recovers()
    with rig.engine.connect() as conn:
        status = conn.execute(
            sa.select(billingo_invoices.c.payment_status).where(billingo_invoices.c.document_id == unpaid["id"])
        ).scalar_one()
    assert status == "paid"


def test_a_page_whose_data_is_not_a_list_fails_the_sync_and_loses_nothing(rig):
    assert rig.sync().status == COMPLETED
    new = rig.simulator.add_document(rig.api_key)
    rig.simulator.inject_fault("data_not_list", after_requests=1)

    result = rig.sync(full=True)  # three pages: the second is the bad one
    log = rig.last_log()
    assert (result.success, log.status) == (False, FAILED)
    assert f"malformed document page 2 for company '{rig.slug}'" in log.error_message
    assert "data is" in log.error_message and "not a list" in log.error_message and "\n" not in log.error_message
    assert _fault_statuses(rig) == [200]
    assert rig.live_invoice_ids() == set(rig.source())  # page 1 (the new invoice on it) was stored as it came

    rig.assert_recovers()


def test_a_revoked_key_fails_at_once_naming_the_company_and_never_the_key(rig, caplog):
    assert rig.sync().status == COMPLETED
    # The stored key is one Billingo no longer accepts (revoked in Billingo's UI).
    revoked = generate_api_key("revoked")
    replace_api_key(rig.engine, rig.slug, revoked, api_base_url=rig.simulator.base_url, verify=False)
    calls_before = len(rig.simulator.requests_log)

    result = rig.sync(via_dagster=True)
    log = rig.last_log()
    assert (result.success, log.status) == (False, FAILED)
    assert "HTTP 401 (API key missing or invalid)" in log.error_message and f"company '{rig.slug}'" in log.error_message
    assert len(rig.simulator.requests_log) - calls_before == 1 == log.api_calls  # a 401 is never retried
    events = "\n".join(str(entry) for entry in rig.instance.all_logs(result.run_id))
    for text in (log.error_message, result.error, events, caplog.text):
        assert revoked not in text and rig.api_key not in text
    assert rig.live_invoice_ids() == set(rig.source())

    # Not a fault time heals: once a working key is stored (`company rotate-key`), the next sync completes.
    replace_api_key(rig.engine, rig.slug, rig.api_key, api_base_url=rig.simulator.base_url)
    rig.assert_recovers(unchanged=True)


def test_the_data_not_list_fault_serves_an_object_where_the_page_list_belongs(simulator):
    api_key = generate_api_key("shape")
    simulator.add_organization(api_key, name="Shape Kft.", seed="shape", document_count=3)
    simulator.inject_fault("data_not_list")
    faulty, normal = (
        requests.get(f"{simulator.base_url}/documents", headers={"X-API-KEY": api_key}, timeout=5) for _ in range(2)
    )
    assert faulty.status_code == 200 and normal.status_code == 200
    body, expected = faulty.json(), normal.json()
    assert body["data"] == {str(i): d for i, d in enumerate(expected["data"], start=1)}
    assert {k: v for k, v in body.items() if k != "data"} == {k: v for k, v in expected.items() if k != "data"}
    assert [e.fault for e in simulator.requests_log] == ["data_not_list", None]
