"""A streaming client for the Billingo API v3 (``GET /documents`` and a key check).

Why a hand-written retry loop instead of urllib3's ``Retry``: the sync must count every HTTP
request it sends (they all count against the per-key rate limit and are reported in the sync log),
must also retry bodies that arrive truncated or as invalid JSON (urllib3 never sees those), and
must say in its own words which company and which status failed. The loop is small and tested
against the simulator for every path.

The API key lives only in the session's headers: it is never logged, never part of a message,
never in ``repr``. It is cleaned before it gets there (``credentials.clean_api_key``), and what
Billingo says back is redacted before it becomes a log line or an exception.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import requests

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
    number: int
    documents: list[dict[str, Any]]
    total: int
    per_page: int
    last_page: int


@dataclass
class RequestStats:
    api_calls: int = 0
    retries: int = 0
    pages_fetched: int = 0
    slept_seconds: float = 0.0


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
        logger: logging.Logger | logging.LoggerAdapter | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if not 1 <= page_size <= MAX_PER_PAGE:
            raise ValueError(f"page_size must be between 1 and {MAX_PER_PAGE} (Billingo's limit), got {page_size}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        self.base_url = base_url.rstrip("/")
        self.company = company
        self.page_size = page_size
        self.timeout = (connect_timeout, read_timeout)
        self.max_retries = max_retries
        self.backoff_seconds = backoff_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.log = logger or log
        self.stats = RequestStats()
        self._sleep = sleep
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

    def get_document(self, document_id: int) -> dict[str, Any]:
        return self._get_json(f"/documents/{int(document_id)}")

    def get_document_page(self, page: int, **filters: Any) -> DocumentPage:
        params = {**{k: v for k, v in filters.items() if v is not None}, "page": page, "per_page": self.page_size}
        body = self._get_json("/documents", params)
        try:
            documents = body["data"]
            if not isinstance(documents, list):
                raise TypeError("data is not a list")
            result = DocumentPage(
                number=int(body.get("current_page") or page),
                documents=documents,
                total=int(body["total"]),
                per_page=int(body.get("per_page") or self.page_size),
                last_page=int(body.get("last_page") or 1),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BillingoApiError(
                self.company, f"Billingo returned a malformed document page {page} for company '{self.company}': {exc}"
            ) from None
        self.stats.pages_fetched += 1
        return result

    def iter_document_pages(self, **filters: Any) -> Iterator[DocumentPage]:
        """Pages 1..last_page, lazily: memory holds one page at a time."""
        page = 1
        while True:
            current = self.get_document_page(page, **filters)
            yield current
            # last_page is re-read on every page: it moves when documents are created mid-sync.
            if not current.documents or page >= current.last_page:
                return
            page += 1

    # -- transport ---------------------------------------------------------------------------

    def _get_json(self, path: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        url = self.base_url + path
        last_problem = ""
        for attempt in range(self.max_retries + 1):
            self.stats.api_calls += 1
            delay = self._backoff(attempt)
            try:
                response = self._session.get(url, params=params, timeout=self.timeout)
            except TRANSIENT_TRANSPORT_ERRORS as exc:
                last_problem = f"{type(exc).__name__} on GET {path}"
            else:
                if response.status_code == 200:
                    try:
                        body = response.json()
                    except ValueError:
                        last_problem = f"invalid JSON body on GET {path}"
                    else:
                        self._respect_rate_limit(response)
                        if isinstance(body, dict):
                            return body
                        last_problem = f"unexpected JSON {type(body).__name__} on GET {path}"
                elif response.status_code in RETRYABLE_STATUSES:
                    last_problem = f"HTTP {response.status_code} on GET {path}: {self.redact(_error_message(response))}"
                    retry_after = _header_seconds(response, "Retry-After")
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
        remaining = _header_seconds(response, "X-RateLimit-Remaining")
        if remaining is None or remaining > 0:
            return
        reset = _header_seconds(response, "X-RateLimit-Reset")
        if reset is None:
            return
        # The spec calls Reset "the timestamp at which the window resets"; accept a delta too.
        wait = reset - time.time() if reset > 1_000_000_000 else reset
        if wait > 0:
            self.log.info("Billingo rate-limit window spent for company '%s'; waiting %.1fs", self.company, wait)
            self._pause(min(wait, self.max_backoff_seconds))

    def _pause(self, seconds: float) -> None:
        if seconds > 0:
            self.stats.slept_seconds += seconds
            self._sleep(seconds)


def _header_seconds(response: requests.Response, name: str) -> float | None:
    value = response.headers.get(name)
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        return None


def _error_message(response: requests.Response) -> str:
    """The message of Billingo's error bodies: {"error": {"message"}} or {"message", "errors"}."""
    try:
        body = response.json()
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
    """What a full sweep saw: used by the sync log and to decide whether vanished-marking is safe."""

    duplicates_skipped: int = 0
    passes: int = 0
    last_reported_total: int = 0
    complete: bool = False
    drift_detected: bool = False
    notes: list[str] = field(default_factory=list)


def sweep_documents(client: BillingoClient, result: SweepResult, *, max_passes: int = 3, **filters: Any) -> Iterator[dict[str, Any]]:
    """Every document exactly once, despite Billingo's newest-first offset paging.

    A document created while we page shifts every later page by one (we would see one document
    twice); a draft deleted while we page shifts them the other way (we would miss one). So:
    documents are de-duplicated by id, and when the reported ``total`` moved during a pass, or a
    pass saw fewer distinct documents than the API reports, another pass runs and yields only
    what is new. The sweep is ``complete`` once a pass saw a steady total and every document.
    """
    seen: set[int] = set()
    for pass_number in range(1, max_passes + 1):
        result.passes = pass_number
        totals: set[int] = set()
        without_id = 0  # an id-less document cannot be de-duplicated, but it does count towards total
        for page in client.iter_document_pages(**filters):
            totals.add(page.total)
            result.last_reported_total = page.total
            for document in page.documents:
                document_id = document.get("id") if isinstance(document, dict) else None
                if isinstance(document_id, int) and not isinstance(document_id, bool):
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
        steady = len(totals) <= 1
        if not steady:
            result.drift_detected = True
            result.notes.append(f"pass {pass_number}: total moved during paging ({sorted(totals)})")
        if steady and len(seen) + without_id >= result.last_reported_total:
            result.complete = True
            return
        if steady:
            result.notes.append(
                f"pass {pass_number}: saw {len(seen)} distinct documents, Billingo reports {result.last_reported_total}"
            )
    result.complete = False
