"""Turn one Billingo API v3 ``Document`` payload into warehouse rows: the pure core of the sync.

Standard library only: no Dagster, no SQLAlchemy, no I/O, so the rules below can be tested in
milliseconds and reused by any caller. The contract is the published spec (3.0.14) plus the live
quirks in ``shared/billingo-api-v3/FACTS.md``.

Where each column comes from
    ``INVOICE_FIELDS`` and ``ITEM_FIELDS`` are the mapping (column <- source path in the Document,
    with its converter); ``normalize_document`` only walks them, so the table cannot drift from the
    code. ``MAPPED_FIELDS`` is the same mapping keyed by source path, and ``RAW_ONLY_FIELDS`` lists,
    with a reason, every spec field deliberately left in the raw payload
    (``billingo_documents_raw.payload``). A test walks the spec and fails on any field in neither.
    Paths are dotted; ``items[].`` prefixes a field of each ``DocumentItem``.

Decisions
- Amounts are JSON numbers. They become ``Decimal`` through ``str`` (``to_decimal``), so ``1234.56``
  stays ``Decimal("1234.56")``; no float arithmetic happens anywhere. Plain decimal strings such as
  ``"12.5"`` are accepted too (unambiguous, and some PHP serializers emit them); locale or currency
  formats (``"12.700,00 Ft"``, ``"12,5"``), exponents in strings, booleans, NaN and infinities raise.
- Enums (type, payment status/method, currency, language, round, vat, entitlement, ...) are kept as
  text as received: the live API returns values the spec does not list.
- Types are strict: a string field holding a number or object, a boolean holding ``"yes"`` or ``1``,
  an id holding ``"12"`` or ``12.0`` raises. A contract change should fail loudly per document
  rather than be guessed around. Unknown fields are ignored.
- Only stored values are validated: fields that stay raw-only (including the deprecated
  ``partner``) and a ``paid_date`` that is discarded are never inspected, so they cannot fail a
  document.
- ``paid_date`` is kept only for ``paid`` / ``partially_paid``: otherwise the API shows "today".
- ``cancelled`` null or absent means ``False`` (the column is NOT NULL); ``electronic`` may be None.
- Empty date strings mean "no date" (a date column cannot hold ``""``); empty text stays ``""``.
- ``partner_emails`` joins the non-blank addresses with ``","``; no address gives None.
- Error paths use 0-based JSON indexes (``items[0]`` is position 1), like jq / JSON Pointer.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Context, Decimal
from types import MappingProxyType
from typing import Any

__all__ = [
    "DocumentError",
    "NormalizedDocument",
    "FieldMapping",
    "ColumnLimit",
    "RowLimits",
    "INVOICE_FIELDS",
    "ITEM_FIELDS",
    "MAPPED_FIELDS",
    "RAW_ONLY_FIELDS",
    "PAID_STATUSES",
    "change_hash",
    "content_hash",
    "normalize_document",
    "EntityFields",
    "entity_field",
    "mapped_entity_fields",
    "normalize_entity",
    "parse_vat_percent",
    "to_decimal",
]


class DocumentError(ValueError):
    """One document cannot be normalized; the rest of the batch can still be.

    ``message`` names the field and the problem (``"items[2].quantity: 'abc' is not a number"``);
    ``document_id`` is None when the document has no usable id. ``str()`` combines both, and the
    pair is what ``sync_log.errors`` stores.
    """

    document_id: int | None
    message: str

    def __init__(self, message: str, document_id: int | None = None) -> None:
        # Both go into args so the exception pickles and unpickles intact (multiprocess executors).
        super().__init__(message, document_id)
        self.message = message
        self.document_id = document_id

    def __str__(self) -> str:
        where = f"document {self.document_id}" if self.document_id is not None else "document (no valid id)"
        return f"{where}: {self.message}"


@dataclass(frozen=True)
class NormalizedDocument:
    """The rows one Document yields.

    ``invoice`` has the ``billingo_invoices`` columns except ``id``, ``company_id``, ``source_hash``,
    ``first_seen_at``, ``last_changed_at`` and ``deleted_in_source_at`` (the writer owns those);
    ``items`` have the ``billingo_invoice_items`` columns except ``id``, ``company_id`` and
    ``document_id``, in document order.
    """

    document_id: int
    invoice: dict[str, object]
    items: tuple[dict[str, object], ...]


# --- value converters: (value, field path for messages) -> column value ---------------------------
# They raise DocumentError without an id; normalize_document attaches the document's id.

_PLAIN_DECIMAL = re.compile(r"[+-]?\d+(?:\.\d+)?")
# "27%", "5,5%" (Hungarian decimal comma) and, defensively, "5.5%"; everything else is a code.
_VAT_PERCENT = re.compile(r"(\d+(?:[.,]\d+)?)\s*%")
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _has_lone_surrogate(text: str) -> bool:
    """Whether ``text`` holds a surrogate code point: a Python str has one only when the JSON had a
    lone ``"\\ud800"`` escape (a proper pair decodes to one astral character)."""
    # Strict UTF-8 refuses exactly the surrogate code points, and encodes faster than a regex scans.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _json_type(value: object) -> str:
    """The JSON name of a value's type, for messages a reader of the payload understands."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float, Decimal)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, (list, tuple)):
        return "array"
    return type(value).__name__


def _show(value: object) -> str:
    """A short repr: a message must stay readable even when the bad value is huge."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def to_decimal(value: object, field: str) -> Decimal | None:
    """A JSON number as an exact ``Decimal``; None stays None.

    Floats go through ``str`` (the shortest round-tripping text, i.e. what the JSON said), so
    ``0.1`` gives ``Decimal("0.1")``, not the binary expansion. Plain decimal strings (``"12.5"``,
    ``"-3"``) are accepted; booleans, NaN, infinities, locale/currency strings and other types raise
    ``DocumentError`` naming ``field``.
    """
    # Fast path for what JSON gives: exact int or float (``type(True)`` is bool, so never here).
    kind = type(value)
    if kind is int:
        return Decimal(value)
    if kind is float and math.isfinite(value):
        return Decimal(repr(value))  # float's repr is its str: the shortest round-tripping text
    if value is None:
        return None
    # bool is an int subclass: without this check True would silently become Decimal(1).
    if isinstance(value, bool):
        raise DocumentError(f"{field}: {value!r} is not a number")
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise DocumentError(f"{field}: {value!r} is not a finite number")
        return Decimal(str(value))
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise DocumentError(f"{field}: {value!r} is not a finite number")
        return value
    if isinstance(value, str):
        if _PLAIN_DECIMAL.fullmatch(value):
            return Decimal(value)
        raise DocumentError(f"{field}: {_show(value)} is not a number")
    raise DocumentError(f"{field}: expected a number, got {_json_type(value)}")


def parse_vat_percent(vat: str | None) -> Decimal | None:
    """The numeric rate of a Billingo ``vat`` text: ``"27%"`` -> 27, ``"5,5%"`` -> 5.5.

    Codes without a percentage (``AAM``, ``TAM``, ``EU``, ``EUK``, ``F.AFA``, ``ÁKK``, ... and any
    future code) and None give None: they are exemption or reverse-charge categories, not rates.
    """
    if vat is None:
        return None
    if not isinstance(vat, str):
        raise TypeError(f"vat must be a string or None, got {type(vat).__name__}")
    match = _VAT_PERCENT.fullmatch(vat.strip())
    return Decimal(match.group(1).replace(",", ".")) if match else None


def _text(value: object, field: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise DocumentError(f"{field}: expected a string, got {_json_type(value)}")


def _integer(value: object, field: str) -> int | None:
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise DocumentError(f"{field}: expected an integer, got {_json_type(value)} {_show(value)}")


def _flag(value: object, field: str) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise DocumentError(f"{field}: expected a boolean, got {_json_type(value)} {_show(value)}")


def _flag_default_false(value: object, field: str) -> bool:
    flag = _flag(value, field)
    return False if flag is None else flag


def _date(value: object, field: str) -> dt.date | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise DocumentError(f"{field}: expected a date string, got {_json_type(value)}")
    if not value.strip():
        return None
    # fromisoformat alone would also take "20240305" or "2024-W10-2"; the spec says YYYY-MM-DD.
    if _ISO_DATE.fullmatch(value):
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            pass
    raise DocumentError(f"{field}: {_show(value)} is not a date (YYYY-MM-DD)")


def _emails(value: object, field: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise DocumentError(f"{field}: expected an array of strings, got {_json_type(value)}")
    addresses = []
    for index, email in enumerate(value):
        email = _text(email, f"{field}[{index}]")
        if email and email.strip():
            addresses.append(email.strip())
    return ",".join(addresses) or None


def _vat_percent(value: object, field: str) -> Decimal | None:
    return parse_vat_percent(_text(value, field))


# --- what the target columns can hold -------------------------------------------------------------


@dataclass(frozen=True)
class ColumnLimit:
    """What one warehouse column can hold, so a value that does not fit is a document error here
    instead of a database error that takes its whole batch down (and differs by dialect: SQLite
    would store what PostgreSQL refuses). ``warehouse.schema.column_limits`` derives these from
    the column types; this module only applies them.
    """

    max_length: int | None = None  # characters of a text column
    text: bool = False  # no NUL character: PostgreSQL's text and JSONB cannot store one
    digits: tuple[int, int] | None = None  # (precision, scale) of an exact decimal column
    integer_bits: int | None = None  # signed width of an integer column

    def check(self, value: object, field: str) -> None:
        if value is None:
            return
        if isinstance(value, str):
            if self.text:
                if "\x00" in value:
                    raise DocumentError(f"{field}: contains a NUL character, which the warehouse cannot store")
                # Surrogates are not ASCII, and isascii() is O(1): most text skips the scan.
                if not value.isascii() and _has_lone_surrogate(value):
                    raise DocumentError(f"{field}: contains an unpaired UTF-16 surrogate, which is not valid Unicode text")
            if self.max_length is not None and len(value) > self.max_length:
                raise DocumentError(
                    f"{field}: {len(value):,} characters, more than the {self.max_length:,} the warehouse column holds"
                )
        elif isinstance(value, Decimal) and self.digits is not None:
            precision, scale = self.digits
            whole_digits = precision - scale
            adjusted = value.adjusted()
            # Rounding to the scale can carry into one more digit before the point (9.9999996 ->
            # 10.000000 at scale 6), never two: a finite value with at most whole_digits - 1 of them
            # fits, quantize or not. Non-finite values report adjusted() == 0, hence is_finite():
            # they take the exact path, which decides them as it always did.
            if adjusted < whole_digits - 1 and value.is_finite():
                return
            # Rounded as the column rounds it, in a context wide enough never to fail on its own.
            fits = adjusted < whole_digits and (
                value.quantize(Decimal(1).scaleb(-scale), context=Context(prec=precision + 2)).adjusted() < whole_digits
            )
            if not fits:
                raise DocumentError(
                    # Scientific notation: the same text for 1.5e38 read from the API or from JSONB (an int then).
                    f"{field}: {value.normalize():E} is out of range for the warehouse "
                    f"(at most {whole_digits} digits before the decimal point)"
                )
        elif isinstance(value, int) and not isinstance(value, bool) and self.integer_bits is not None:
            bound = 2 ** (self.integer_bits - 1)
            if not -bound <= value < bound:
                raise DocumentError(f"{field}: {_show(value)} is out of range for a {self.integer_bits}-bit integer column")


@dataclass(frozen=True)
class RowLimits:
    """Column limits of the invoice row and of each item row, by column name.

    Immutable: both mappings are read-only copies taken at construction, so ``normalize_document``
    can turn one RowLimits into per-column checks once and reuse them for every document.
    """

    invoice: Mapping[str, ColumnLimit]
    item: Mapping[str, ColumnLimit]

    def __post_init__(self) -> None:
        object.__setattr__(self, "invoice", MappingProxyType(dict(self.invoice)))
        object.__setattr__(self, "item", MappingProxyType(dict(self.item)))

    def __reduce__(self) -> tuple[type[RowLimits], tuple[dict[str, ColumnLimit], dict[str, ColumnLimit]]]:
        # A mappingproxy does not pickle; its dict does, and __post_init__ wraps it again.
        return (RowLimits, (dict(self.invoice), dict(self.item)))


# --- the mapping ----------------------------------------------------------------------------------

PAID_STATUSES = frozenset({"paid", "partially_paid"})


def _is_paid(document: Mapping[str, object]) -> bool:
    return document.get("payment_status") in PAID_STATUSES


@dataclass(frozen=True)
class FieldMapping:
    """One column: where it comes from in the payload and how the value is checked and converted."""

    column: str
    source: tuple[str, ...]  # path of keys from the Document (or from one item for ITEM_FIELDS)
    convert: Callable[[object, str], object]
    # When given and false for the document, the column is None and the source is not inspected.
    stored_if: Callable[[Mapping[str, object]], bool] | None = None


def _map(
    column: str,
    source: str,
    convert: Callable[[object, str], object],
    stored_if: Callable[[Mapping[str, object]], bool] | None = None,
) -> FieldMapping:
    return FieldMapping(column, tuple(source.split(".")), convert, stored_if)


# ``document_id`` (from ``id``) is not listed: it is validated first, since every error needs it.
INVOICE_FIELDS: tuple[FieldMapping, ...] = (
    _map("invoice_number", "invoice_number", _text),
    _map("document_type", "type", _text),
    _map("correction_type", "correction_type", _text),
    _map("block_id", "block_id", _integer),
    _map("cancelled", "cancelled", _flag_default_false),
    _map("invoice_date", "invoice_date", _date),
    _map("fulfillment_date", "fulfillment_date", _date),
    _map("due_date", "due_date", _date),
    # The live API fills paid_date with the current date for unpaid documents.
    _map("paid_date", "paid_date", _date, stored_if=_is_paid),
    _map("currency", "currency", _text),
    _map("conversion_rate", "conversion_rate", to_decimal),
    _map("net_total", "summary.net_amount", to_decimal),
    _map("vat_total", "summary.vat_amount", to_decimal),
    # The summary has no gross in document currency; the top-level gross_total is it.
    _map("gross_total", "gross_total", to_decimal),
    _map("net_total_local", "summary.net_amount_local", to_decimal),
    _map("vat_total_local", "summary.vat_amount_local", to_decimal),
    _map("gross_total_local", "summary.gross_amount_local", to_decimal),
    _map("payment_method", "payment_method", _text),
    _map("payment_status", "payment_status", _text),
    _map("rounding", "settings.round", _text),
    _map("language", "language", _text),
    _map("electronic", "electronic", _flag),
    # document_partner, never the deprecated partner (which may disagree with it).
    _map("partner_id", "document_partner.id", _integer),
    _map("partner_name", "document_partner.name", _text),
    _map("partner_tax_number", "document_partner.taxcode", _text),
    _map("partner_iban", "document_partner.iban", _text),
    _map("partner_swift", "document_partner.swift", _text),
    _map("partner_account_number", "document_partner.account_number", _text),
    _map("partner_country_code", "document_partner.address.country_code", _text),
    _map("partner_post_code", "document_partner.address.post_code", _text),
    _map("partner_city", "document_partner.address.city", _text),
    _map("partner_address", "document_partner.address.address", _text),
    _map("partner_emails", "document_partner.emails", _emails),
    _map("comment", "comment", _text),
)

# ``position`` is not listed: it is the 1-based index of the item in ``items``.
ITEM_FIELDS: tuple[FieldMapping, ...] = (
    _map("product_id", "product_id", _integer),
    _map("name", "name", _text),
    _map("quantity", "quantity", to_decimal),
    _map("unit", "unit", _text),
    _map("net_unit_price", "net_unit_amount", to_decimal),
    _map("vat_rate", "vat", _text),  # as written: "27%", "5,5%", "AAM"
    _map("vat_percent", "vat", _vat_percent),  # numeric, None for codes
    _map("entitlement", "entitlement", _text),
    _map("net_amount", "net_amount", to_decimal),
    _map("vat_amount", "vat_amount", to_decimal),
    _map("gross_amount", "gross_amount", to_decimal),
    _map("comment", "comment", _text),
)


def _mapped_fields() -> dict[str, tuple[str, ...]]:
    mapped: dict[str, tuple[str, ...]] = {"id": ("document_id",)}
    for prefix, fields in (("", INVOICE_FIELDS), ("items[].", ITEM_FIELDS)):
        for mapping in fields:
            path = prefix + ".".join(mapping.source)
            mapped[path] = (*mapped.get(path, ()), mapping.column)
    return mapped


#: Source path in the Document -> the column(s) it fills. Derived from the tables above.
MAPPED_FIELDS: Mapping[str, tuple[str, ...]] = MappingProxyType(_mapped_fields())

#: Every spec field that deliberately stays only in the raw payload, with the reason. Objects that
#: are mapped field by field (summary, settings, document_partner, its address, items[]) are not
#: listed themselves; their unmapped fields are.
RAW_ONLY_FIELDS: Mapping[str, str] = MappingProxyType({
    "organization": "the issuer, i.e. the company itself: the same on every document",
    "partner": "deprecated duplicate of document_partner; ignored even when present",
    "tags": "free-form labels, a list: query the raw payload",
    "notification_status": "e-mail delivery state of the document, not invoice data",
    "online_szamla_status": "NAV (tax authority) reporting state, operational",
    "related_documents": "links to cancellations/corrections, a list: query the raw payload",
    "discount": "document-level discount setting; the amounts are taken as reported in items and summary",
    "summary.vat_rate_summary": "per-rate breakdown, derivable from the items",
    "settings.mediated_service": "document setting with no column",
    "settings.without_financial_fulfillment": "document setting with no column",
    "settings.online_payment": "online payment provider setting (Barion, SimplePay, ...)",
    "settings.no_send_onlineszamla_by_user": "NAV reporting setting",
    "settings.order_number": "buyer's order reference, free text",
    "settings.place_id": "Billingo place id, no column",
    "settings.instant_payment": "instant payment setting, no column",
    "settings.selected_type": "type chosen in the UI; `type` is the document's type",
    "document_partner.phone": "contact detail with no column",
    "document_partner.tax_type": "partner tax category with no column",
})


# --- entry points ---------------------------------------------------------------------------------


def content_hash(payload: Mapping[str, Any]) -> str:
    """sha256 hex of the payload's canonical JSON: sorted keys, no whitespace, UTF-8.

    Key order and the formatting of the received text do not change it; any value change does.
    """
    canonical = json.dumps(
        payload,
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        default=_plain_mapping,
    )
    # surrogatepass: a lone "\ud800" escape in Billingo's JSON must hash, not crash the fetch; text
    # without one encodes exactly as plain UTF-8, so no existing hash changes.
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


def change_hash(payload: Mapping[str, Any]) -> str:
    """The hash a re-sync compares to decide whether a document changed.

    Like ``content_hash``, but blind to the ``paid_date`` Billingo fills with *today* for documents
    that are not paid: otherwise every unpaid invoice would look changed on every new day.
    """
    if paid_date_ignored(payload):
        payload = {key: value for key, value in payload.items() if key != "paid_date"}
    return content_hash(payload)


def paid_date_ignored(payload: object) -> bool:
    """Whether ``change_hash`` leaves out the payload's ``paid_date`` (it is fake: not paid)."""
    return isinstance(payload, Mapping) and "paid_date" in payload and payload.get("payment_status") not in PAID_STATUSES


def _plain_mapping(value: object) -> dict[str, Any]:
    # json only serializes dicts; accept any Mapping (e.g. a read-only proxy) with the same text.
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"content_hash: {type(value).__name__} is not JSON")


def normalize_document(payload: Mapping[str, Any], limits: RowLimits | None = None) -> NormalizedDocument:
    """The invoice row and item rows of one Document; raises ``DocumentError`` (with the id).

    With ``limits`` every value is also checked against what its warehouse column can hold.
    """
    document_id = _object_id(payload, "document")

    invoice_steps, item_steps = _steps(limits)
    try:
        invoice: dict[str, object] = {"document_id": document_id}
        _fill(invoice, payload, invoice_steps, document=payload)
        items = _items(payload, item_steps)
    except DocumentError as error:
        raise DocumentError(error.message, document_id) from None
    return NormalizedDocument(document_id=document_id, invoice=invoice, items=items)


def _object_id(payload: object, what: str) -> int:
    """The payload's positive integer ``id``; ``DocumentError`` when it is not an object or has none."""
    if not _is_object(payload):
        raise DocumentError(f"{what}: expected an object, got {_json_type(payload)}")
    object_id = payload.get("id")
    if isinstance(object_id, bool) or not isinstance(object_id, int) or object_id <= 0:
        problem = "missing" if object_id is None else f"{_show(object_id)} is not a positive integer"
        raise DocumentError(f"id: {problem}")
    return object_id


def _is_object(value: object) -> bool:
    # JSON objects are dicts: the exact type test spares them the slow abc check other Mappings need.
    return type(value) is dict or isinstance(value, Mapping)


# One column of a row, resolved once instead of per document: (column, first key of the source
# path, the whole path when it is longer than one key (else None), the path as messages name it,
# converter, column check or None, stored_if).
_Step = tuple[
    str,
    str,
    tuple[str, ...] | None,
    str,
    Callable[[object, str], object],
    Callable[[object, str], None] | None,
    Callable[[Mapping[str, object]], bool] | None,
]


def _compile(fields: tuple[FieldMapping, ...], limits: Mapping[str, ColumnLimit] | None) -> tuple[_Step, ...]:
    steps = []
    for mapping in fields:
        limit = None if limits is None else limits.get(mapping.column)
        check = None if limit is None else limit.check
        path = mapping.source if len(mapping.source) > 1 else None
        display = ".".join(mapping.source)
        steps.append((mapping.column, mapping.source[0], path, display, mapping.convert, check, mapping.stored_if))
    return tuple(steps)


def _steps(limits: RowLimits | None) -> tuple[tuple[_Step, ...], tuple[_Step, ...]]:
    """The invoice and item steps for ``limits``, compiled on first use."""
    if limits is None:
        return _UNCHECKED_STEPS
    # By identity: a RowLimits cannot change (read-only copies), and the entry holds it, so its id
    # is not reused while cached. Callers pass a module constant; the bound only stops a leak.
    cached = _CHECKED_STEPS.get(id(limits))
    if cached is None or cached[0] is not limits:
        if len(_CHECKED_STEPS) >= 16:
            _CHECKED_STEPS.clear()
        cached = (limits, (_compile(INVOICE_FIELDS, limits.invoice), _compile(ITEM_FIELDS, limits.item)))
        _CHECKED_STEPS[id(limits)] = cached
    return cached[1]


_UNCHECKED_STEPS = (_compile(INVOICE_FIELDS, None), _compile(ITEM_FIELDS, None))
_CHECKED_STEPS: dict[int, tuple[RowLimits, tuple[tuple[_Step, ...], tuple[_Step, ...]]]] = {}


def _items(document: Mapping[str, Any], steps: tuple[_Step, ...]) -> tuple[dict[str, object], ...]:
    items = document.get("items")
    if items is None:
        return ()
    if not isinstance(items, list):
        raise DocumentError(f"items: expected an array, got {_json_type(items)}")
    rows = []
    for index, item in enumerate(items):
        if not _is_object(item):
            raise DocumentError(f"items[{index}]: expected an object, got {_json_type(item)}")
        row: dict[str, object] = {"position": index + 1}
        try:
            _fill(row, item, steps, document=document)
        except DocumentError as error:
            # Every message starts with the field's path in the item; the item's place goes first.
            raise DocumentError(f"items[{index}].{error.message}") from None
        rows.append(row)
    return tuple(rows)


def _fill(row: dict[str, object], source: Mapping[str, Any], steps: tuple[_Step, ...], *, document: Mapping[str, Any]) -> None:
    """Add the columns of ``steps``, read from ``source`` (the document, or one of its items).
    A ``DocumentError`` names the field by its path in ``source``."""
    get = source.get
    for column, key, path, display, convert, check, stored_if in steps:
        if stored_if is not None and not stored_if(document):
            row[column] = None
            continue
        value = get(key)
        if path is not None:
            value = _descend(value, path)
        value = convert(value, display)
        if check is not None and value is not None:
            check(value, display)
        row[column] = value


def _descend(value: object, path: tuple[str, ...]) -> object:
    """The value at ``path`` given ``value``, the one at ``path[0]``; an absent or null object on
    the way gives None."""
    for depth in range(1, len(path)):
        if value is None:
            return None
        if type(value) is not dict and not _is_object(value):
            raise DocumentError(f"{'.'.join(path[:depth])}: expected an object, got {_json_type(value)}")
        value = value.get(path[depth])
    return value


# -- payment histories (GET /documents/{id}/payments) ---------------------------------------------

# Payment row column -> PaymentHistory field.
_PAYMENT_COLUMNS = {
    "payment_date": "date", "price": "price", "payment_method": "payment_method",
    "voucher_number": "voucher_number", "conversion_rate": "conversion_rate",
}
_REQUIRED_PAYMENT_FIELDS = ("date", "price", "payment_method")


def normalize_payment_history(history: object, limits: Mapping[str, ColumnLimit] | None = None) -> list[dict[str, object]]:
    """A document's payment history (a JSON array of ``PaymentHistory``) as payment rows, in
    Billingo's order: ``payment_date``, ``price`` (exact, in the document's currency),
    ``payment_method``, ``voucher_number``, ``conversion_rate``. Raises ``DocumentError`` naming
    the payment and field that cannot be stored, so one bad history fails its document alone.

    An object keyed ``"1"``, ``"2"``, ... is the same array as PHP's ``json_encode`` writes one whose
    keys have gaps (after ``array_filter``): its values in the order of their keys."""
    if isinstance(history, Mapping) and history and all(isinstance(k, str) and k.isdigit() for k in history):
        history = [history[key] for key in sorted(history, key=int)]
    if not isinstance(history, list):
        raise DocumentError(f"payments: expected an array, got {_json_type(history)}")
    rows: list[dict[str, object]] = []
    for position, entry in enumerate(history, start=1):
        prefix = f"payments[{position}]"
        if not isinstance(entry, Mapping):
            raise DocumentError(f"{prefix}: expected an object, got {_json_type(entry)}")
        row = {
            "payment_date": _date(entry.get("date"), f"{prefix}.date"),
            "price": to_decimal(entry.get("price"), f"{prefix}.price"),
            "payment_method": _text(entry.get("payment_method"), f"{prefix}.payment_method"),
            "voucher_number": _text(entry.get("voucher_number"), f"{prefix}.voucher_number"),
            "conversion_rate": to_decimal(entry.get("conversion_rate"), f"{prefix}.conversion_rate"),
        }
        for column, source in _PAYMENT_COLUMNS.items():
            if row[column] is None and source in _REQUIRED_PAYMENT_FIELDS:
                raise DocumentError(f"{prefix}.{source}: missing (the spec requires it)")
            if limits and column in limits and row[column] is not None:
                limits[column].check(row[column], f"{prefix}.{source}")
        rows.append(row)
    return rows

# --- the other list endpoints: one row per entity (partner, spending, block, bank account) -----------

#: The converters an entity field mapping names by kind (``entity_field``).
CONVERTERS: Mapping[str, Callable[[object, str], object]] = MappingProxyType({
    "text": _text,
    "integer": _integer,
    "flag": _flag,
    "date": _date,
    "decimal": to_decimal,  # exact: through str to Decimal
    "emails": _emails,  # an array of strings -> comma-separated
})


def entity_field(column: str, source: str, kind: str) -> FieldMapping:
    """One column of an entity row: ``source`` is a dotted path in the payload, ``kind`` a key of
    ``CONVERTERS``."""
    return _map(column, source, CONVERTERS[kind])


class EntityFields:
    """An endpoint's declarative mapping (column <- source path), compiled once against what the
    normalized table's columns can hold, and the spec fields it keeps only in the raw payload."""

    def __init__(
        self, fields: tuple[FieldMapping, ...], raw_only: Mapping[str, str], limits: Mapping[str, ColumnLimit] | None,
        *, entity: str,
    ):
        self.fields = fields
        self.raw_only: Mapping[str, str] = MappingProxyType(dict(raw_only))
        self.entity = entity
        self._steps = _compile(fields, limits)

    @property
    def mapped(self) -> Mapping[str, tuple[str, ...]]:
        return mapped_entity_fields(self.fields)


def mapped_entity_fields(fields: tuple[FieldMapping, ...]) -> Mapping[str, tuple[str, ...]]:
    """Source path -> the column(s) it fills, ``id`` included."""
    mapped: dict[str, tuple[str, ...]] = {"id": ("id",)}
    for mapping in fields:
        path = ".".join(mapping.source)
        mapped[path] = (*mapped.get(path, ()), mapping.column)
    return MappingProxyType(mapped)


def normalize_entity(payload: Mapping[str, Any], fields: EntityFields) -> dict[str, object]:
    """The normalized row of one entity (its Billingo id under no column: the caller keys it);
    raises ``DocumentError`` naming the field, with the id."""
    entity_id = _object_id(payload, fields.entity)
    row: dict[str, object] = {}
    try:
        _fill(row, payload, fields._steps, document=payload)
    except DocumentError as error:
        raise DocumentError(error.message, entity_id) from None
    return row
