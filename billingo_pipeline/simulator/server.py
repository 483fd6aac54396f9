"""An HTTP simulator of the Billingo API v3 read endpoints, for tests, the demo and benchmarks.

No machine here reaches the real Billingo, so this server has to answer the way the published spec
(v3.0.14) says: the same paths, field names, enums, paging envelope, error bodies and rate-limit
headers. It is a real socket server (``http.server.ThreadingHTTPServer``) so that clients are tested
with their real HTTP stack, including keep-alive, cut connections and bodies that are not JSON.

Served endpoints (all ``GET``, all need the ``X-API-KEY`` header):

* ``/v3/documents``: newest-created first, offset paging, every filter of the spec;
* ``/v3/documents/{id}`` and ``/v3/documents/{id}/payments`` (its payment history, a plain array);
* ``/v3/partners`` (newest first, ``query``) and ``/v3/partners/{id}``;
* ``/v3/spendings`` (incoming bills, by due date, every filter of the spec) and ``/v3/spendings/{id}``;
* ``/v3/document-blocks`` (``type``), ``/v3/bank-accounts`` and ``/v3/bank-accounts/{id}``;
* ``/v3/organization`` and ``/v3/utils/time``: the cheap endpoints for checking a key.

Every list has the same paging envelope, ``page``/``per_page`` checks, faults and rate limit. What
is not a document (partners, spendings, payment histories, blocks, bank accounts) comes from the
organization's :class:`~billingo_pipeline.simulator.ledger.Ledger`, built on first use, so an
organization that is only asked for documents costs what it did before.

Choices where the spec is silent or cannot be followed literally:

* ``prev_page_url`` and ``next_page_url`` are typed as (non-nullable) strings, so when there is no
  such page the key is left out instead of being sent as ``null`` (which Laravel, and likely the
  live API, would send). Clients must treat a missing key and ``null`` alike.
* ``X-RateLimit-Reset`` is the Unix time (seconds) at which the current window ends, as the spec
  describes it; ``Retry-After`` is a number of seconds. Both follow the real clock even when a
  simulated ``today`` is set, because clients sleep in real time.
* ``paid_date`` of an unpaid document is today's date at the time of the request (the live API's
  quirk); the ``paid_start_date``/``paid_end_date`` filters only match paid or partially paid
  documents, because the stored payment date of an unpaid document is empty.
* ``last_modified_date`` means "modified at or after", in Budapest time; a naive value is read as
  Budapest time. Mutations through this class bump a document's modification time.
* Bad query values answer 422 with the field named; ``page`` below 1 is rejected too (Laravel would
  quietly serve page 1), so that a client bug shows up in tests.
* ``/spendings`` is "ordered by the due date": earliest due first, ties by id (creation), so a bill
  added or re-dated while a client pages shifts every later page. ``start_date``/``end_date``
  apply to the invoice date unless ``spending_date`` names another; ``all`` filters nothing. The
  single ``Spending`` has no ``is_created_by_nav`` (the spec defines it on list items only).
* A payment's ``price`` is in the document's currency, its ``conversion_rate`` is 1 for HUF; the
  payments of a ``paid`` document add up to its ``gross_total``. ``/partners?query=`` searches the
  name, the tax code and the e-mail addresses.

Mutations for tests are methods of :class:`BillingoSimulator`: documents (add, pay, cancel, delete,
corrupt), payments (``record_payment``, ``set_payments``: the document's ``payment_status``,
``paid_date`` and modification time follow, as on the live API), partners (add, update: stamped
on the simulator clock; delete) and spendings (add, update, pay).

Concurrency: one lock guards all state. Stored documents and ledger objects are never modified in
place: a change replaces the stored dict (copy-on-write), so a page can be serialized outside the
lock while another thread mutates the organization.
"""

from __future__ import annotations

import copy
import datetime
import json
import math
import random
import re
import signal
import socket
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal, get_args
from urllib.parse import parse_qsl, urlencode, urlsplit

from billingo_pipeline.simulator.data import (
    BUDAPEST,
    DOCUMENT_TYPES,
    PAYMENT_METHODS,
    PAYMENT_STATUSES,
    UNPAID_STATUSES,
    DocumentFactory,
)
from billingo_pipeline.simulator.ledger import (
    CATEGORIES,
    CURRENCIES,
    DOCUMENT_BLOCK_TYPES,
    SPENDING_DATE_TYPES,
    SPENDING_PAYMENT_STATUSES,
    SPENDING_SOURCES,
    UNPAYABLE_TYPES,
    Ledger,
    document_partner,
    money_step,
    paid_total,
    payment_entry,
)

FaultKind = Literal["rate_limit", "server_error", "unavailable", "slow", "truncated", "malformed_page",
                    "rate_limit_nonsense", "paging_nonsense", "data_not_list"]
FAULT_KINDS: tuple[str, ...] = get_args(FaultKind)

# Each organization gets its own block of ids, so documents of two organizations never collide.
ORGANIZATION_ID_RANGE = 10_000_000

PAID_STATUSES = frozenset({"paid", "partially_paid"})
DEFAULT_PER_PAGE = 25
MAX_PER_PAGE = 100

# Generated history is dated at least this long before the organization was added, so that a
# last_modified_date cut taken after setup never matches untouched documents.
_HISTORY_GUARD = datetime.timedelta(minutes=1)
# The list endpoints: the Laravel paging envelope, newest first (spendings: by due date).
_PAGED_ENDPOINTS = ("/v3/documents", "/v3/partners", "/v3/spendings", "/v3/document-blocks", "/v3/bank-accounts")
_ENDPOINTS = (*_PAGED_ENDPOINTS, "/v3/organization", "/v3/utils/time")
_ITEM_PATH = re.compile(r"^/v3/(documents|partners|spendings|bank-accounts)/([^/]+)$")
_PAYMENTS_PATH = re.compile(r"^/v3/documents/([^/]+)/payments$")
_ITEM_ENDPOINTS = ("/v3/documents/{id}", "/v3/documents/{id}/payments", "/v3/partners/{id}", "/v3/spendings/{id}",
                   "/v3/bank-accounts/{id}")
_ITEM_NAMES = {"documents": "Document", "partners": "Partner", "spendings": "Spending", "bank-accounts": "Bank account"}
_UNAUTHORIZED = "Authorization information (Header: X-API-KEY) is missing or invalid."
_NO_SUBSCRIPTION = "You do not have subscription for this operation"
_SUBSCRIPTION_FEATURES = ["api_limit_standard", "subscription_standard"]
# What a mock serving random schema-valid integers sends: the defaults of the two nonsense faults.
_NONSENSE_RATE_HEADERS = {"X-RateLimit-Remaining": "-7", "X-RateLimit-Reset": "863596234"}
_NONSENSE_ENVELOPE = {"total": -1}


class _Removed:
    """The type of :data:`REMOVE`."""

    def __repr__(self) -> str:
        return "REMOVE"


REMOVE: Any = _Removed()
"""Pass as ``value`` to :meth:`BillingoSimulator.corrupt_document` to delete the field."""


def generate_api_key(seed: int | str) -> str:
    """A deterministic API key shaped like Billingo's (a UUID)."""
    return str(uuid.UUID(int=random.Random(f"api-key:{seed}").getrandbits(128), version=4))


@dataclass
class Fault:
    """A configured misbehaviour; see :meth:`BillingoSimulator.inject_fault`."""

    kind: FaultKind
    times: int = 1
    after_requests: int = 0
    path_prefix: str = "/v3/documents"
    retry_after: int | None = None
    delay_seconds: float = 0.0
    api_key: str | None = field(default=None, repr=False)
    headers: dict[str, str] = field(default_factory=dict)
    """Header values set on the fault's reply, over the rate-limit headers the simulator computes."""
    envelope: dict[str, Any] = field(default_factory=dict)
    """``paging_nonsense``: top-level fields of a list's paging envelope to replace (or REMOVE)."""
    fired: int = 0
    """How often the fault has fired so far (it stops at ``times``)."""
    skipped: int = 0
    """How many matching requests it has let through before arming (up to ``after_requests``)."""

    @property
    def exhausted(self) -> bool:
        return self.fired >= self.times

    def matches(self, path: str, api_key: str | None) -> bool:
        return path.startswith(self.path_prefix) and (self.api_key is None or self.api_key == api_key)


@dataclass(frozen=True)
class IncomingRequest:
    """What an :meth:`BillingoSimulator.on_request` callback learns about a request."""

    method: str
    path: str
    query: dict[str, str]


@dataclass(frozen=True)
class RequestRecord:
    """One served request. The API key itself is never recorded, only whether one was sent."""

    method: str
    path: str
    query: dict[str, str]
    status: int
    organization: str | None
    has_api_key: bool
    fault: str | None


@dataclass
class _StoredDocument:
    document: dict[str, Any]  # replaced, never modified in place
    modified_at: datetime.datetime
    # True while the document is unpaid: it then shows the current date as paid_date.
    paid_date_follows_today: bool


@dataclass
class Organization:
    """One Billingo account (one API key), its documents and (built on first use) its ledger."""

    name: str
    tax_code: str
    has_subscription: bool
    first_id: int
    api_key: str = field(repr=False)
    _factory: DocumentFactory = field(repr=False)
    _documents: list[_StoredDocument] = field(default_factory=list, repr=False)  # creation (= id) order
    _by_id: dict[int, _StoredDocument] = field(default_factory=dict, repr=False)
    _seed: int | str = field(default=0, repr=False)
    _added_at: datetime.datetime | None = field(default=None, repr=False)
    _document_count: int = field(default=0, repr=False)
    _ledger: Ledger | None = field(default=None, repr=False)

    def _add(self, stored: _StoredDocument) -> None:
        self._documents.append(stored)
        self._by_id[stored.document["id"]] = stored


@dataclass
class _Reply:
    status: int
    payload: Any = None
    raw_body: bytes | None = None  # sent instead of the JSON payload (malformed page)
    headers: dict[str, str] = field(default_factory=dict)
    truncate: bool = False  # announce the full length, send half, close the connection

    def body(self) -> bytes:
        if self.raw_body is not None:
            return self.raw_body
        text = json.dumps(self.payload, ensure_ascii=False, separators=(",", ":"))
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate (a test's poison): JSON can still carry it escaped
            return json.dumps(self.payload, separators=(",", ":")).encode("ascii")


@dataclass
class _RateWindow:
    started: float  # the simulator's rate_clock()
    count: int = 0


class _ValidationErrors:
    """The 422 errors of one request, collected so that every bad parameter is reported at once."""

    def __init__(self) -> None:
        self.errors: list[dict[str, str]] = []

    def add(self, field_name: str, message: str) -> None:
        self.errors.append({"field": field_name, "message": message})


class BillingoSimulator:
    """A Billingo API v3 server on 127.0.0.1 with generated data, fault injection and rate limits.

    Typical use::

        with BillingoSimulator(today=datetime.date(2026, 3, 15)) as sim:
            key = generate_api_key(1)
            sim.add_organization(key, name="Acme Kft.", seed=1, document_count=120)
            requests.get(sim.base_url + "/documents", headers={"X-API-KEY": key})

    ``today`` fixes the simulated date (the clock then runs from that date at the current time of
    day); leave it ``None`` for the real date. ``faults`` takes the keyword arguments of
    :meth:`inject_fault` as dicts, so that configurations can come from a CLI or a file.
    ``rate_clock`` measures the rate-limit windows (seconds, monotonic): a test moves one by hand
    to see a window reset without waiting for it.
    """

    def __init__(
        self,
        rate_limit_per_minute: int = 300,
        rate_window_seconds: float = 60.0,
        today: datetime.date | None = None,
        *,
        faults: Iterable[Mapping[str, Any]] = (),
        verbose: bool = False,
        rate_clock: Callable[[], float] = time.monotonic,
    ):
        if rate_limit_per_minute < 1 or rate_window_seconds <= 0:
            raise ValueError("rate_limit_per_minute must be >= 1 and rate_window_seconds > 0")
        self.rate_limit = rate_limit_per_minute
        self.rate_window_seconds = rate_window_seconds
        self._rate_clock = rate_clock
        self.verbose = verbose
        self._clock_offset = datetime.timedelta(0)
        if today is not None:
            real_now = datetime.datetime.now(BUDAPEST)
            simulated = datetime.datetime.combine(today, real_now.time().replace(microsecond=0), BUDAPEST)
            self._clock_offset = simulated - real_now
        self._lock = threading.RLock()
        self._organizations: dict[str, Organization] = {}
        self._faults: list[Fault] = []
        self._callbacks: list[Callable[[IncomingRequest], None]] = []
        self._scheduled: list[tuple[int, Callable[[], None]]] = []  # (total requests to wait for, action)
        self.handler_errors: list[str] = []
        """Tracebacks of requests the simulator failed to answer (its own faults, not injected
        ones): kept here, and printed on stderr only when ``verbose``, so that they never land
        in the output of a CLI run in the same process."""
        self._requests_received = 0
        self._windows: dict[str, _RateWindow] = {}
        self._log: list[RequestRecord] = []
        self._connections: set[socket.socket] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        for fault in faults:
            self.inject_fault(**fault)

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self, port: int = 0) -> str:
        """Listen on 127.0.0.1 (``port`` 0 picks a free one) in a daemon thread; returns the base URL."""
        if self._server is not None:
            raise RuntimeError("the simulator is already running")
        self._server = _Server(("127.0.0.1", port), self)
        # A short poll interval makes stop() return within ~50 ms instead of the default 0.5 s.
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="billingo-simulator", daemon=True)
        self._thread.start()
        return self.base_url

    def stop(self) -> None:
        """Stop serving and cut open keep-alive connections. Safe to call twice."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed by the client
        if self._thread is not None:
            self._thread.join()
        self._server = None
        self._thread = None

    def serve_until_interrupted(self) -> None:
        """Block a command-line process (the simulator CLI, ``make dev``) until Ctrl-C or SIGTERM,
        then stop."""
        restore = {}
        if threading.current_thread() is threading.main_thread():
            # A process started in the background by a non-interactive shell (a CI script, `cmd &`)
            # inherits SIGINT ignored, and Python then never raises KeyboardInterrupt: a server
            # that says Ctrl-C stops it takes both signals itself.
            for signum in (signal.SIGINT, signal.SIGTERM):
                restore[signum] = signal.signal(signum, _raise_keyboard_interrupt)
        # Woken five times a second: the kernel may hand the signal to the serving thread, and a
        # main thread blocked without a timeout would then never run Python's handler.
        never = threading.Event()
        try:
            while not never.wait(0.2):
                pass
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()
            for signum, handler in restore.items():
                signal.signal(signum, handler)

    def __enter__(self) -> BillingoSimulator:
        if self._server is None:
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v3``, the equivalent of ``https://api.billingo.hu/v3``."""
        if self._server is None:
            raise RuntimeError("the simulator is not running: call start() first")
        return f"http://127.0.0.1:{self._server.server_address[1]}/v3"

    def shift_clock(self, delta: datetime.timedelta) -> None:
        """Move the simulator's clock (what ``/utils/time`` answers and modifications are stamped
        with) by ``delta`` against the real one: Billingo's clock is not the client machine's."""
        with self._lock:
            self._clock_offset += delta

    def now(self) -> datetime.datetime:
        """The simulator's clock (aware, Europe/Budapest): the one behind modification times."""
        return (datetime.datetime.now(datetime.timezone.utc) + self._clock_offset).astimezone(BUDAPEST)

    def today(self) -> datetime.date:
        """The simulated date: what unpaid documents show as ``paid_date``, and new documents' date."""
        return self.now().date()

    # -- organizations and documents -------------------------------------------------------------

    def add_organization(
        self,
        api_key: str,
        *,
        name: str,
        seed: int | str,
        document_count: int,
        tax_code: str | None = None,
        has_subscription: bool = True,
    ) -> Organization:
        """Register an API key with ``document_count`` generated documents (see ``generate_documents``)."""
        with self._lock:
            if api_key in self._organizations:
                raise ValueError(f"an organization with this API key already exists ({self._organizations[api_key].name})")
            first_id = (len(self._organizations) + 1) * ORGANIZATION_ID_RANGE + 1
            factory = DocumentFactory(seed, first_id=first_id, organization_name=name, tax_code=tax_code)
            now = self.now()
            organization = Organization(
                name=name, tax_code=factory.tax_code, has_subscription=has_subscription, first_id=first_id,
                api_key=api_key, _factory=factory, _seed=seed, _added_at=now, _document_count=document_count,
            )
            documents = factory.generate(document_count, today=now.date())
            invoice_dates = {d["id"]: d["invoice_date"] for d in documents}
            for document in documents:
                organization._add(_StoredDocument(
                    document=document,
                    modified_at=_initial_modified_at(document, invoice_dates, latest=now - _HISTORY_GUARD),
                    paid_date_follows_today=document["payment_status"] in UNPAID_STATUSES,
                ))
            self._organizations[api_key] = organization
            return organization

    def documents(self, api_key: str) -> list[dict[str, Any]]:
        """Deep copies of the organization's documents as the API would serve them, newest first."""
        with self._lock:
            organization = self._organization(api_key)
            today = self.today().isoformat()
            return copy.deepcopy([_presented(s, today) for s in reversed(organization._documents)])

    def add_document(self, api_key: str, *, partner_id: int | None = None, **overrides: Any) -> dict[str, Any]:
        """Issue a new document (dated today unless ``invoice_date`` is given): the newest, with an
        id above all others. Returns a copy.

        ``overrides`` replace top-level fields of the generated document (``id`` cannot be chosen).
        ``partner_id`` issues it to that partner of :meth:`partners` (else one is picked); a partner
        added or changed through this class is named as it is now.
        """
        if "id" in overrides:
            raise ValueError("the id of a new document is assigned by the simulator")
        with self._lock:
            organization = self._organization(api_key)
            today = self.today()
            # A chosen invoice date (date or ISO text) lets tests build portfolios with known ages.
            invoice_date = overrides.pop("invoice_date", today)
            if isinstance(invoice_date, str):
                invoice_date = datetime.date.fromisoformat(invoice_date)
            if partner_id is not None and self._ledger_of(organization).partner(partner_id) is None:
                raise KeyError(f"organization {organization.name!r} has no partner {partner_id}")
            document = organization._factory.create(invoice_date=invoice_date, today=today, **overrides)
            if partner_id is not None or (organization._ledger is not None and not {"partner", "document_partner"} & set(overrides)):
                self._name_current_partner(organization, document, partner_id)
            follows_today = document["payment_status"] in UNPAID_STATUSES
            if follows_today:
                document["paid_date"] = today.isoformat()
            organization._add(_StoredDocument(document, self.now(), follows_today))
            return copy.deepcopy(document)

    def pay_document(
        self,
        api_key: str,
        document_id: int,
        *,
        paid_date: datetime.date | None = None,
        partial: bool = False,
    ) -> dict[str, Any]:
        """Register a (partial) payment: status ``paid``/``partially_paid``, ``paid_date`` (default today).

        The payment history follows: a payment of what was still open (``paid``) or of half of it
        (``partial``; half the total when the document was fully paid) is added on ``paid_date``.
        For payments of a chosen amount use :meth:`record_payment`.
        """
        with self._lock:
            organization = self._organization(api_key)
            stored = self._stored(api_key, document_id)
            document = copy.deepcopy(stored.document)
            day = paid_date or self.today()
            ledger = self._ledger_of(organization)
            history = list(ledger.payments(stored.document))
            gross, step = _decimal_or_none(document.get("gross_total")), money_step(document)
            if gross is not None:
                open_amount = gross - paid_total(history)
                method = document.get("payment_method") if document.get("payment_method") in PAYMENT_METHODS else "other"
                if partial and open_amount <= 0:
                    history = [payment_entry(day, (gross / 2).quantize(step), method,
                                             conversion_rate=document.get("conversion_rate"))]
                elif partial and (open_amount / 2).quantize(step) > 0:
                    history.append(payment_entry(day, (open_amount / 2).quantize(step), method,
                                                 conversion_rate=document.get("conversion_rate")))
                elif not partial and open_amount > 0:
                    history.append(payment_entry(day, open_amount, method, conversion_rate=document.get("conversion_rate")))
            ledger.set_payments(document_id, history)
            document["payment_status"] = "partially_paid" if partial else "paid"
            document["paid_date"] = day.isoformat()
            self._replace(stored, document, paid_date_follows_today=False)
            return copy.deepcopy(document)

    def payments(self, api_key: str, document_id: int) -> list[dict[str, Any]]:
        """A copy of the document's payment history, as ``GET /documents/{id}/payments`` serves it."""
        with self._lock:
            stored = self._stored(api_key, document_id)
            return copy.deepcopy(self._ledger_of(self._organization(api_key)).payments(stored.document))

    def record_payment(
        self,
        api_key: str,
        document_id: int,
        *,
        price: Decimal | int | float | str | None = None,
        date: datetime.date | None = None,
        payment_method: str | None = None,
        voucher_number: str | None = None,
        conversion_rate: Decimal | int | float | str | None = None,
    ) -> dict[str, Any]:
        """Add a payment to the document's history (default: what is still open, today, by the
        document's method and at its conversion rate) and update the document as the live API does
        (see :meth:`set_payments`). Returns a copy of the document."""
        with self._lock:
            stored = self._stored(api_key, document_id)
            document = stored.document
            history = list(self._ledger_of(self._organization(api_key)).payments(document))
            if price is None:
                gross = _decimal_or_none(document.get("gross_total"))
                if gross is None:
                    raise ValueError(f"document {document_id} has no usable gross_total: give the price")
                price = gross - paid_total(history)
                if price <= 0:
                    raise ValueError(f"document {document_id} is already paid in full")
            if Decimal(str(price)) <= 0:
                raise ValueError("a payment's price must be positive")
            method = payment_method or document.get("payment_method")
            history.append(payment_entry(
                date or self.today(), price, method if method in PAYMENT_METHODS else "other",
                voucher_number=voucher_number,
                conversion_rate=document.get("conversion_rate") if conversion_rate is None else conversion_rate,
            ))
            return self.set_payments(api_key, document_id, history)

    def set_payments(self, api_key: str, document_id: int, payments: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
        """Replace the document's payment history (what ``PUT /documents/{id}/payments`` does) with
        ``PaymentHistory`` objects, and update the document as the live API does: ``paid`` once the
        payments reach ``gross_total``, ``partially_paid`` below it, ``expired``/``outstanding`` (by
        the due date) with none; ``paid_date`` is the latest payment's date; the modification is
        stamped on the simulator clock. Returns a copy of the document."""
        with self._lock:
            organization = self._organization(api_key)
            stored = self._stored(api_key, document_id)
            if stored.document.get("type") in UNPAYABLE_TYPES:
                raise ValueError(f"document {document_id} ({stored.document.get('type')}) takes no payments")
            history = [dict(entry) for entry in payments]
            gross = _decimal_or_none(stored.document.get("gross_total"))
            if gross is None:
                raise ValueError(f"document {document_id} has no usable gross_total")
            document = copy.deepcopy(stored.document)
            total = paid_total(history)
            if history:
                document["payment_status"] = "paid" if total >= gross else "partially_paid"
                document["paid_date"] = max(str(entry["date"]) for entry in history)
            else:
                document["payment_status"] = "expired" if str(document.get("due_date")) < self.today().isoformat() else "outstanding"
                document["paid_date"] = self.today().isoformat()
            self._ledger_of(organization).set_payments(document_id, history)
            self._replace(stored, document, paid_date_follows_today=not history)
            return copy.deepcopy(document)

    def cancel_document(self, api_key: str, document_id: int) -> dict[str, Any]:
        """Cancel an invoice: it gets ``cancelled: true`` and a new ``cancellation`` document
        (returned) references it; both appear in each other's ``related_documents``."""
        with self._lock:
            organization = self._organization(api_key)
            stored = self._stored(api_key, document_id)
            today = self.today()
            updated, cancellation = organization._factory.cancel(stored.document, on=today, today=today)
            self._replace(stored, updated, paid_date_follows_today=stored.paid_date_follows_today)
            organization._add(_StoredDocument(cancellation, self.now(), paid_date_follows_today=True))
            return copy.deepcopy(cancellation)

    def delete_document(self, api_key: str, document_id: int) -> None:
        """Remove a document as if it had vanished (to test how a sync notices).

        The live API only deletes drafts (``DELETE /documents/{id}``); issued invoices are never
        deleted, they are cancelled. This admin removal ignores that rule on purpose.
        """
        with self._lock:
            organization = self._organization(api_key)
            stored = self._stored(api_key, document_id)
            organization._documents.remove(stored)
            del organization._by_id[document_id]
            if organization._ledger is not None:
                organization._ledger.forget_payments(document_id)

    def corrupt_document(self, api_key: str, document_id: int, field_path: str, value: Any) -> None:
        """Make a document violate the spec, e.g. ``("gross_total", "12.700,00 Ft")`` or
        ``("items.0.quantity", "abc")``. Dotted path; numbers index lists; ``value=REMOVE``
        deletes the field. Used to test that one bad document does not abort a sync."""
        with self._lock:
            stored = self._stored(api_key, document_id)
            document = copy.deepcopy(stored.document)
            *parents, last = field_path.split(".")
            container: Any = document
            try:
                for part in parents:
                    container = container[int(part)] if isinstance(container, list) else container[part]
                key: int | str = int(last) if isinstance(container, list) else last
                if value is REMOVE:
                    del container[key]
                else:
                    container[key] = value
            except (KeyError, IndexError, ValueError, TypeError) as exc:
                raise ValueError(f"document {document_id} has no field {field_path!r}") from exc
            # A deliberately set paid_date must be served as set, not replaced by today's date.
            follows_today = stored.paid_date_follows_today and parents + [last] != ["paid_date"]
            self._replace(stored, document, paid_date_follows_today=follows_today)

    # -- partners and spendings ------------------------------------------------------------------

    def partners(self, api_key: str) -> list[dict[str, Any]]:
        """Deep copies of the organization's partners as ``GET /partners`` serves them, newest first."""
        with self._lock:
            return copy.deepcopy(self._ledger_of(self._organization(api_key)).partners_newest_first())

    def add_partner(self, api_key: str, **fields: Any) -> dict[str, Any]:
        """Create a partner (the newest, with an id above all others) from ``Partner`` fields; what is
        not given is generated. Its creation is stamped on the simulator clock. Returns a copy."""
        with self._lock:
            ledger = self._ledger_of(self._organization(api_key))
            return copy.deepcopy(ledger.add_partner(fields, now=self.now()))

    def update_partner(self, api_key: str, partner_id: int, **changes: Any) -> dict[str, Any]:
        """Change top-level ``Partner`` fields (``id`` cannot change), stamped on the simulator clock.

        Spendings show the partner as it is now; documents keep the partner they were issued to,
        and documents added afterwards name the changed partner. Returns a copy."""
        with self._lock:
            ledger = self._ledger_of(self._organization(api_key))
            return copy.deepcopy(ledger.update_partner(partner_id, changes, now=self.now()))

    def delete_partner(self, api_key: str, partner_id: int) -> None:
        """Remove a partner from ``GET /partners`` (documents keep the partner they were issued to)."""
        with self._lock:
            self._ledger_of(self._organization(api_key)).delete_partner(partner_id)

    def partner_modified_at(self, api_key: str, partner_id: int) -> datetime.datetime:
        """When the partner was created or last changed (the API shows no such field)."""
        with self._lock:
            return self._ledger_of(self._organization(api_key)).partner_modified_at(partner_id)

    def spendings(self, api_key: str) -> list[dict[str, Any]]:
        """Deep copies of the organization's spendings as ``GET /spendings`` lists them (by due date)."""
        with self._lock:
            return copy.deepcopy(self._ledger_of(self._organization(api_key)).spendings_by_due_date())

    def add_spending(self, api_key: str, *, partner_id: int | None = None, **overrides: Any) -> dict[str, Any]:
        """Record a new incoming bill from ``partner_id`` (default: one of the suppliers), dated today
        unless ``invoice_date`` is given; ``overrides`` replace top-level fields. Returns a copy."""
        with self._lock:
            ledger = self._ledger_of(self._organization(api_key))
            today = self.today()
            invoice_date = overrides.pop("invoice_date", today)
            if isinstance(invoice_date, str):
                invoice_date = datetime.date.fromisoformat(invoice_date)
            return copy.deepcopy(ledger.add_spending(partner_id=partner_id, invoice_date=invoice_date, today=today,
                                                     overrides=overrides))

    def update_spending(self, api_key: str, spending_id: int, **changes: Any) -> dict[str, Any]:
        """Change top-level fields of an incoming bill (``due_date`` re-dates it: it moves in the
        list). Returns a copy."""
        with self._lock:
            ledger = self._ledger_of(self._organization(api_key))
            return copy.deepcopy(ledger.update_spending(spending_id, changes))

    def pay_spending(self, api_key: str, spending_id: int, *, paid_at: datetime.date | None = None) -> dict[str, Any]:
        """Mark an incoming bill paid on ``paid_at`` (default today). Returns a copy."""
        with self._lock:
            ledger = self._ledger_of(self._organization(api_key))
            return copy.deepcopy(ledger.pay_spending(spending_id, paid_at or self.today()))

    # -- faults and hooks ------------------------------------------------------------------------

    def inject_fault(
        self,
        kind: FaultKind,
        *,
        times: int = 1,
        after_requests: int = 0,
        path_prefix: str = "/v3/documents",
        retry_after: int | None = None,
        delay_seconds: float = 0.0,
        api_key: str | None = None,
        headers: Mapping[str, str] | None = None,
        envelope: Mapping[str, Any] | None = None,
    ) -> Fault:
        """Misbehave on the next ``times`` matching requests, after letting ``after_requests`` pass.

        ``after_requests`` counts matching requests from the injection on (unlike :meth:`schedule`,
        whose count is absolute), so ``after_requests=2`` fails the third page a client fetches.

        A request matches when its path starts with ``path_prefix`` and (if given) it carries
        ``api_key``; faults only hit authenticated requests. The default prefix also matches
        ``/v3/documents/{id}`` and ``/v3/documents/{id}/payments``. Kinds:

        * ``rate_limit``: 429 ``{"error":{"message":"Too many requests"}}``, with ``Retry-After``
          only when ``retry_after`` is given (the live API sometimes omits it);
        * ``server_error`` / ``unavailable``: 500 / 503 with ``{"error":{"message","trace_id"}}``;
        * ``slow``: wait ``delay_seconds``, then answer normally;
        * ``truncated``: announce the full ``Content-Length``, send half the body, close;
        * ``malformed_page``: HTTP 200 whose body is not valid JSON;
        * ``data_not_list``: HTTP 200, valid JSON, the usual envelope, but ``data`` is an object
          keyed ``"1"``, ``"2"``, ... (what PHP's ``json_encode`` makes of an array whose keys are
          no longer 0..n-1, e.g. after ``array_filter``); a payment history (a plain array) becomes
          such an object itself;
        * ``rate_limit_nonsense``: answer normally, with the rate-limit ``headers`` given (default: a
          negative ``X-RateLimit-Remaining`` and a ``X-RateLimit-Reset`` that is neither a delta nor
          a time near now), as a mock serving random schema-valid values would;
        * ``paging_nonsense``: answer a list (``GET /documents``, ``/partners``, ...) normally, with
          the envelope fields given in ``envelope`` replaced (``REMOVE`` deletes one; default: a
          negative ``total``).

        ``retry_after`` adds a ``Retry-After`` header to any error fault; ``headers`` sets any
        header on any fault's reply (e.g. an absurd ``Retry-After`` on a ``rate_limit``). Several faults fire in
        injection order: a request goes to the first pending fault that matches, and counts
        towards the ``after_requests`` of the faults it passes on the way.
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {', '.join(FAULT_KINDS)}")
        if times < 1 or after_requests < 0 or delay_seconds < 0:
            raise ValueError("times must be >= 1, after_requests and delay_seconds >= 0")
        if kind == "rate_limit_nonsense" and not headers:
            headers = _NONSENSE_RATE_HEADERS
        if kind == "paging_nonsense" and not envelope:
            envelope = _NONSENSE_ENVELOPE
        fault = Fault(kind, times, after_requests, path_prefix, retry_after, delay_seconds, api_key,
                      headers=dict(headers or {}), envelope=dict(envelope or {}))
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear_faults(self) -> int:
        """Drop the faults still pending (Billingo behaves again); returns how many there were."""
        with self._lock:
            pending, self._faults = len(self._faults), []
        return pending

    def on_request(self, callback: Callable[[IncomingRequest], None]) -> None:
        """Call ``callback`` at the start of every request, before it is answered (for mutations
        that must land in the middle of a paged sync)."""
        with self._lock:
            self._callbacks.append(callback)

    def schedule(self, after_requests: int, action: Callable[[], None]) -> None:
        """Run ``action`` once the server has received ``after_requests`` requests in total since it
        was created (the count of :attr:`requests_log`), before it answers the next one.

        ``schedule(len(sim.requests_log) + 1, add)`` lets the next request (page 1 of a sync)
        through and creates a document before page 2: page drift. A count that has already passed
        runs the action before the next request. Unlike ``inject_fault(after_requests=...)``, which
        counts matching requests since the injection, this count is absolute.
        """
        if after_requests < 0:
            raise ValueError("after_requests must be >= 0")
        with self._lock:
            self._scheduled.append((after_requests, action))

    @property
    def requests_log(self) -> list[RequestRecord]:
        """A snapshot of every request served so far, oldest first."""
        with self._lock:
            return list(self._log)

    # -- request handling ------------------------------------------------------------------------

    def _answer(self, method: str, target: str, api_key: str | None) -> _Reply:
        """The reply to one request (run on the handler's thread); it is logged before it is sent."""
        split = urlsplit(target)
        path = split.path.rstrip("/") or "/"
        query_pairs = parse_qsl(split.query, keep_blank_values=True)
        query = dict(reversed(query_pairs))  # the first value of a repeated parameter wins
        self._run_hooks(IncomingRequest(method, path, dict(query)))

        with self._lock:
            rate_headers, retry_after = self._count_request(api_key or "")
            organization = self._organizations.get(api_key) if api_key else None
        fault = None
        if retry_after is not None:
            reply = _error(429, "Too many requests")
            reply.headers["Retry-After"] = str(retry_after)
        elif not _is_endpoint(path):
            reply = _error(404, f"Unknown endpoint {path}; the simulator serves {', '.join(_ENDPOINTS)}, "
                                f"{', '.join(_ITEM_ENDPOINTS)}")
        elif method != "GET":
            reply = _error(405, f"Method {method} is not allowed on {path}; the simulator is read-only")
            reply.headers["Allow"] = "GET"
        elif organization is None:
            reply = _error(401, _UNAUTHORIZED)
        elif not organization.has_subscription:
            reply = _error(402, _NO_SUBSCRIPTION)
        else:
            fault = self._take_fault(path, api_key)
            reply = self._fault_reply(fault) if fault else None
            if reply is None:
                reply = self._route(organization, path, query_pairs)
            if fault and fault.kind == "malformed_page":
                body = reply.body()
                reply.raw_body = body[: len(body) // 2]  # a JSON document cut in half never parses
            if fault and fault.kind == "data_not_list" and reply.status == 200:
                reply.payload = _data_not_list(path, reply.payload)
            reply.truncate = bool(fault and fault.kind == "truncated")
            if fault and fault.envelope and path in _PAGED_ENDPOINTS and isinstance(reply.payload, dict):
                reply.payload = _with_fields(reply.payload, fault.envelope)
            if fault:
                reply.headers.update(fault.headers)
        reply.headers = {**rate_headers, **reply.headers}
        with self._lock:
            self._log.append(RequestRecord(
                method, path, query, reply.status, organization.name if organization else None,
                api_key is not None, fault.kind if fault else None,
            ))
        return reply

    def _run_hooks(self, request: IncomingRequest) -> None:
        with self._lock:
            answered = self._requests_received
            self._requests_received += 1
            callbacks = list(self._callbacks)
            due = [action for after, action in self._scheduled if after <= answered]
            self._scheduled = [(after, action) for after, action in self._scheduled if after > answered]
        # Outside the lock: hooks may call the simulator (they take the lock themselves).
        for callback in callbacks:
            callback(request)
        for action in due:
            action()

    def _count_request(self, bucket: str) -> tuple[dict[str, str], int | None]:
        """Fixed-window rate limit per API key: (headers, Retry-After seconds when exhausted)."""
        now = self._rate_clock()
        window = self._windows.get(bucket)
        if window is None or now - window.started >= self.rate_window_seconds:
            window = self._windows[bucket] = _RateWindow(started=now)
        exhausted = window.count >= self.rate_limit
        if not exhausted:
            window.count += 1
        seconds_left = window.started + self.rate_window_seconds - now
        headers = {
            "X-RateLimit-Limit": str(self.rate_limit),
            "X-RateLimit-Remaining": str(self.rate_limit - window.count),
            "X-RateLimit-Reset": str(math.ceil(time.time() + seconds_left)),
        }
        return headers, max(1, math.ceil(seconds_left)) if exhausted else None

    def _take_fault(self, path: str, api_key: str | None) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.exhausted or not fault.matches(path, api_key):
                    continue
                if fault.skipped < fault.after_requests:
                    fault.skipped += 1
                    continue
                fault.fired += 1
                return fault
        return None

    @staticmethod
    def _fault_reply(fault: Fault) -> _Reply | None:
        """The error a fault answers with, or None when the request is then served normally."""
        if fault.kind == "rate_limit":
            reply = _error(429, "Too many requests")
            reply.headers["X-RateLimit-Remaining"] = "0"
        elif fault.kind in ("server_error", "unavailable"):
            status, message = (500, "Internal Server Error.") if fault.kind == "server_error" else (503, "Service Unavailable.")
            reply = _Reply(status, {"error": {"message": message, "trace_id": uuid.uuid4().hex}})
        else:
            if fault.kind == "slow":
                time.sleep(fault.delay_seconds)
            return None
        if fault.retry_after is not None:
            reply.headers["Retry-After"] = str(fault.retry_after)
        return reply

    def _route(self, organization: Organization, path: str, query_pairs: list[tuple[str, str]]) -> _Reply:
        if path in _PAGED_ENDPOINTS:
            return self._list(organization, path, query_pairs)
        if path == "/v3/organization":
            expiration = self.today() + datetime.timedelta(days=180)
            return _Reply(200, {
                "tax_code": organization.tax_code,
                "subscription": {"expiration_date": expiration.isoformat(), "features": list(_SUBSCRIPTION_FEATURES)},
            })
        if path == "/v3/utils/time":
            now = self.now().replace(microsecond=0)
            return _Reply(200, {"epoch": int(now.timestamp()), "formatted": now.strftime("%Y-%m-%d %H:%M:%S"),
                                "w3c": now.isoformat(), "timezone": "Europe/Budapest"})
        payments = _PAYMENTS_PATH.match(path)
        if payments is not None:
            raw_id = payments.group(1)
            with self._lock:
                stored = organization._by_id.get(int(raw_id)) if raw_id.isdigit() else None
                if stored is not None:
                    return _Reply(200, self._ledger_of(organization).payments(stored.document))
            return _error(404, f"Document {raw_id} not found.")
        match = _ITEM_PATH.match(path)
        assert match is not None, path  # _is_endpoint admitted only these paths
        kind, raw_id = match.groups()
        item_id = int(raw_id) if raw_id.isdigit() else None
        with self._lock:
            item = self._item(organization, kind, item_id) if item_id is not None else None
            if item is not None:
                return _Reply(200, item)
        return _error(404, f"{_ITEM_NAMES[kind]} {raw_id} not found.")

    def _item(self, organization: Organization, kind: str, item_id: int) -> dict[str, Any] | None:
        """One object as ``GET /v3/{kind}/{id}`` serves it, or None (callers hold the lock)."""
        if kind == "documents":
            stored = organization._by_id.get(item_id)
            return _presented(stored, self.today().isoformat()) if stored is not None else None
        ledger = self._ledger_of(organization)
        if kind == "partners":
            return ledger.partner(item_id)
        if kind == "spendings":
            spending = ledger.spending(item_id)
            # The single Spending of the spec has no is_created_by_nav (only the list items do).
            return {k: v for k, v in spending.items() if k != "is_created_by_nav"} if spending is not None else None
        return ledger.bank_account(item_id)

    def _list(self, organization: Organization, path: str, query_pairs: list[tuple[str, str]]) -> _Reply:
        """One page of a list endpoint in the spec's (Laravel) envelope; bad query values are a 422."""
        query = dict(reversed(query_pairs))
        errors = _ValidationErrors()
        page = _integer(query, "page", errors, default=1, minimum=1)
        per_page = _integer(query, "per_page", errors, default=DEFAULT_PER_PAGE, minimum=1, maximum=MAX_PER_PAGE)
        matches = _LIST_FILTERS[path](query, errors)
        if errors.errors:
            return _Reply(422, {"message": "The given data was invalid.", "errors": errors.errors})
        offset = (page - 1) * per_page
        with self._lock:
            today = self.today().isoformat()
            if path == "/v3/documents" and matches is None:
                # No filter: the page is a slice counted from the newest, so a page costs the same
                # at 100,000 documents as at 100 (a real API reads it from an index too).
                documents = organization._documents
                total, end = len(documents), max(0, len(documents) - offset)
                page_items = documents[max(0, end - per_page):end][::-1]
            else:
                if path == "/v3/documents":
                    items: Iterable[Any] = reversed(organization._documents)
                else:
                    ledger = self._ledger_of(organization)
                    items = {
                        "/v3/partners": ledger.partners_newest_first,
                        "/v3/spendings": ledger.spendings_by_due_date,
                        "/v3/document-blocks": ledger.document_blocks_newest_first,
                        "/v3/bank-accounts": ledger.bank_accounts_newest_first,
                    }[path]()
                selected = [item for item in items if matches is None or matches(item)]
                total, page_items = len(selected), selected[offset:offset + per_page]
            data = [_presented(s, today) for s in page_items] if path == "/v3/documents" else page_items
        last_page = max(1, math.ceil(total / per_page))
        envelope: dict[str, Any] = {
            "data": data, "total": total, "per_page": per_page, "current_page": page, "last_page": last_page,
        }
        # Non-nullable strings in the spec: absent rather than null when there is no such page.
        if page > 1:
            envelope["prev_page_url"] = self._page_url(path, query_pairs, page - 1)
        if page < last_page:
            envelope["next_page_url"] = self._page_url(path, query_pairs, page + 1)
        return _Reply(200, envelope)

    def _page_url(self, path: str, query_pairs: list[tuple[str, str]], page: int) -> str:
        kept = [(k, v) for k, v in query_pairs if k != "page"]
        return f"{self.base_url}{path.removeprefix('/v3')}?{urlencode([*kept, ('page', str(page))])}"

    # -- internals -------------------------------------------------------------------------------

    def _organization(self, api_key: str) -> Organization:
        try:
            return self._organizations[api_key]
        except KeyError:
            raise KeyError("no organization is registered with this API key") from None

    def _stored(self, api_key: str, document_id: int) -> _StoredDocument:
        organization = self._organization(api_key)
        try:
            return organization._by_id[document_id]
        except KeyError:
            raise KeyError(f"organization {organization.name!r} has no document {document_id}") from None

    def _ledger_of(self, organization: Organization) -> Ledger:
        """The organization's ledger, built on first use (callers hold the lock)."""
        if organization._ledger is None:
            added_at = organization._added_at or self.now()
            organization._ledger = Ledger(
                organization._seed, first_id=organization.first_id, factory=organization._factory,
                created_on=added_at.date(), history_end=added_at - _HISTORY_GUARD,
                document_count=organization._document_count,
            )
        return organization._ledger

    def _name_current_partner(self, organization: Organization, document: dict[str, Any], partner_id: int | None) -> None:
        """Issue a new document to the partner as the ledger has it now (chosen, added or changed)."""
        ledger = self._ledger_of(organization)
        chosen = partner_id if partner_id is not None else document["document_partner"]["id"]
        if partner_id is None and chosen not in ledger.changed_partner_ids:
            return
        partner = ledger.partner(chosen)
        if partner is None:
            raise KeyError(f"organization {organization.name!r} has no partner {chosen}")
        document["partner"] = copy.deepcopy(partner)
        document["document_partner"] = document_partner(partner)

    def _replace(self, stored: _StoredDocument, document: dict[str, Any], *, paid_date_follows_today: bool) -> None:
        stored.document = document
        stored.modified_at = self.now()
        stored.paid_date_follows_today = paid_date_follows_today

    def _track_connection(self, connection: socket.socket, open_: bool) -> None:
        with self._lock:
            if open_:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], simulator: BillingoSimulator):
        self.simulator = simulator
        super().__init__(address, _Handler)

    def handle_error(self, request, client_address) -> None:
        # A client that hangs up mid-answer (a timeout, an interrupted sync) is normal traffic,
        # not a server fault worth a traceback on stderr.
        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError)):
            return
        self.simulator.handler_errors.append(traceback.format_exc())
        if self.simulator.verbose:
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive, like the real API behind its load balancer
    server_version = "BillingoSimulator/1.0"
    disable_nagle_algorithm = True  # headers and body go out as separate writes
    timeout = 60  # idle keep-alive connections are closed after this many seconds

    def setup(self) -> None:
        super().setup()
        self.server.simulator._track_connection(self.connection, True)

    def finish(self) -> None:
        self.server.simulator._track_connection(self.connection, False)
        super().finish()

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_PATCH(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def _serve(self) -> None:
        # Drain a request body so that the keep-alive connection stays in step.
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        reply = self.server.simulator._answer(self.command, self.path, self.headers.get("X-API-KEY"))
        body = reply.body()
        self.send_response(reply.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        if reply.truncate:
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True  # the server closes the socket short of Content-Length
        else:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        if self.server.simulator.verbose:
            super().log_message(format, *args)


# -- helpers ---------------------------------------------------------------------------------------


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _error(status: int, message: str) -> _Reply:
    """The spec's ClientErrorResponse: ``{"error": {"message": ...}}``."""
    return _Reply(status, {"error": {"message": message}})


def _with_fields(payload: dict[str, Any], replacements: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``payload`` with top-level fields replaced, or deleted where the value is REMOVE."""
    changed = {**payload, **replacements}
    return {key: value for key, value in changed.items() if value is not REMOVE}


def _is_endpoint(path: str) -> bool:
    return path in _ENDPOINTS or _ITEM_PATH.match(path) is not None or _PAYMENTS_PATH.match(path) is not None


def _data_not_list(path: str, payload: Any) -> Any:
    """What PHP's ``json_encode`` makes of an array whose keys are no longer 0..n-1: an object
    keyed "1", "2", ...: the ``data`` of a list page, or a plain-array answer (payments) itself."""
    if path in _PAGED_ENDPOINTS and isinstance(payload, dict):
        items = payload.get("data") or []
        return {**payload, "data": {str(i): item for i, item in enumerate(items, start=1)}}
    if isinstance(payload, list):
        return {str(i): item for i, item in enumerate(payload, start=1)}
    return payload


def _decimal_or_none(value: Any) -> Decimal | None:
    """A JSON number as an exact Decimal; None for anything else (a field a test corrupted)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return Decimal(str(value))


def _presented(stored: _StoredDocument, today: str) -> dict[str, Any]:
    """The document as served: unpaid ones show the current date as paid_date (live quirk)."""
    if stored.paid_date_follows_today:
        return {**stored.document, "paid_date": today}
    return stored.document


def _initial_modified_at(
    document: dict[str, Any], invoice_dates: Mapping[int, str], *, latest: datetime.datetime
) -> datetime.datetime:
    """When a generated document was last touched: issued, paid, or cancelled (by a later document)."""
    days = [document["invoice_date"]]
    if document["payment_status"] in PAID_STATUSES:
        days.append(document["paid_date"])
    days.extend(invoice_dates[r["id"]] for r in document["related_documents"] if r["id"] in invoice_dates)
    # Office hours, spread by id so that documents of one day do not share a timestamp.
    moment = datetime.datetime.combine(
        datetime.date.fromisoformat(max(days)),
        datetime.time(8 + document["id"] % 10, document["id"] * 7 % 60, document["id"] * 13 % 60),
        BUDAPEST,
    )
    return min(moment, latest)


def _integer(
    query: Mapping[str, str],
    name: str,
    errors: _ValidationErrors,
    *,
    default: int | None = None,
    minimum: int | None = None,
    maximum: int | None = None,
) -> int | None:
    raw = query.get(name, "")
    if raw == "":  # Laravel turns empty strings into null: the parameter counts as absent
        return default
    label = name.replace("_", " ")
    if not re.fullmatch(r"-?\d+", raw):
        errors.add(name, f"The {label} must be an integer.")
        return default
    value = int(raw)
    if minimum is not None and maximum is not None and not minimum <= value <= maximum:
        errors.add(name, f"The {label} must be between {minimum} and {maximum}.")
    elif minimum is not None and value < minimum:
        errors.add(name, f"The {label} must be at least {minimum}.")
    return value


def _date(query: Mapping[str, str], name: str, errors: _ValidationErrors) -> str | None:
    """A ``YYYY-MM-DD`` filter value, returned as the same ISO string (they compare as dates)."""
    raw = query.get(name, "")
    if raw == "":
        return None
    try:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", raw):
            raise ValueError(raw)
        datetime.date.fromisoformat(raw)
    except ValueError:
        errors.add(name, f"The {name.replace('_', ' ')} does not match the format Y-m-d.")
        return None
    return raw


def _choice(query: Mapping[str, str], name: str, allowed: Iterable[str], errors: _ValidationErrors) -> str | None:
    raw = query.get(name, "")
    if raw == "":
        return None
    if raw not in allowed:
        errors.add(name, f"The selected {name.replace('_', ' ')} is invalid.")
        return None
    return raw


def _document_filter(query: Mapping[str, str], errors: _ValidationErrors) -> Callable[[_StoredDocument], bool] | None:
    """A predicate for the spec's ``GET /documents`` filters (None: the query filters nothing);
    problems are added to ``errors``."""
    checks: list[Callable[[_StoredDocument, dict[str, Any]], bool]] = []

    def equals(key: str, expected: Any) -> None:
        checks.append(lambda s, d: d.get(key) == expected)

    def date_range(key: str, start: str | None, end: str | None, *, paid_only: bool = False) -> None:
        if start is None and end is None:
            return

        def check(stored: _StoredDocument, document: dict[str, Any]) -> bool:
            if paid_only and (stored.paid_date_follows_today or document.get("payment_status") not in PAID_STATUSES):
                return False
            value = document.get(key)
            # ISO dates order like strings; a corrupted (non-string) date never matches a range.
            return isinstance(value, str) and (start is None or value >= start) and (end is None or value <= end)

        checks.append(check)

    for name, allowed in (("payment_status", PAYMENT_STATUSES), ("payment_method", PAYMENT_METHODS),
                          ("type", DOCUMENT_TYPES)):
        value = _choice(query, name, allowed, errors)
        if value is not None:
            equals(name, value)
    date_range("invoice_date", _date(query, "start_date", errors), _date(query, "end_date", errors))
    date_range("paid_date", _date(query, "paid_start_date", errors), _date(query, "paid_end_date", errors),
               paid_only=True)
    date_range("fulfillment_date", _date(query, "fulfillment_start_date", errors),
               _date(query, "fulfillment_end_date", errors))
    block_id = _integer(query, "block_id", errors)
    if block_id is not None:
        equals("block_id", block_id)
    partner_id = _integer(query, "partner_id", errors)
    if partner_id is not None:
        checks.append(lambda s, d: isinstance(d.get("document_partner"), dict) and d["document_partner"].get("id") == partner_id)
    text = query.get("query", "").strip().lower()
    if text:
        checks.append(lambda s, d: text in _searchable_text(d))
    number_range = _number_range(query, errors)
    if number_range is not None:
        checks.append(lambda s, d: _in_number_range(d.get("invoice_number"), *number_range))
    raw_modified = query.get("last_modified_date", "")
    if raw_modified:
        try:
            modified_since = datetime.datetime.fromisoformat(raw_modified)
        except ValueError:
            errors.add("last_modified_date", "The last modified date does not match the format Y-m-d H:i:s.")
        else:
            if modified_since.tzinfo is None:
                modified_since = modified_since.replace(tzinfo=BUDAPEST)
            checks.append(lambda s, d: s.modified_at >= modified_since)
    if not checks:
        return None
    return lambda stored: all(check(stored, stored.document) for check in checks)


def _searchable_text(document: dict[str, Any]) -> str:
    partner = document.get("document_partner")
    partner_name = partner.get("name") if isinstance(partner, dict) else ""
    return f"{document.get('invoice_number') or ''}\n{partner_name or ''}".lower()


_NUMBER_SUFFIX = re.compile(r"-(\d{4})-(\d+)$")


def _number_range(
    query: Mapping[str, str], errors: _ValidationErrors
) -> tuple[tuple[int, int] | None, tuple[int, int] | None] | None:
    """``start_number``/``start_year`` and ``end_number``/``end_year``, each pair all-or-nothing."""
    bounds: list[tuple[int, int] | None] = []
    for side in ("start", "end"):
        number = _integer(query, f"{side}_number", errors, minimum=1)
        year = _integer(query, f"{side}_year", errors, minimum=1)
        if (number is None) != (year is None):
            missing = f"{side}_year" if year is None else f"{side}_number"
            present = f"{side}_number" if year is None else f"{side}_year"
            errors.add(missing, f"The {missing.replace('_', ' ')} field is required when {present.replace('_', ' ')} is present.")
        bounds.append((year, number) if number is not None and year is not None else None)
    start, end = bounds
    return None if start is None and end is None else (start, end)


def _in_number_range(invoice_number: Any, start: tuple[int, int] | None, end: tuple[int, int] | None) -> bool:
    """Whether ``PREFIX-YYYY-NNNNNN`` falls in the (year, number) range; drafts have no number."""
    match = _NUMBER_SUFFIX.search(invoice_number) if isinstance(invoice_number, str) else None
    if match is None:
        return False
    key = (int(match.group(1)), int(match.group(2)))
    return (start is None or key >= start) and (end is None or key <= end)


def _partner_filter(query: Mapping[str, str], errors: _ValidationErrors) -> Callable[[dict[str, Any]], bool]:
    """``GET /partners``: ``query`` matches a substring of the name, tax code or an e-mail address."""
    text = query.get("query", "").strip().lower()
    if not text:
        return lambda partner: True

    def matches(partner: dict[str, Any]) -> bool:
        emails = partner.get("emails") if isinstance(partner.get("emails"), list) else []
        haystack = "\n".join(str(v) for v in (partner.get("name"), partner.get("taxcode"), *emails))
        return text in haystack.lower()

    return matches


def _spending_filter(query: Mapping[str, str], errors: _ValidationErrors) -> Callable[[dict[str, Any]], bool]:
    """``GET /spendings``: ``q``, a ``spending_date`` range (``start_date``/``end_date``, on the
    invoice date unless ``spending_date`` names another), ``payment_status``, ``spending_type``
    (manual or imported from NAV), ``categories``, ``currencies``, ``payment_methods``; ``all``
    (the enums' catch-all) filters nothing."""
    checks: list[Callable[[dict[str, Any]], bool]] = []
    date_key = _choice(query, "spending_date", SPENDING_DATE_TYPES, errors) or "invoice_date"
    start, end = _date(query, "start_date", errors), _date(query, "end_date", errors)
    if start is not None or end is not None:
        checks.append(lambda s: isinstance(s.get(date_key), str) and (start is None or s[date_key] >= start)
                      and (end is None or s[date_key] <= end))
    status = _choice(query, "payment_status", SPENDING_PAYMENT_STATUSES, errors)
    if status in ("paid", "unpaid"):
        checks.append(lambda s: (s.get("paid_at") is not None) == (status == "paid"))
    source = _choice(query, "spending_type", SPENDING_SOURCES, errors)
    if source in ("manual", "nav"):
        checks.append(lambda s: bool(s.get("is_created_by_nav")) == (source == "nav"))
    for name, key, allowed in (("categories", "category", CATEGORIES), ("currencies", "currency", CURRENCIES),
                               ("payment_methods", "payment_method", PAYMENT_METHODS)):
        value = _choice(query, name, allowed, errors)
        if value is not None:
            checks.append(lambda s, key=key, value=value: s.get(key) == value)
    text = query.get("q", "").strip().lower()
    if text:
        checks.append(lambda s: text in "\n".join(
            str(v) for v in (s.get("invoice_number"), (s.get("partner") or {}).get("name"), s.get("comment") or "")).lower())
    return lambda spending: all(check(spending) for check in checks)


def _document_block_filter(query: Mapping[str, str], errors: _ValidationErrors) -> Callable[[dict[str, Any]], bool]:
    block_type = _choice(query, "type", DOCUMENT_BLOCK_TYPES, errors)
    return lambda block: block_type is None or block.get("type") == block_type


def _no_filter(query: Mapping[str, str], errors: _ValidationErrors) -> Callable[[Any], bool]:
    return lambda item: True


# The filters of each list endpoint (documents: a predicate over stored documents, else over the
# served objects); each adds what is wrong with a query value to the request's errors.
_LIST_FILTERS: dict[str, Callable[[Mapping[str, str], _ValidationErrors], Callable[[Any], bool] | None]] = {
    "/v3/documents": _document_filter,
    "/v3/partners": _partner_filter,
    "/v3/spendings": _spending_filter,
    "/v3/document-blocks": _document_block_filter,
    "/v3/bank-accounts": _no_filter,
}
