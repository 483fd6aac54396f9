"""Keeps each Billingo API key under its request budget, across every client of that key in the process.

Billingo allows about 300 requests a minute per API key, and the key is shared: the company's
webshop or accountant spends the same budget. Several companies may also share one key
(``company add --allow-shared-key``), and a range run syncs several companies at once, so the
budget belongs to the key, not to a client: ``limiter_for_key`` returns the one limiter of a key
(looked up by its fingerprint, so the key itself is never a dict key anything could print).

What the limiter believes, in order:
1. Billingo's own word: a sane ``X-RateLimit-Remaining`` with its ``X-RateLimit-Reset`` (as parsed
   and sanity-checked by ``billingo_client.read_rate_limit_headers``) is the budget until that
   reset, minus what we sent since. It sees the other users of the key; we cannot.
2. Without it (headers absent, nonsense, or their window over): a sliding window of the last
   minute's requests, at most ``requests_per_minute`` (``X-RateLimit-Limit`` when Billingo sent a
   sane one). A sliding window, not a token bucket: a bucket refilled while full lets twice the
   budget through in one minute, which a fixed-window server answers with 429s.

The clock and the sleep are injected, so tests run without sleeping.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

from .credentials import api_key_fingerprint

DEFAULT_REQUESTS_PER_MINUTE = 300
WINDOW_SECONDS = 60.0


class RateLimitReadingLike(Protocol):
    limit: int | None
    remaining: int | None
    reset_in: float | None


class KeyRateLimiter:
    """The request budget of one API key. Thread-safe; ``acquire`` before each request,
    ``observe`` each response's rate-limit reading."""

    def __init__(
        self,
        requests_per_minute: int = DEFAULT_REQUESTS_PER_MINUTE,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if requests_per_minute < 1:
            raise ValueError(f"requests_per_minute must be >= 1, got {requests_per_minute}")
        self.requests_per_minute = requests_per_minute
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._sent: deque[float] = deque()  # when each request of the last window was let through
        self._server_limit: int | None = None
        self._server_remaining: int | None = None
        self._server_reset_at: float | None = None

    def __repr__(self) -> str:
        return f"KeyRateLimiter(requests_per_minute={self.requests_per_minute})"

    @property
    def budget_per_minute(self) -> int:
        return self._server_limit or self.requests_per_minute

    def acquire(self, max_server_wait: float = math.inf, *, should_stop: Callable[[], bool] | None = None) -> float:
        """Wait until one more request fits the budget, then count it; returns the seconds waited.

        A wait Billingo announced (Remaining 0 until Reset) lasts at most ``max_server_wait``, the
        client's own cap on any wait Billingo asks for; past it the request goes, and a 429 is
        retried by the client. ``should_stop`` is asked between waits (a run being interrupted must
        not sit out a minute): when it says so, ``acquire`` returns without counting.
        """
        waited = server_waited = 0.0
        while True:
            if should_stop is not None and should_stop():
                return waited
            with self._lock:
                now = self._clock()
                wait, announced = self._wait_needed(now)
                if announced and server_waited >= max_server_wait:
                    self._server_remaining = self._server_reset_at = None  # waited as long as we wait
                    wait, announced = self._wait_needed(now)
                if wait <= 0:
                    self._sent.append(now)
                    if self._server_remaining is not None:
                        self._server_remaining -= 1
                    return waited
                if announced:
                    wait = min(wait, max_server_wait - server_waited)
            # Sliced so that a stop request is seen within a second.
            pause = min(wait, 1.0) if should_stop is not None else wait
            self._sleep(pause)
            waited += pause
            server_waited += pause if announced else 0.0

    def observe(self, reading: RateLimitReadingLike) -> None:
        """Believe Billingo's headers where ``read_rate_limit_headers`` found them sane."""
        with self._lock:
            now = self._clock()
            if reading.limit is not None:
                self._server_limit = reading.limit
            if reading.remaining is not None and reading.reset_in is not None:
                self._server_remaining = reading.remaining
                self._server_reset_at = now + reading.reset_in

    def _wait_needed(self, now: float) -> tuple[float, bool]:
        """Seconds until a request fits, and whether Billingo's headers (not our window) said so."""
        while self._sent and self._sent[0] <= now - WINDOW_SECONDS:
            self._sent.popleft()
        if self._server_reset_at is not None and now >= self._server_reset_at:
            self._server_remaining = self._server_reset_at = None  # that window is over
        if self._server_remaining is not None and self._server_reset_at is not None:
            # Billingo's word takes precedence: it counts the key's other users too.
            return (0.0, False) if self._server_remaining > 0 else (self._server_reset_at - now, True)
        if len(self._sent) < self.budget_per_minute:
            return 0.0, False
        return self._sent[-self.budget_per_minute] + WINDOW_SECONDS - now, False


class RateLimiterRegistry:
    """One ``KeyRateLimiter`` per API key, found by the key's fingerprint (never the key).

    Two different keys that happen to share a fingerprint (``api_key_fingerprint``: one in ten
    million for 500 companies) share a budget: slower, never over Billingo's limit."""

    def __init__(
        self, *, clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep
    ):
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._limiters: dict[str, KeyRateLimiter] = {}

    def __repr__(self) -> str:
        return f"RateLimiterRegistry({len(self._limiters)} keys)"

    def __len__(self) -> int:
        return len(self._limiters)

    def limiter_for_key(self, api_key: str, requests_per_minute: int = DEFAULT_REQUESTS_PER_MINUTE) -> KeyRateLimiter:
        fingerprint = api_key_fingerprint(api_key)
        with self._lock:
            limiter = self._limiters.get(fingerprint)
            if limiter is None:
                limiter = self._limiters[fingerprint] = KeyRateLimiter(
                    requests_per_minute, clock=self._clock, sleep=self._sleep
                )
            else:
                # The latest configuration wins: the budget is a setting, not a property of the key.
                limiter.requests_per_minute = requests_per_minute
            return limiter


# The process's registry: every client of a key, in every company and thread, shares its limiter.
_registry = RateLimiterRegistry()


def limiter_for_key(api_key: str, requests_per_minute: int = DEFAULT_REQUESTS_PER_MINUTE) -> KeyRateLimiter:
    return _registry.limiter_for_key(api_key, requests_per_minute)


class SyncStopRequested(KeyboardInterrupt):
    """Raised in a worker thread at its next request once its run is being interrupted: the
    sync records itself FAILED as interrupted (an interruption, not an error) and stops."""


class StoppableBudget:
    """A key's limiter, as seen by one sync that may be told to stop (see ``SyncStopRequested``)."""

    def __init__(self, limiter: KeyRateLimiter, should_stop: Callable[[], bool]):
        self._limiter = limiter
        self._should_stop = should_stop

    def __repr__(self) -> str:
        return f"StoppableBudget({self._limiter!r})"

    def acquire(self, max_server_wait: float = math.inf) -> float:
        waited = self._limiter.acquire(max_server_wait, should_stop=self._should_stop)
        if self._should_stop():
            raise SyncStopRequested("the run is being interrupted")
        return waited

    def observe(self, reading: RateLimitReadingLike) -> None:
        self._limiter.observe(reading)
