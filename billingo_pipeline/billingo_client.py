"""A streaming client for the Billingo API v3 (``GET /documents`` and a key check).

Why a hand-written retry loop instead of urllib3's ``Retry``: the sync must count every HTTP
request it sends (they all count against the per-key rate limit and are reported in the sync log),
must also retry bodies that arrive truncated or as invalid JSON (urllib3 never sees those), and
must say in its own words which company and which status failed. The loop is small and tested
against the simulator for every path.

What Billingo says is checked before it is believed. Rate-limit headers that make no sense (a
negative count, a Reset that is neither a wait nor a time near now, an absurd Retry-After) are
ignored with one warning per sync, and every wait is capped by ``max_backoff_seconds``. A page
whose paging envelope contradicts the request or itself makes the sweep incomplete, so nothing is
marked deleted on its word, and a pass never fetches more pages than its first page's total allows
(plus a margin): a server cannot make a sync loop.

The API key lives only in the session's headers: it is never logged, never part of a message,
never in ``repr``. It is cleaned before it gets there (``credentials.clean_api_key``), and what
Billingo says back is redacted before it becomes a log line or an exception.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import random
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
import requests

from .canonical_json import read_json_text
from .credentials import clean_api_key

log = logging.getLogger(__name__)

# Statuses that can succeed when asked again. 4xx other than 429 never will.
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
# Refused/reset connections, timeouts, and a body cut off before its Content-Length.
TRANSIENT_TRANSPORT_ERRORS = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
)
MAX_PER_PAGE = 100
# Billingo's rate-limit window is a minute: a wait it announces beyond an hour is not a wait, it is
# a header filled with nonsense (a mock's random integer, a proxy's bug) and is not believed.
PLAUSIBLE_WAIT_SECONDS = 3600.0
# A pass may legitimately run past what its first page's total implied (documents created while we
# page add pages), so it gets a margin; past that, or past the absolute cap, paging is a loop.
PAGE_MARGIN_MIN = 5
MAX_PAGES_PER_PASS = 100_000
RATE_LIMIT_HEADERS = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset", "Retry-After")

_STATUS_MEANING = {
    400: "bad request",
    401: "API key missing or invalid",
    402: "no active Billingo subscription",
    403: "access forbidden for this API key",
    404: "not found",
    422: "request rejected as invalid",
    429: "rate limit exceeded",
}


class BillingoApiError(Exception):
    """Billingo answered with an error, or did not answer usefully after every retry."""

    def __init__(self, company: str, message: str, *, status: int | None = None, retryable: bool = False):
        self.company = company
        self.status = status
        self.retryable = retryable
        super().__init__(message)


@dataclass
class DocumentPage:
    """One page of ``GET /documents``. ``number`` is the page we asked for; the envelope fields are
    what Billingo reported, or None when that was missing or nonsense. ``problems`` says, in words,
    what in the envelope contradicts the request or itself: such a page cannot prove anything about
    completeness (its documents are still real documents)."""

    number: int
    documents: list[dict[str, Any]]
    total: int | None
    per_page: int | None
    last_page: int | None
    problems: tuple[str, ...] = ()


@dataclass
class RequestStats:
    api_calls: int = 0
    retries: int = 0
    pages_fetched: int = 0
    slept_seconds: float = 0.0
    ignored_headers: int = 0
    """Responses whose rate-limit headers (or Retry-After) were ignored as nonsense."""


class BillingoClient:
    """One company's view of Billingo. Create it per sync; it holds a pooled HTTP session."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        company: str,
        page_size: int = MAX_PER_PAGE,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        max_retries: int = 3,
        backoff_seconds: float = 1.0,
        max_backoff_seconds: float = 60.0,
        max_pages_per_pass: int = MAX_PAGES_PER_PASS,
        logger: logging.Logger | logging.LoggerAdapter | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
        rate_limiter: RequestBudget | None = None,
    ):
        if not 1 <= page_size <= MAX_PER_PAGE:
            raise ValueError(f"page_size must be between 1 and {MAX_PER_PAGE} (Billingo's limit), got {page_size}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        if max_pages_per_pass < 1:
            raise ValueError(f"max_pages_per_pass must be >= 1, got {max_pages_per_pass}")
        self.base_url = base_url.rstrip("/")
        self.company = company
        self.page_size = page_size
        self.timeout = (connect_timeout, read_timeout)
        self.max_retries = max_retries
        self.backoff_seconds = backoff_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.max_pages_per_pass = max_pages_per_pass
        self.log = logger or log
        self.stats = RequestStats()
        self._sleep = sleep
        self._clock = clock  # wall-clock Unix time: X-RateLimit-Reset is a timestamp
        self._warned_about_headers = False
        # Shared by every client of the same key (rate_limit.limiter_for_key): the budget is the key's.
        self._rate_limiter = rate_limiter
        self._session = requests.Session()
        self._session.headers.update(
            {"X-API-KEY": clean_api_key(api_key), "Accept": "application/json", "User-Agent": "billingo-pipeline/0.1"}
        )

    def __repr__(self) -> str:
        return f"BillingoClient(company={self.company!r}, base_url={self.base_url!r})"

    def close(self) -> None:
        self._session.close()

    def redact(self, text: str) -> str:
        """Defence in depth for text that leaves the process, such as Billingo's own error messages."""
        key = self._session.headers.get("X-API-KEY")
        return text.replace(key, "[REDACTED]") if key else text

    def __enter__(self) -> BillingoClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- endpoints ---------------------------------------------------------------------------

    def get_organization(self) -> dict[str, Any]:
        """``GET /organization``: the cheapest call that proves the key works and has a subscription."""
        return self._get_json("/organization")

    def get_server_time(self) -> dt.datetime:
        """Billingo's own clock (``GET /utils/time``), aware UTC: incremental cursors come from it,
        never from this machine's clock (the two differ, and this machine's zone is not Budapest's)."""
        body = self._get_json("/utils/time")
        epoch = body.get("epoch")
        if isinstance(epoch, bool) or not isinstance(epoch, (int, float)) or not 1_000_000_000 <= epoch <= 10_000_000_000:
            raise BillingoApiError(
                self.company, f"Billingo returned an unusable time for company '{self.company}': epoch {str(epoch)[:40]!r}"
            )
        return dt.datetime.fromtimestamp(epoch, dt.timezone.utc)

    def get_document(self, document_id: int) -> dict[str, Any]:
        return self._get_json(f"/documents/{int(document_id)}")

    def get_document_payments(self, document_id: int) -> list[Any] | dict[str, Any]:
        """``GET /documents/{id}/payments``: the document's payment history, a plain JSON array, or
        the object PHP makes of an array with gaps in its keys (``normalize_payment_history`` reads
        both); retried and rate-limited like every request, a 404 raises with ``status`` 404."""
        return self._get_json(f"/documents/{int(document_id)}/payments", expected=(list, dict))

    def get_item(self, path: str, item_id: int) -> dict[str, Any]:
        """One item of a list endpoint, ``GET {path}/{id}`` (``/spendings/7000001``)."""
        return self._get_json(f"{path}/{int(item_id)}")

    def get_document_page(self, page: int, *, path: str = "/documents", **filters: Any) -> DocumentPage:
        """One page of a Billingo list endpoint (``/documents`` unless ``path`` says another: they
        share Laravel's paging envelope)."""
        params = {**{k: v for k, v in filters.items() if v is not None}, "page": page, "per_page": self.page_size}
        body = self._get_json(path, params)
        documents = body.get("data")
        if not isinstance(documents, list):
            raise BillingoApiError(
                self.company,
                f"Billingo returned a malformed document page {page} for company '{self.company}': data is not a list",
            )
        self.stats.pages_fetched += 1
        return _checked_page(page, self.page_size, documents, body, redact=self.redact)

    def iter_document_pages(self, *, path: str = "/documents", **filters: Any) -> Iterator[DocumentPage]:
        """Pages 1..last_page, lazily: memory holds one page at a time.

        Paging stops after a page whose envelope has problems (where the next page starts is then
        unknown), and after as many pages as the first page's total allows (plus a margin for
        documents created meanwhile, and never more than ``max_pages_per_pass``): that last page
        then carries a problem saying so, so that a server reporting ever more pages cannot make
        a pass loop.
        """
        page = 1
        bound = self.max_pages_per_pass
        while True:
            current = self.get_document_page(page, path=path, **filters)
            if page == 1 and current.total is not None:
                bound = min(bound, _page_bound(current.total, self.page_size))
            # last_page is re-read on every page: it moves when documents are created mid-sync.
            more = bool(current.documents) and not current.problems and page < (current.last_page or 0)
            if more and page >= bound:
                current.problems = (
                    f"stopped after page {page}: Billingo now reports {current.last_page} pages, more than "
                    f"the {bound} its first page's total allows",
                )
                more = False
            yield current
            if not more:
                return
            page += 1

    # -- transport ---------------------------------------------------------------------------

    def _get_json(self, path: str, params: Mapping[str, Any] | None = None, *, expected: type | tuple[type, ...] = dict) -> Any:
        url = self.base_url + path
        last_problem = ""
        for attempt in range(self.max_retries + 1):
            if self._rate_limiter is not None:
                self.stats.slept_seconds += self._rate_limiter.acquire(self.max_backoff_seconds)
            self.stats.api_calls += 1
            delay = self._backoff(attempt)
            try:
                response = self._session.get(url, params=params, timeout=self.timeout)
            except TRANSIENT_TRANSPORT_ERRORS as exc:
                last_problem = f"{type(exc).__name__} on GET {path}"
            else:
                if response.status_code == 200:
                    try:
                        body = parse_json_body(response)
                    except ValueError:
                        last_problem = f"invalid JSON body on GET {path}"
                    else:
                        self._respect_rate_limit(response)
                        if isinstance(body, expected):
                            return body
                        last_problem = f"unexpected JSON {type(body).__name__} on GET {path}"
                elif response.status_code in RETRYABLE_STATUSES:
                    last_problem = f"HTTP {response.status_code} on GET {path}: {self.redact(_error_message(response))}"
                    retry_after, problem = read_retry_after(self._rate_limit_headers(response))
                    if problem:
                        self._ignore_headers([problem])
                    if retry_after is not None:
                        delay = min(retry_after, self.max_backoff_seconds)
                else:
                    raise self._fatal(response, path)
            if attempt == self.max_retries:
                break
            self.stats.retries += 1
            self.log.warning(
                "Billingo %s for company '%s'; retry %d/%d in %.1fs",
                last_problem, self.company, attempt + 1, self.max_retries, delay,
            )
            self._pause(delay)
        raise BillingoApiError(
            self.company,
            f"Billingo request for company '{self.company}' failed after {self.max_retries + 1} attempts: {last_problem}",
            retryable=True,
        )

    def _fatal(self, response: requests.Response, path: str) -> BillingoApiError:
        status = response.status_code
        meaning = _STATUS_MEANING.get(status, "unexpected response")
        return BillingoApiError(
            self.company,
            f"Billingo refused GET {path} for company '{self.company}': HTTP {status} ({meaning}): "
            f"{self.redact(_error_message(response))}",
            status=status,
        )

    def _backoff(self, attempt: int) -> float:
        # Exponential with a little jitter so several companies' retries do not line up.
        base = self.backoff_seconds * (2**attempt)
        return min(base * (1 + random.random() * 0.1), self.max_backoff_seconds)

    def _respect_rate_limit(self, response: requests.Response) -> None:
        """When the window is spent, wait for it to reset instead of collecting a 429."""
        reading = read_rate_limit_headers(self._rate_limit_headers(response), now=self._clock())
        if reading.problems:
            self._ignore_headers(reading.problems)
        if self._rate_limiter is not None:
            self._rate_limiter.observe(reading)
        if reading.remaining != 0 or not reading.reset_in:
            return
        wait = min(reading.reset_in, self.max_backoff_seconds)
        capped = ""
        if wait < reading.reset_in:
            capped = f" (capped by max_backoff_seconds; Billingo's window resets in {reading.reset_in:.0f}s)"
        self.log.info("Billingo rate-limit window spent for company '%s'; waiting %.1fs%s", self.company, wait, capped)
        self._pause(wait)

    def _rate_limit_headers(self, response: requests.Response) -> dict[str, str]:
        # Redacted before they are parsed: a problem quotes a value cut short, and a cut-off key
        # would no longer be recognised by redact().
        return {name: self.redact(response.headers[name]) for name in RATE_LIMIT_HEADERS if name in response.headers}

    def _ignore_headers(self, problems: list[str] | tuple[str, ...]) -> None:
        """One warning per client (one sync): a server that sends nonsense sends it on every page."""
        self.stats.ignored_headers += 1
        text = "; ".join(problems)
        if self._warned_about_headers:
            self.log.debug("Billingo rate-limit headers ignored again for company '%s': %s", self.company, text)
            return
        self._warned_about_headers = True
        self.log.warning(
            "Billingo sent rate-limit headers that make no sense for company '%s' (%s); ignoring them "
            "(not repeated for this sync)", self.company, text,
        )

    def _pause(self, seconds: float) -> None:
        if seconds > 0:
            self.stats.slept_seconds += seconds
            self._sleep(seconds)


class RequestBudget(Protocol):
    """What the client needs of a rate limiter (``rate_limit.KeyRateLimiter``)."""

    def acquire(self, max_server_wait: float) -> float:
        """Wait for room for one request (a wait Billingo announced: at most ``max_server_wait``)."""
        ...

    def observe(self, reading: RateLimitReading) -> None: ...


@dataclass(frozen=True)
class RateLimitReading:
    """What Billingo's rate-limit headers say, believed only where they make sense.

    ``remaining`` is None when absent or nonsense; ``reset_in`` is the seconds until the window
    resets (from a delta or a timestamp), None when absent or nonsense; ``problems`` names each
    header that was ignored and why.
    """

    limit: int | None
    remaining: int | None
    reset_in: float | None
    problems: tuple[str, ...]


def read_rate_limit_headers(headers: Mapping[str, str], *, now: float) -> RateLimitReading:
    """Sanity-check ``X-RateLimit-Limit``/``-Remaining``/``-Reset`` (``now``: Unix time).

    The spec calls Reset "the timestamp at which the window resets"; a small number is accepted as
    a delta too. Anything that is neither a delta up to an hour nor a time within an hour of now
    is ignored, as are a negative or non-integer count and a Remaining above the Limit.
    """
    problems: list[str] = []
    limit = _header_int(headers, "X-RateLimit-Limit", minimum=1, problems=problems)
    remaining = _header_int(headers, "X-RateLimit-Remaining", minimum=0, problems=problems)
    if limit is not None and remaining is not None and remaining > limit:
        problems.append(f"X-RateLimit-Remaining {remaining} is above X-RateLimit-Limit {limit}")
        remaining = None
    reset_in = None
    reset = _header_number(headers, "X-RateLimit-Reset", problems)
    if reset is not None:
        if 0 <= reset <= PLAUSIBLE_WAIT_SECONDS:
            reset_in = reset
        elif abs(reset - now) <= PLAUSIBLE_WAIT_SECONDS:
            reset_in = max(reset - now, 0.0)
        else:
            problems.append(
                f"X-RateLimit-Reset {_shown(headers['X-RateLimit-Reset'])} is neither a wait of at most "
                f"{PLAUSIBLE_WAIT_SECONDS:.0f}s nor a time within {PLAUSIBLE_WAIT_SECONDS:.0f}s of now"
            )
    return RateLimitReading(limit, remaining, reset_in, tuple(problems))


def read_retry_after(headers: Mapping[str, str]) -> tuple[float | None, str | None]:
    """``Retry-After`` in seconds (the spec's integer), or None; and the problem if it was absurd."""
    problems: list[str] = []
    seconds = _header_number(headers, "Retry-After", problems)
    if seconds is not None and not 0 <= seconds <= PLAUSIBLE_WAIT_SECONDS:
        problems.append(
            f"Retry-After {_shown(headers['Retry-After'])} is not a wait between 0 and {PLAUSIBLE_WAIT_SECONDS:.0f}s"
        )
        seconds = None
    return seconds, (problems[0] if problems else None)


def _header_int(headers: Mapping[str, str], name: str, *, minimum: int, problems: list[str]) -> int | None:
    raw = headers.get(name)
    if raw is None:
        return None
    try:
        value = int(raw.strip())
    except ValueError:
        problems.append(f"{name} {_shown(raw)} is not an integer")
        return None
    if value < minimum:
        problems.append(f"{name} {value} is below {minimum}")
        return None
    return value


def _header_number(headers: Mapping[str, str], name: str, problems: list[str]) -> float | None:
    raw = headers.get(name)
    if raw is None:
        return None
    try:
        value = float(raw.strip())
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        problems.append(f"{name} {_shown(raw)} is not a number")
        return None
    return value


def _shown(raw: str) -> str:
    """A header value fit for a log line: quoted and short, whatever a server put there."""
    return repr(raw[:40] + ("…" if len(raw) > 40 else ""))


def _page_bound(total: int, page_size: int) -> int:
    implied = max(1, -(-total // page_size))
    return implied + max(PAGE_MARGIN_MIN, implied // 10)


def _checked_page(
    page: int, page_size: int, documents: list[Any], body: Mapping[str, Any], *, redact: Callable[[str], str]
) -> DocumentPage:
    """The page, with every way its envelope contradicts the request, itself or its data named."""
    problems: list[str] = []

    def envelope_int(name: str) -> int | None:
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if value is None:
            problems.append(f"no {name}")
        else:
            text = redact(json.dumps(value, ensure_ascii=False, default=str))
            problems.append(f"{name} is {text[:40]}{'…' if len(text) > 40 else ''}, not an integer")
        return None

    total = envelope_int("total")
    per_page = envelope_int("per_page")
    current_page = envelope_int("current_page")
    last_page = envelope_int("last_page")
    if total is not None and total < 0:
        problems.append(f"total {total} is negative")
        total = None
    if last_page is not None and last_page < 1:
        problems.append(f"last_page {last_page} is below 1")
        last_page = None
    if per_page is not None and per_page != page_size:
        problems.append(f"per_page {per_page}, but we asked for {page_size}")
    if current_page is not None and current_page != page:
        problems.append(f"current_page {current_page}, but we asked for page {page}")
    count = len(documents)
    if count > min(page_size, per_page or page_size):
        problems.append(f"{count} documents on a page of {min(page_size, per_page or page_size)}")
    elif total is not None:
        expected = min(max(total - (page - 1) * page_size, 0), page_size)
        if count != expected:
            problems.append(f"{count} documents on page {page}, where total {total} means {expected}")
    if total is not None and last_page is not None:
        expected_last = max(1, -(-total // page_size))
        if last_page != expected_last:
            problems.append(f"last_page {last_page}, where total {total} at {page_size} a page means {expected_last}")
    return DocumentPage(page, documents, total, per_page, last_page, tuple(problems))


# A JSON number of 19 or more digits before any fraction. orjson reads an integer beyond 64 bits as
# a float (silently inexact), so a body with one is left to the stdlib, which keeps it exact. A
# number value always follows ':', ',' or '[' (and maybe whitespace and a minus); the same text
# inside a string only costs speed. Found by two literal searches in the body with those three
# bytes made ':', every digit '0' and whitespace dropped: a regular expression that starts with a
# class of bytes tries every position in Python's engine, and cost twice orjson's whole parse.
_NUMBER_SHAPES = bytes.maketrans(b",[0123456789", b"::0000000000")
_JSON_WHITESPACE = b" \t\n\r\f\v"
_LONG_NUMBER_SHAPES = (b":" + b"0" * 19, b":-" + b"0" * 19)


def may_hold_a_long_integer(body: bytes) -> bool:
    """Whether ``body`` may hold a JSON number of 19 digits or more (never false when it does)."""
    shapes = body.translate(_NUMBER_SHAPES, _JSON_WHITESPACE)
    return any(shape in shapes for shape in _LONG_NUMBER_SHAPES)


def parse_json_body(response: requests.Response) -> Any:
    """The body as the standard library's json reads it, whatever else is installed.

    ``response.json()`` uses simplejson when some other package brought it in, and simplejson
    (since 3.19) refuses ``NaN``/``Infinity``: a whole page would then look like invalid JSON and
    be retried and failed, where the stdlib parser hands the one bad number to the document
    checks. UTF-8 per RFC 8259, which is what Billingo sends.

    orjson reads it first, several times faster and to the same values; whatever it refuses
    (``NaN``, a lone surrogate, invalid UTF-8, deep nesting) or would read as a float (an integer
    beyond 64 bits) is read by the stdlib, with the stdlib's result or error; its NaN and infinities
    as ``NonFiniteNumber`` floats, which serializers know not to write as ``null``.
    """
    body = response.content
    if not may_hold_a_long_integer(body):
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            pass
    return read_json_text(body.decode("utf-8"))


def _error_message(response: requests.Response) -> str:
    """The message of Billingo's error bodies: {"error": {"message"}} or {"message", "errors"}."""
    try:
        body = parse_json_body(response)
    except ValueError:
        return (response.text or "").strip()[:200] or response.reason or "no body"
    if not isinstance(body, dict):
        return str(body)[:200]
    error = body.get("error")
    if isinstance(error, dict) and error.get("message"):
        text = str(error["message"])
        return f"{text} (trace_id {error['trace_id']})" if error.get("trace_id") else text
    if body.get("message"):
        details = "; ".join(
            f"{e.get('field')}: {e.get('message')}" for e in body.get("errors") or [] if isinstance(e, dict)
        )
        return f"{body['message']}" + (f" [{details}]" if details else "")
    return str(body)[:200]


@dataclass
class SweepResult:
    """What a full sweep saw: used by the sync log and to decide whether vanished-marking is safe.

    ``final_pass_ids`` holds the id of every document the pass that proved completeness saw
    (whether yielded then or by an earlier pass). It is None unless ``complete``: only then is
    "stored but not in it" proof that Billingo no longer has a document.
    """

    duplicates_skipped: int = 0
    passes: int = 0
    last_reported_total: int = 0
    complete: bool = False
    drift_detected: bool = False
    paging_inconsistent: bool = False
    final_pass_ids: frozenset[int] | None = None
    notes: list[str] = field(default_factory=list)
    # The newest page's envelope as reported (None: not reported), for progress while paging.
    reported_last_page: int | None = None
    reported_total: int | None = None


def sweep_documents(
    client: BillingoClient, result: SweepResult, *, path: str = "/documents", max_passes: int = 3, **filters: Any
) -> Iterator[dict[str, Any]]:
    """Every document exactly once, despite Billingo's newest-first offset paging.

    A document created while we page shifts every later page by one (we would see one document
    twice); a draft deleted while we page shifts them the other way (we would miss one). So:
    documents are de-duplicated by id, and when the reported ``total`` moved during a pass, or a
    pass saw fewer distinct documents than the API reports, another pass runs and yields only
    what is new. The sweep is ``complete`` once one pass, on its own, saw a steady total and as
    many distinct documents as that total: the ids of that pass are ``final_pass_ids``.

    A page whose envelope contradicts itself (see ``DocumentPage.problems``) ends the sweep
    incomplete: its documents are yielded, but asking again would not make Billingo's paging
    believable, and nothing may be marked deleted on its word.
    """
    seen: set[int] = set()
    for pass_number in range(1, max_passes + 1):
        result.passes = pass_number
        totals: set[int] = set()
        pass_ids: set[int] = set()
        without_id = 0  # an id-less document cannot be de-duplicated, but it does count towards total
        inconsistent = False
        for page in client.iter_document_pages(path=path, **filters):
            if page.problems:
                inconsistent = True
                result.notes.append(f"pass {pass_number}, page {page.number}: {'; '.join(page.problems)}")
            if page.total is not None:
                totals.add(page.total)
                result.last_reported_total = page.total
            result.reported_last_page, result.reported_total = page.last_page, page.total
            for document in page.documents:
                document_id = document.get("id") if isinstance(document, dict) else None
                if isinstance(document_id, int) and not isinstance(document_id, bool):
                    pass_ids.add(document_id)
                    if document_id in seen:
                        result.duplicates_skipped += 1
                        continue
                    seen.add(document_id)
                else:
                    without_id += 1
                    if pass_number > 1:
                        continue  # already yielded (and reported as bad) by the first pass
                # Documents without a usable id are still yielded: the caller reports them.
                yield document
        if inconsistent:
            result.paging_inconsistent = True
            result.notes.append(f"pass {pass_number}: Billingo's paging is inconsistent; the fetch is incomplete")
            break
        steady = len(totals) == 1
        if not steady:
            result.drift_detected = True
            result.notes.append(f"pass {pass_number}: total moved during paging ({sorted(totals)})")
        elif len(pass_ids) + without_id >= result.last_reported_total:
            result.complete = True
            result.final_pass_ids = frozenset(pass_ids)
            return
        else:
            result.notes.append(
                f"pass {pass_number}: saw {len(pass_ids) + without_id} distinct documents, "
                f"Billingo reports {result.last_reported_total}"
            )
    result.complete = False
    result.final_pass_ids = None
