"""Billingo's nonsense is survived, not believed: rate-limit headers, paging envelopes, vanished drafts.

Against the simulator over a real socket, with its nonsense faults. The client's ``sleep`` is a
list's ``append``, so the tests assert the waits the client asked for, not how long anything took.
"""

from __future__ import annotations

import logging
import time

import pytest

from billingo_pipeline.billingo_client import (
    BillingoClient,
    SweepResult,
    read_rate_limit_headers,
    read_retry_after,
    sweep_documents,
)
from billingo_pipeline.simulator import REMOVE, IncomingRequest, generate_api_key

API_KEY = generate_api_key(5)
COUNT = 250


@pytest.fixture
def org(simulator):
    simulator.add_organization(API_KEY, name="Acme Kft.", seed=5, document_count=COUNT)
    return simulator


def _client(sim, sleeps: list[float], **kwargs) -> BillingoClient:
    options = {"page_size": 100, "backoff_seconds": 0.5, "max_backoff_seconds": 60.0, **kwargs}
    return BillingoClient(sim.base_url, API_KEY, company="acme", sleep=sleeps.append, **options)


def _reset(value: str | int, now: float) -> str:
    """A Reset header value: text as given, or an int as a timestamp that many seconds from ``now``."""
    return value if isinstance(value, str) else str(int(now) + value)


def _sweep(client, **kwargs):
    result = SweepResult()
    documents = list(sweep_documents(client, result, **kwargs))
    return documents, result


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


# -- rate-limit headers ----------------------------------------------------------------------------


def test_negative_remaining_and_a_mid_sized_reset_cost_no_wait_and_one_warning(org, caplog):
    # The mock's values: Remaining -7, Reset 863596234 (neither a delta nor a time near now).
    org.inject_fault("rate_limit_nonsense", times=10)
    sleeps: list[float] = []
    client = _client(org, sleeps)
    documents, result = _sweep(client)
    assert len(documents) == COUNT and result.complete
    assert sleeps == [] and client.stats.slept_seconds == 0
    assert client.stats.ignored_headers == 3  # every page's headers were ignored ...
    warnings = _warnings(caplog)
    assert len(warnings) == 1  # ... with one warning for the sync
    assert "X-RateLimit-Remaining -7 is below 0" in warnings[0] and "X-RateLimit-Reset '863596234'" in warnings[0]
    assert "waiting" not in caplog.text


@pytest.mark.parametrize(
    "headers, problem",
    [
        ({"X-RateLimit-Remaining": "-1", "X-RateLimit-Reset": "30"}, "X-RateLimit-Remaining -1 is below 0"),
        ({"X-RateLimit-Remaining": "none", "X-RateLimit-Reset": "30"}, "X-RateLimit-Remaining 'none' is not an integer"),
        ({"X-RateLimit-Remaining": "0.5", "X-RateLimit-Reset": "30"}, "X-RateLimit-Remaining '0.5' is not an integer"),
        ({"X-RateLimit-Limit": "300", "X-RateLimit-Remaining": "301"}, "X-RateLimit-Remaining 301 is above X-RateLimit-Limit 300"),
        ({"X-RateLimit-Limit": "0"}, "X-RateLimit-Limit 0 is below 1"),
        ({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "-5"}, "X-RateLimit-Reset '-5' is neither a wait"),
        ({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "863596234"}, "X-RateLimit-Reset '863596234' is neither"),
        ({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": 86_400}, "is neither a wait"),
        ({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": -86_400}, "is neither a wait"),
        ({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "nan"}, "X-RateLimit-Reset 'nan' is not a number"),
        ({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "soon"}, "X-RateLimit-Reset 'soon' is not a number"),
    ],
)
def test_nonsense_rate_limit_headers_are_ignored_with_a_warning(org, caplog, headers, problem):
    now = float(round(time.time()))
    org.inject_fault("rate_limit_nonsense", headers={k: _reset(v, now) for k, v in headers.items()})
    sleeps: list[float] = []
    client = _client(org, sleeps, clock=lambda: now)
    page = client.get_document_page(1)
    assert len(page.documents) == 100 and not page.problems
    assert sleeps == [] and client.stats.ignored_headers == 1
    warnings = _warnings(caplog)
    assert len(warnings) == 1 and problem in warnings[0] and "'acme'" in warnings[0]


@pytest.mark.parametrize(
    "reset, wait",
    [("5", 5.0), (30, 30.0), (-10, None), ("0", None)],
    ids=["delta", "timestamp-ahead", "timestamp-just-passed", "zero"],
)
def test_a_sane_spent_window_is_waited_for_as_billingo_says(org, caplog, reset, wait):
    caplog.set_level(logging.INFO)
    now = float(round(time.time()))
    org.inject_fault("rate_limit_nonsense", headers={"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": _reset(reset, now)})
    sleeps: list[float] = []
    client = _client(org, sleeps, clock=lambda: now)
    client.get_document_page(1)
    assert sleeps == ([wait] if wait else [])
    assert _warnings(caplog) == [] and client.stats.ignored_headers == 0
    if wait:
        assert f"waiting {wait:.1f}s" in caplog.text and "capped" not in caplog.text


def test_a_long_but_plausible_reset_is_capped_and_the_log_says_the_real_wait(org, caplog):
    caplog.set_level(logging.INFO)
    org.inject_fault("rate_limit_nonsense", headers={"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "3000"})
    sleeps: list[float] = []
    client = _client(org, sleeps, max_backoff_seconds=2.0)
    client.get_document_page(1)
    assert sleeps == [2.0]
    assert "waiting 2.0s (capped by max_backoff_seconds; Billingo's window resets in 3000s)" in caplog.text


@pytest.mark.parametrize("retry_after", ["-40", "99999999", "soon", "inf"])
def test_an_absurd_retry_after_is_ignored_and_the_429_backs_off_anyway(org, caplog, retry_after):
    org.inject_fault("rate_limit", headers={"Retry-After": retry_after}, times=2)
    sleeps: list[float] = []
    client = _client(org, sleeps, backoff_seconds=0.5)
    page = client.get_document_page(1)
    assert len(page.documents) == 100 and client.stats.retries == 2
    # Exponential backoff with up to 10 % jitter: 0.5 s, then 1 s.
    assert len(sleeps) == 2 and 0.5 <= sleeps[0] <= 0.55 and 1.0 <= sleeps[1] <= 1.1
    warnings = _warnings(caplog)
    headers_warnings = [w for w in warnings if "make no sense" in w]
    assert len(headers_warnings) == 1 and f"Retry-After '{retry_after}'" in headers_warnings[0]
    assert retry_after not in "".join(w for w in warnings if "make no sense" not in w)  # retry lines give real waits


@pytest.mark.parametrize("retry_after, cap, wait", [("7", 60.0, 7.0), ("120", 10.0, 10.0)])
def test_a_sane_retry_after_takes_precedence_capped(org, caplog, retry_after, cap, wait):
    org.inject_fault("rate_limit", retry_after=int(retry_after))
    sleeps: list[float] = []
    client = _client(org, sleeps, max_backoff_seconds=cap)
    client.get_document_page(1)
    assert sleeps == [wait] and client.stats.ignored_headers == 0
    assert f"retry 1/3 in {wait:.1f}s" in caplog.text


def test_a_429_without_retry_after_still_backs_off(org):
    org.inject_fault("rate_limit", retry_after=None)
    sleeps: list[float] = []
    client = _client(org, sleeps, backoff_seconds=0.5)
    client.get_document_page(1)
    assert len(sleeps) == 1 and 0.5 <= sleeps[0] <= 0.55 and client.stats.retries == 1


def test_header_readers_on_their_own():
    now = 1_800_000_000.0
    reading = read_rate_limit_headers({"X-RateLimit-Limit": "300", "X-RateLimit-Remaining": "0",
                                       "X-RateLimit-Reset": "1800000042"}, now=now)
    assert (reading.limit, reading.remaining, reading.reset_in, reading.problems) == (300, 0, 42.0, ())
    assert read_rate_limit_headers({}, now=now).problems == ()
    assert read_retry_after({"Retry-After": "3"}) == (3.0, None)
    assert read_retry_after({}) == (None, None)
    long_value = "9" * 500
    seconds, problem = read_retry_after({"Retry-After": long_value})
    assert seconds is None and len(problem) < 120  # a server's junk is quoted short, never whole


# -- paging envelopes --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "envelope, words",
    [
        ({"total": -1}, "total -1 is negative"),
        ({"total": "250"}, 'total is "250", not an integer'),
        ({"total": REMOVE}, "no total"),
        ({"total": 1000}, "last_page 3, where total 1000 at 100 a page means 10"),
        ({"total": 50, "last_page": 1}, "100 documents on page "),
        ({"last_page": 0}, "last_page 0 is below 1"),
        ({"last_page": 99}, "last_page 99, where total 250 at 100 a page means 3"),
        ({"per_page": 50}, "per_page 50, but we asked for 100"),
        ({"per_page": 10}, "100 documents on a page of 10"),
        ({"current_page": 7}, "but we asked for page"),
        ({"current_page": True}, "current_page is true, not an integer"),
    ],
)
@pytest.mark.parametrize("bad_page", [1, 2])
def test_an_inconsistent_envelope_makes_the_sweep_incomplete_and_stops_it(org, envelope, words, bad_page):
    org.inject_fault("paging_nonsense", envelope=envelope, after_requests=bad_page - 1)
    sleeps: list[float] = []
    client = _client(org, sleeps)
    documents, result = _sweep(client)
    ids = [d["id"] for d in documents]
    # What was fetched is kept (each once); nothing may be marked deleted on this sweep's word.
    assert ids == [d["id"] for d in org.documents(API_KEY)[: 100 * bad_page]]
    assert not result.complete and result.paging_inconsistent and result.final_pass_ids is None
    assert any(f"pass 1, page {bad_page}: " in note and words in note for note in result.notes), result.notes
    assert client.stats.api_calls == bad_page and result.passes == 1


def test_the_negative_total_of_a_random_mock_is_not_a_complete_fetch(org):
    org.inject_fault("paging_nonsense", times=100)  # every page: total -1
    documents, result = _sweep(_client(org, []))
    assert not result.complete and len(documents) == 100


def test_pages_that_keep_coming_are_bounded_by_the_first_total(org):
    # Ten documents created before every request: each envelope is consistent, but every page
    # serves the ten created before the previous one again, and last_page grows as fast as we read.
    def grow(request: IncomingRequest) -> None:
        if request.path == "/v3/documents":
            for _ in range(10):
                org.add_document(API_KEY)

    org.on_request(grow)
    client = _client(org, [], page_size=10)
    documents, result = _sweep(client)
    # The first page's total is 260 (ten were added before it was served): 26 pages, plus a margin of 5.
    assert client.stats.api_calls == 31
    assert not result.complete and result.paging_inconsistent and result.final_pass_ids is None
    assert "stopped after page 31" in " ".join(result.notes)
    assert len(documents) == len({d["id"] for d in documents}) == 10 and result.duplicates_skipped == 300


def test_the_absolute_page_cap_holds_whatever_the_total(org):
    client = _client(org, [], max_pages_per_pass=2)
    documents, result = _sweep(client)
    assert client.stats.api_calls == 2 and len(documents) == 200
    assert not result.complete and "stopped after page 2: Billingo now reports 3 pages" in " ".join(result.notes)


def test_max_pages_per_pass_must_be_positive():
    with pytest.raises(ValueError, match="max_pages_per_pass"):
        BillingoClient("http://127.0.0.1:1/v3", API_KEY, company="acme", max_pages_per_pass=0)


# -- documents that vanish while we page -------------------------------------------------------------


def test_drafts_deleted_while_the_first_pass_pages_are_not_in_the_final_pass(org):
    documents_now = org.documents(API_KEY)
    drafts = [d["id"] for d in documents_now[:200] if d["type"] == "draft"]
    assert len(drafts) >= 3
    # Two drafts of page 1 go right after it is served; one of page 1-2 when page 3 is asked for.
    # Each deletion shifts later pages back: without a second pass a document would be skipped.
    org.schedule(after_requests=len(org.requests_log) + 1,
                 action=lambda: [org.delete_document(API_KEY, i) for i in drafts[:2]])
    deleted_on_page_3: list[int] = []

    def delete_when_page_3_is_asked(request: IncomingRequest) -> None:
        if request.query.get("page") == "3" and not deleted_on_page_3:
            deleted_on_page_3.append(drafts[-1])
            org.delete_document(API_KEY, drafts[-1])

    org.on_request(delete_when_page_3_is_asked)
    vanished = {*drafts[:2], drafts[-1]}

    documents, result = _sweep(_client(org, []))
    remaining = {d["id"] for d in org.documents(API_KEY)}
    assert len(remaining) == COUNT - 3
    assert result.complete and result.drift_detected and result.passes == 2
    assert result.final_pass_ids == remaining and not vanished & result.final_pass_ids
    # Every document still there was yielded once; the vanished ones were yielded by pass 1 (and
    # stored), which is why the caller needs final_pass_ids to mark them missing.
    ids = [d["id"] for d in documents]
    assert len(ids) == len(set(ids)) and remaining <= set(ids) and vanished <= set(ids)


def test_a_steady_sweep_proves_every_id_in_one_pass(org):
    documents, result = _sweep(_client(org, []))
    assert result.complete and result.passes == 1
    assert result.final_pass_ids == {d["id"] for d in documents} == {d["id"] for d in org.documents(API_KEY)}


def test_an_incomplete_sweep_has_no_final_pass_ids(org):
    # A document created before every page: the total never holds still within one pass.
    org.on_request(lambda request: org.add_document(API_KEY) if request.path == "/v3/documents" else None)
    documents, result = _sweep(_client(org, []), max_passes=2)
    assert not result.complete and result.drift_detected and not result.paging_inconsistent
    assert result.final_pass_ids is None and len(documents) == len({d["id"] for d in documents})


def test_nonsense_that_carries_the_api_key_is_quoted_without_it(org, caplog):
    caplog.set_level(logging.DEBUG)
    org.inject_fault("rate_limit_nonsense", headers={"X-RateLimit-Remaining": f"x{API_KEY}x"})
    org.inject_fault("paging_nonsense", envelope={"total": f"{API_KEY}!"})
    documents, result = _sweep(_client(org, []))
    notes = " ".join(result.notes)
    assert not result.complete and "[REDACTED]" in notes and "[REDACTED]" in caplog.text
    assert API_KEY not in notes and API_KEY[:20] not in notes
    assert API_KEY not in caplog.text and API_KEY[:20] not in caplog.text
