"""The per-key request budget: a sliding minute, Billingo's headers first, one limiter per key.

Every test runs on an injected clock whose ``sleep`` only moves it forward: nothing here sleeps.
The client's hook is checked against the simulator over a real socket.
"""

from __future__ import annotations

import threading

import pytest

from billingo_pipeline.billingo_client import BillingoClient, RateLimitReading
from billingo_pipeline.rate_limit import (
    KeyRateLimiter,
    RateLimiterRegistry,
    StoppableBudget,
    SyncStopRequested,
    limiter_for_key,
)
from billingo_pipeline.resources import BillingoResource
from billingo_pipeline.simulator import generate_api_key
from billingo_pipeline.warehouse.companies import Company


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def _limiter(per_minute: int) -> tuple[KeyRateLimiter, FakeClock]:
    clock = FakeClock()
    return KeyRateLimiter(per_minute, clock=clock, sleep=clock.sleep), clock


def _reading(limit=None, remaining=None, reset_in=None) -> RateLimitReading:
    return RateLimitReading(limit, remaining, reset_in, ())


def test_no_more_than_the_budget_in_any_minute():
    limiter, clock = _limiter(3)
    sent = []
    for _ in range(7):
        limiter.acquire()
        sent.append(clock.now)
        clock.now += 5  # each request takes 5 s
    assert sent[:3] == [1000.0, 1005.0, 1010.0]
    assert sent[3] == 1060.0  # the first one left the window
    assert all(sum(1 for t in sent if start <= t < start + 60) <= 3 for start in sent)


def test_billingos_remaining_takes_precedence_over_our_own_count():
    limiter, clock = _limiter(300)
    limiter.acquire()
    # The webshop spent most of the key's budget: Billingo says 2 left, the window resets in 12 s.
    limiter.observe(_reading(limit=300, remaining=2, reset_in=12))
    assert limiter.acquire() == 0 and limiter.acquire() == 0
    assert limiter.acquire() == 12  # waited for Billingo's reset, not for our own minute
    assert clock.now == 1012.0
    # That window is over: our own count governs again until Billingo says more.
    assert limiter.acquire() == 0


def test_a_lower_limit_from_billingo_shrinks_the_window_and_nonsense_changes_nothing():
    limiter, clock = _limiter(300)
    limiter.observe(_reading())  # headers absent or ignored as nonsense by the client
    assert limiter.budget_per_minute == 300
    limiter.observe(_reading(limit=2))
    assert limiter.budget_per_minute == 2
    limiter.acquire(), limiter.acquire()
    assert limiter.acquire() == 60


def test_a_wait_billingo_announces_is_capped_like_the_clients_own_waits():
    limiter, clock = _limiter(300)
    limiter.observe(_reading(remaining=0, reset_in=900))
    assert limiter.acquire(max_server_wait=5) == 5
    assert limiter.acquire(max_server_wait=5) == 0  # the announced window was given up on


def test_a_stop_request_ends_a_long_wait_without_counting_the_request():
    limiter, clock = _limiter(1)
    limiter.acquire()
    budget = StoppableBudget(limiter, should_stop=lambda: clock.now >= 1003)
    with pytest.raises(SyncStopRequested):
        budget.acquire()
    assert clock.now == 1003 and clock.sleeps == [1.0, 1.0, 1.0]  # woke every second to look


def test_one_limiter_per_key_found_by_fingerprint_never_by_the_key():
    registry = RateLimiterRegistry()
    key, other = generate_api_key("rl-one"), generate_api_key("rl-two")
    first = registry.limiter_for_key(key, 300)
    assert registry.limiter_for_key(f"  {key}\n", 120) is first  # same key, as pasted
    assert first.requests_per_minute == 120  # the latest setting wins
    assert registry.limiter_for_key(other) is not first and len(registry) == 2
    shown = repr(registry) + repr(first) + repr(vars(registry)) + repr(vars(first))
    assert key not in shown and other not in shown


def test_threads_sharing_a_key_share_its_budget():
    limiter, clock = _limiter(10)
    lock = threading.Lock()  # the fake clock is not thread-safe; the limiter is
    times: list[float] = []

    def work():
        for _ in range(5):
            limiter.acquire()
            with lock:
                times.append(clock.now)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(times) == 20
    assert all(sum(1 for t in times if start <= t < start + 60) <= 10 for start in times)


def test_the_client_asks_the_budget_before_every_request_and_reports_billingos_headers(simulator):
    api_key = generate_api_key("rl-client")
    simulator.add_organization(api_key, name="Acme", seed="rl-client", document_count=250)
    simulator.inject_fault("server_error", times=1)

    class Recording:
        def __init__(self):
            self.acquired = 0
            self.readings = []

        def acquire(self, max_server_wait):
            self.acquired += 1
            return 0.0

        def observe(self, reading):
            self.readings.append(reading)

    budget = Recording()
    with BillingoClient(simulator.base_url, api_key, company="acme", backoff_seconds=0.01, rate_limiter=budget) as client:
        pages = list(client.iter_document_pages())
    assert len(pages) == 3
    assert budget.acquired == client.stats.api_calls == 4  # a retried request costs the key's budget too
    assert [r.remaining for r in budget.readings] == [298, 297, 296]  # the 500 spent one, and said nothing
    assert {r.limit for r in budget.readings} == {300}


def test_every_client_of_a_key_gets_that_keys_limiter(fernet_key):
    from billingo_pipeline.credentials import api_key_fingerprint, encrypt_api_key

    api_key = generate_api_key("rl-shared")

    def company(slug: str) -> Company:
        return Company(
            id=1, slug=slug, name=slug, billingo_sync_enabled=True, is_active=True,
            api_key_encrypted=encrypt_api_key(api_key), api_key_fingerprint=api_key_fingerprint(api_key),
            api_key_configured_at=None, api_key_checked_at=None,
        )

    resource = BillingoResource(base_url="http://127.0.0.1:9", requests_per_minute=120)
    with resource.client_for(company("acme")) as first, resource.client_for(company("globex")) as second:
        assert first._rate_limiter is second._rate_limiter is limiter_for_key(api_key, 120)
    assert limiter_for_key(api_key, 120).requests_per_minute == 120
