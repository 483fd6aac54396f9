"""An organization's Billingo records besides its documents: partners, spendings (incoming bills),
payment histories, bank accounts and document blocks.

Nothing here is built until it is asked for: the simulator creates an organization's ``Ledger`` on
its first request to one of these endpoints, the ledger generates each part (partners, spendings,
...) on first use, and a document's payment history is derived from the document when it is first
requested. Each part has its own ``random.Random`` derived from the organization's seed, so the
documents are exactly those of an organization that never had a ledger, and the order in which
parts are first asked for never changes what they hold.

Consistency with the documents (``DocumentFactory`` of the same organization):

* every partner a document is issued to is in the partner list as the very ``Partner`` object that
  document carries as its deprecated ``partner``: same id, name, tax code, address, e-mails and IBAN.
  The suppliers that spendings name follow them in the list, each with an IBAN (the payables side
  pays by transfer); two of them are members of a VAT group (``group_member_tax_number``);
* a ``paid`` document's payments add up to its ``gross_total``, a ``partially_paid`` one's to less
  (and to more than nothing), the last one dated on the document's ``paid_date``; every other
  document has none;
* the bank account documents name is the organization's first bank account, and the documents'
  ``block_id`` values are its invoice and proforma blocks;
* a spending's ``total_gross`` is its net plus ``total_vat_amount``; the ``_local`` amounts are the
  same in HUF at its ``conversion_rate`` (rounded to whole forints).
"""

from __future__ import annotations

import copy
import datetime
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from billingo_pipeline.simulator.data import (
    _BANKS,
    _CITIES,
    _EUR_STEP,
    _FOREIGN_FORMATS,
    _HUF_STEP,
    _STREETS,
    PAYMENT_METHODS,
    DocumentFactory,
    _day_between,
    _decimal,
    _digits,
    _hu_account_number,
    _hu_tax_number,
    _iban,
    _json_number,
    _slug,
    _vat_rate,
    _weighted,
)

# The spec's enums (v3.0.14) for the filters of these endpoints.
CATEGORIES = ("advertisement", "development", "other", "overheads", "service", "stock", "tangible_assets")
CURRENCIES = (
    "AED", "AUD", "BGN", "BRL", "CAD", "CHF", "CNY", "CZK", "DKK", "EUR", "GBP", "HKD", "HRK", "HUF", "IDR",
    "ILS", "INR", "ISK", "JPY", "KRW", "MXN", "MYR", "NOK", "NZD", "PHP", "PLN", "RON", "RSD", "RUB", "SEK",
    "SGD", "THB", "TRY", "UAH", "USD", "ZAR",
)
DOCUMENT_BLOCK_TYPES = ("certificate_of_completion", "dossier", "invoice", "offer", "order_form", "receipt", "waybill")
SPENDING_DATE_TYPES = ("due_date", "fulfillment_date", "invoice_date")
SPENDING_PAYMENT_STATUSES = ("all", "paid", "unpaid")
SPENDING_SOURCES = ("all", "manual", "nav")
PARTNER_FIELDS = frozenset({
    "id", "name", "address", "emails", "taxcode", "iban", "swift", "account_number", "phone", "tax_type",
    "general_ledger_number", "custom_billing_settings", "group_member_tax_number",
})
# Documents that carry no payment obligation, so no payment can be recorded on them.
UNPAYABLE_TYPES = frozenset({
    "cancellation", "draft", "draft_offer", "draft_order_form", "draft_waybill", "receipt_cancellation",
})

# Offset of spending ids inside an organization's id range (documents count up from its start,
# products and partners live at 8 and 9 million).
SPENDING_ID_OFFSET = 7_000_000
# About one incoming bill per four issued documents, within bounds that keep generation cheap.
_MIN_SPENDINGS = 12
_MAX_SPENDINGS = 5_000
_MIN_HISTORY_DAYS = 30
_MAX_HISTORY_DAYS = 365
_PAID_STATUSES = frozenset({"paid", "partially_paid"})
_TRANSFER_METHODS = frozenset({"wire_transfer", "elore_utalas", "transferwise"})
_IMMEDIATE_SPENDING_METHODS = frozenset({"bankcard", "cash"})
_SPENDING_COMMENTS = ("Havi díj", "Keretszerződés alapján", "Éves előfizetés", "Sürgős megrendelés")


@dataclass(frozen=True)
class _Supplier:
    name: str
    category: str
    country_code: str  # "HU" or a key of data._FOREIGN_FORMATS
    vat: str
    min_net: int  # net range, in whole units of the currency
    max_net: int
    currency: str
    payment_method: str
    due_days: int
    weight: int
    number_prefix: str
    vat_group_member: bool = False


# Foreign suppliers invoice without VAT (reverse charge): the buyer accounts for it.
_SUPPLIERS = (
    _Supplier("Pannon Energiaellátó Zrt.", "overheads", "HU", "27%", 40_000, 400_000, "HUF", "wire_transfer", 15, 10,
              "PE", vat_group_member=True),
    _Supplier("Hungária Távközlési Kft.", "overheads", "HU", "27%", 12_000, 90_000, "HUF", "wire_transfer", 15, 10,
              "HT", vat_group_member=True),
    _Supplier("Kelet-Pest Irodaház Kft.", "overheads", "HU", "27%", 250_000, 900_000, "HUF", "wire_transfer", 8, 8, "KPI"),
    _Supplier("Csillag Könyvelőiroda Bt.", "service", "HU", "27%", 60_000, 180_000, "HUF", "wire_transfer", 8, 8, "CSK"),
    _Supplier("Rába Irodaszer Kft.", "stock", "HU", "27%", 5_000, 120_000, "HUF", "bankcard", 0, 8, "RI"),
    _Supplier("Mátra Nagykereskedelmi Kft.", "stock", "HU", "27%", 50_000, 1_500_000, "HUF", "wire_transfer", 30, 10, "MN"),
    _Supplier("Vértes Számítástechnika Kft.", "tangible_assets", "HU", "27%", 150_000, 2_500_000, "HUF",
              "wire_transfer", 15, 4, "VSZ"),
    _Supplier("Napfény Média Kft.", "advertisement", "HU", "27%", 30_000, 600_000, "HUF", "wire_transfer", 30, 5, "NM"),
    _Supplier("Bakonyi Szoftverház Zrt.", "development", "HU", "27%", 100_000, 1_200_000, "HUF", "wire_transfer", 30, 5,
              "BSZ"),
    _Supplier("Alföldi Futárszolgálat Kft.", "service", "HU", "27%", 3_000, 60_000, "HUF", "bankcard", 0, 6, "AF"),
    _Supplier("Zöldmező Vendéglő Bt.", "other", "HU", "27%", 8_000, 80_000, "HUF", "cash", 0, 4, "ZV"),
    _Supplier("Donau Cloud Services GmbH", "service", "AT", "0%", 20, 900, "EUR", "bankcard", 0, 6, "DCS"),
    _Supplier("Tatra Marketing s.r.o.", "advertisement", "SK", "0%", 200, 3_000, "EUR", "wire_transfer", 30, 3, "TM"),
    _Supplier("Rheinland Maschinen GmbH", "tangible_assets", "DE", "0%", 1_000, 12_000, "EUR", "wire_transfer", 30, 2,
              "RM"),
)
# country -> (post code, city, street address, SWIFT, language)
_FOREIGN_SUPPLIER_PLACES = {
    "AT": ("1030", "Wien", "Landstraßer Hauptstraße 99", "BKAUATWW", "de"),
    "SK": ("040 01", "Košice", "Hlavná 41", "TATRSKBX", "en"),
    "DE": ("50667", "Köln", "Hohe Straße 52", "COBADEFF", "de"),
}


@dataclass
class _StoredPartner:
    partner: dict[str, Any]  # replaced, never modified in place
    modified_at: datetime.datetime


class Ledger:
    """One organization's partners, spendings, payment histories, bank accounts and blocks.

    Not thread-safe: the simulator calls it under its lock. Stored objects are replaced, never
    modified in place, so an answer can be serialized while the ledger changes.
    """

    def __init__(
        self,
        seed: int | str,
        *,
        first_id: int,
        factory: DocumentFactory,
        created_on: datetime.date,
        history_end: datetime.datetime,
        document_count: int,
    ):
        self._seed = seed
        self._first_id = first_id
        self._factory = factory
        self._created_on = created_on
        self._history_end = history_end
        self._document_count = document_count
        self._partners: list[_StoredPartner] | None = None  # creation (= id) order
        self._partners_by_id: dict[int, _StoredPartner] = {}
        self._supplier_ids: list[int] = []
        self.changed_partner_ids: set[int] = set()
        """Partners added or changed since generation: new documents name them as they are now."""
        self._spendings: list[dict[str, Any]] | None = None  # creation (= id) order
        self._spendings_by_id: dict[int, dict[str, Any]] = {}
        self._spending_rng = random.Random(f"spendings:{seed}")
        self._invoice_numbers: dict[tuple[str, int], int] = {}  # (supplier prefix, year) -> last number
        self._payments: dict[int, list[dict[str, Any]]] = {}  # recorded histories, by document id
        rng = random.Random(f"organization:{seed}")
        self.organization_id = rng.randint(100_000, 999_999)

    # -- partners --------------------------------------------------------------------------------

    def partners_newest_first(self) -> list[dict[str, Any]]:
        return [stored.partner for stored in reversed(self._stored_partners())]

    def partner(self, partner_id: int) -> dict[str, Any] | None:
        self._stored_partners()
        stored = self._partners_by_id.get(partner_id)
        return stored.partner if stored else None

    def partner_modified_at(self, partner_id: int) -> datetime.datetime:
        self._stored_partners()
        return self._partners_by_id[partner_id].modified_at

    def add_partner(self, fields: Mapping[str, Any], *, now: datetime.datetime) -> dict[str, Any]:
        _check_partner_fields(fields)
        if "id" in fields:
            raise ValueError("the id of a new partner is assigned by the simulator")
        partners = self._stored_partners()
        partner_id = partners[-1].partner["id"] + 1
        rng = random.Random(f"partner:{self._seed}:{partner_id}")
        city, post_code = rng.choice(_CITIES)
        name = fields.get("name") or f"Új Partner {partner_id - partners[0].partner['id'] + 1} Kft."
        partner = {
            "id": partner_id,
            "name": name,
            "address": {"country_code": "HU", "post_code": post_code, "city": city,
                        "address": f"{rng.choice(_STREETS)} {rng.randint(1, 120)}."},
            "emails": [f"info@{_slug(name.rsplit(' ', 1)[0])}.hu"],
            "taxcode": _hu_tax_number(rng, vat_code="2"),
            "iban": "",
            "swift": "",
            "account_number": "",
            "phone": "",
            "tax_type": "HAS_TAX_NUMBER",
            "general_ledger_number": "",
            "custom_billing_settings": _billing_settings("wire_transfer", 8, "HUF", "hu"),
            "group_member_tax_number": "",
        }
        partner.update(copy.deepcopy(dict(fields)))
        stored = _StoredPartner(partner, now)
        partners.append(stored)
        self._partners_by_id[partner_id] = stored
        self.changed_partner_ids.add(partner_id)
        return partner

    def update_partner(self, partner_id: int, changes: Mapping[str, Any], *, now: datetime.datetime) -> dict[str, Any]:
        _check_partner_fields(changes)
        if "id" in changes:
            raise ValueError("a partner's id cannot be changed")
        self._stored_partners()
        stored = self._partners_by_id.get(partner_id)
        if stored is None:
            raise KeyError(f"no partner {partner_id}")
        stored.partner = {**stored.partner, **copy.deepcopy(dict(changes))}
        stored.modified_at = now
        self.changed_partner_ids.add(partner_id)
        # A spending shows its partner as the partner is now (documents keep what they were issued with).
        for spending in self._spendings or ():
            if spending["partner"].get("id") == partner_id:
                self._replace_spending({**spending, "partner": spending_partner(stored.partner)})
        return stored.partner

    def delete_partner(self, partner_id: int) -> None:
        """``DELETE /partners/{id}``: gone from the list; documents and spendings keep what they show."""
        partners = self._stored_partners()
        if partner_id in self._supplier_ids:
            raise ValueError(f"partner {partner_id} is a supplier the spendings are drawn from")
        stored = self._partners_by_id.pop(partner_id, None)
        if stored is None:
            raise KeyError(f"no partner {partner_id}")
        partners.remove(stored)

    def _stored_partners(self) -> list[_StoredPartner]:
        if self._partners is None:
            records = self._factory.partner_records()
            rng = random.Random(f"suppliers:{self._seed}")
            next_id = records[-1]["id"] + 1
            for supplier in _SUPPLIERS:
                records.append(_supplier_partner(rng, supplier, next_id))
                self._supplier_ids.append(next_id)
                next_id += 1
            self._partners = [_StoredPartner(record, self._history_end) for record in records]
            self._partners_by_id = {stored.partner["id"]: stored for stored in self._partners}
        return self._partners

    # -- spendings -------------------------------------------------------------------------------

    def spendings_by_due_date(self) -> list[dict[str, Any]]:
        return sorted(self._stored_spendings(), key=lambda s: (str(s.get("due_date")), s["id"]))

    def spending(self, spending_id: int) -> dict[str, Any] | None:
        self._stored_spendings()
        return self._spendings_by_id.get(spending_id)

    def add_spending(
        self, *, partner_id: int | None, invoice_date: datetime.date, today: datetime.date,
        overrides: Mapping[str, Any],
    ) -> dict[str, Any]:
        if "id" in overrides:
            raise ValueError("the id of a new spending is assigned by the simulator")
        spendings = self._stored_spendings()
        if partner_id is None:
            index = self._pick_supplier(self._spending_rng)
            supplier, partner = _SUPPLIERS[index], self.partner(self._supplier_ids[index])
        else:
            partner = self.partner(partner_id)
            if partner is None:
                raise KeyError(f"no partner {partner_id}")
            # A customer who also sells to us bills like a domestic wholesaler.
            supplier = next((s for s, i in zip(_SUPPLIERS, self._supplier_ids) if i == partner_id), _SUPPLIERS[5])
        spending = self._new_spending(self._spending_rng, supplier, partner, invoice_date=invoice_date, today=today,
                                      spending_id=self._first_id + SPENDING_ID_OFFSET + len(spendings))
        spending.update(copy.deepcopy(dict(overrides)))
        spendings.append(spending)
        self._spendings_by_id[spending["id"]] = spending
        return spending

    def pay_spending(self, spending_id: int, paid_at: datetime.date | None) -> dict[str, Any]:
        spending = self.spending(spending_id)
        if spending is None:
            raise KeyError(f"no spending {spending_id}")
        updated = {**spending, "paid_at": paid_at.isoformat() if paid_at else None}
        self._replace_spending(updated)
        return updated

    def update_spending(self, spending_id: int, changes: Mapping[str, Any]) -> dict[str, Any]:
        if "id" in changes:
            raise ValueError("a spending's id cannot be changed")
        spending = self.spending(spending_id)
        if spending is None:
            raise KeyError(f"no spending {spending_id}")
        updated = {**spending, **copy.deepcopy(dict(changes))}
        self._replace_spending(updated)
        return updated

    def _replace_spending(self, spending: dict[str, Any]) -> None:
        spendings = self._stored_spendings()
        old = self._spendings_by_id[spending["id"]]
        spendings[spendings.index(old)] = spending
        self._spendings_by_id[spending["id"]] = spending

    def _stored_spendings(self) -> list[dict[str, Any]]:
        if self._spendings is None:
            self._stored_partners()
            rng = self._spending_rng
            count = min(max(_MIN_SPENDINGS, self._document_count // 4), _MAX_SPENDINGS)
            history_days = min(max(self._document_count, _MIN_HISTORY_DAYS), _MAX_HISTORY_DAYS)
            offsets = sorted((rng.randint(0, history_days - 1) for _ in range(count)), reverse=True)
            first = self._first_id + SPENDING_ID_OFFSET
            spendings = []
            for number, offset in enumerate(offsets):
                index = self._pick_supplier(rng)
                spendings.append(self._new_spending(
                    rng, _SUPPLIERS[index], self.partner(self._supplier_ids[index]),
                    invoice_date=self._created_on - datetime.timedelta(days=offset), today=self._created_on,
                    spending_id=first + number,
                ))
            self._spendings = spendings
            self._spendings_by_id = {s["id"]: s for s in spendings}
        return self._spendings

    @staticmethod
    def _pick_supplier(rng: random.Random) -> int:
        return rng.choices(range(len(_SUPPLIERS)), weights=[s.weight for s in _SUPPLIERS])[0]

    def _new_spending(
        self,
        rng: random.Random,
        supplier: _Supplier,
        partner: dict[str, Any],
        *,
        invoice_date: datetime.date,
        today: datetime.date,
        spending_id: int,
    ) -> dict[str, Any]:
        if supplier.currency == "HUF":
            rate, step = Decimal(1), _HUF_STEP
            net = Decimal(round(rng.randint(supplier.min_net, supplier.max_net), -1))
        else:
            rate, step = Decimal(str(round(rng.uniform(380, 410), 2))), _EUR_STEP
            net = Decimal(rng.randint(supplier.min_net * 100, supplier.max_net * 100)) / 100
        vat = (net * _vat_rate(supplier.vat)).quantize(step, ROUND_HALF_UP)
        gross = net + vat
        immediate = supplier.payment_method in _IMMEDIATE_SPENDING_METHODS
        due_date = invoice_date if immediate else invoice_date + datetime.timedelta(days=supplier.due_days)
        if immediate:
            paid_at: datetime.date | None = invoice_date
        elif due_date < today:
            paid_at = _day_between(rng, invoice_date, min(today, due_date + datetime.timedelta(days=10))) \
                if rng.random() < 0.9 else None
        else:
            paid_at = _day_between(rng, invoice_date, today) if rng.random() < 0.3 else None
        year_key = (supplier.number_prefix, invoice_date.year)
        number = self._invoice_numbers.get(year_key) or rng.randint(100, 5_000)
        self._invoice_numbers[year_key] = number + 1
        roll = rng.random()
        comment = None if roll < 0.6 else "" if roll < 0.8 else rng.choice(_SPENDING_COMMENTS)
        return {
            "id": spending_id,
            "organization_id": self.organization_id,
            "category": supplier.category,
            "comment": comment,
            "conversion_rate": _json_number(rate),
            "currency": supplier.currency,
            "due_date": due_date.isoformat(),
            "fulfillment_date": (invoice_date - datetime.timedelta(days=rng.choice((0, 0, 0, 1, 5)))).isoformat(),
            "invoice_date": invoice_date.isoformat(),
            "invoice_number": f"{supplier.number_prefix}-{invoice_date.year}-{number:05d}",
            # Billingo imports incoming invoices that Hungarian suppliers reported to NAV.
            "is_created_by_nav": supplier.country_code == "HU" and rng.random() < 0.5,
            "paid_at": paid_at.isoformat() if paid_at else None,
            "partner": spending_partner(partner),
            "payment_method": supplier.payment_method,
            "total_gross": _json_number(gross),
            "total_gross_local": _json_number((gross * rate).quantize(_HUF_STEP, ROUND_HALF_UP)),
            "total_vat_amount": _json_number(vat),
            "total_vat_amount_local": _json_number((vat * rate).quantize(_HUF_STEP, ROUND_HALF_UP)),
        }

    # -- payment histories -----------------------------------------------------------------------

    def payments(self, document: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The document's payment history: the one recorded, else the one its state implies."""
        recorded = self._payments.get(document.get("id"))  # type: ignore[arg-type]
        if recorded is not None:
            return recorded
        return generated_payments(self._seed, document)

    def set_payments(self, document_id: int, history: list[dict[str, Any]]) -> None:
        self._payments[document_id] = history

    def forget_payments(self, document_id: int) -> None:
        self._payments.pop(document_id, None)

    # -- reference data --------------------------------------------------------------------------

    def bank_accounts_newest_first(self) -> list[dict[str, Any]]:
        main = self._factory.organization["bank_account"]
        rng = random.Random(f"bank-accounts:{self._seed}")
        bank_code = main["account_number"][:3]
        eur_account = _hu_account_number(rng, bank_code)
        accounts = [
            {**main, "currency": "HUF"},
            {"id": main["id"] + 1, "name": f"{main['name']} EUR", "account_number": eur_account,
             "account_number_iban": _iban("HU", eur_account.replace("-", "")), "swift": main["swift"],
             "currency": "EUR"},
        ]
        return list(reversed(accounts))

    def bank_account(self, account_id: int) -> dict[str, Any] | None:
        return next((a for a in self.bank_accounts_newest_first() if a["id"] == account_id), None)

    def document_blocks_newest_first(self) -> list[dict[str, Any]]:
        main_id, proforma_id = self._factory.block_ids
        prefix = self._factory.invoice_prefix
        blocks = [
            (main_id, "Számlatömb", prefix, "invoice"),
            (proforma_id, "Díjbekérő tömb", f"D-{prefix}", "invoice"),
            (proforma_id + 1, "Árajánlatok", f"AJ-{prefix}", "offer"),
            (proforma_id + 2, "Szállítólevelek", f"SZL-{prefix}", "waybill"),
        ]
        return [{"id": block_id, "name": name, "prefix": block_prefix, "type": block_type,
                 "custom_field1": "", "custom_field2": ""}
                for block_id, name, block_prefix, block_type in reversed(blocks)]


# -- payments --------------------------------------------------------------------------------------


def generated_payments(seed: int | str, document: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The payment history a generated document's state implies (deterministic per document).

    ``paid``: one to three payments that add up to ``gross_total``; ``partially_paid``: one or two
    that add up to 20-80% of it; the last payment is on ``paid_date``. Anything else, or a document
    whose amounts or dates do not parse (a test corrupted it), has none.
    """
    status = document.get("payment_status")
    if status not in _PAID_STATUSES:
        return []
    try:
        gross = _decimal(document["gross_total"])
        invoice_day = datetime.date.fromisoformat(document["invoice_date"])
        paid_day = datetime.date.fromisoformat(document["paid_date"])
        rate = _decimal(document["conversion_rate"])
    except (KeyError, TypeError, ValueError, InvalidOperation):
        return []
    if gross <= 0:
        return []
    step = money_step(document)
    rng = random.Random(f"payments:{seed}:{document.get('id')}")
    if status == "paid":
        amount, count = gross, _weighted(rng, ((1, 85), (2, 12), (3, 3)))
    else:
        amount = (gross * Decimal(str(round(rng.uniform(0.2, 0.8), 4)))).quantize(step, ROUND_HALF_UP)
        amount = min(max(amount, step), gross - step)
        if amount <= 0:
            return []
        count = _weighted(rng, ((1, 70), (2, 30)))
    parts = _split(rng, amount, count, step)
    first_day = min(invoice_day, paid_day)
    days = sorted(_day_between(rng, first_day, paid_day) for _ in parts[1:]) + [paid_day]
    method = document.get("payment_method")
    method = method if method in PAYMENT_METHODS else "other"
    history = []
    for day, price in zip(days, parts):
        day_rate = rate if day == invoice_day or rate == 1 else Decimal(str(round(float(rate) * rng.uniform(0.98, 1.02), 2)))
        history.append(payment_entry(day, price, method, voucher_number=_voucher_number(rng, method, day),
                                     conversion_rate=day_rate))
    return history


def payment_entry(
    day: datetime.date | str,
    price: Decimal | int | float | str,
    payment_method: str,
    *,
    voucher_number: str | None = None,
    conversion_rate: Decimal | int | float | str | None = 1,
) -> dict[str, Any]:
    """One ``PaymentHistory`` object of the spec."""
    return {
        "date": day if isinstance(day, str) else day.isoformat(),
        "price": _json_number(_decimal(price) if not isinstance(price, Decimal) else price),
        "payment_method": payment_method,
        "voucher_number": voucher_number,
        "conversion_rate": None if conversion_rate is None else _json_number(
            conversion_rate if isinstance(conversion_rate, Decimal) else _decimal(conversion_rate)),
    }


def paid_total(history: Iterable[Mapping[str, Any]]) -> Decimal:
    return sum((_decimal(entry["price"]) for entry in history), Decimal(0))


def money_step(document: Mapping[str, Any]) -> Decimal:
    """The smallest amount of the document's currency: whole forints, else cents."""
    return _HUF_STEP if document.get("currency") == "HUF" else _EUR_STEP


def _split(rng: random.Random, amount: Decimal, count: int, step: Decimal) -> list[Decimal]:
    """``amount`` cut into at most ``count`` positive parts that add up to it exactly."""
    parts: list[Decimal] = []
    remaining = amount
    for _ in range(count - 1):
        share = (remaining * Decimal(str(round(rng.uniform(0.3, 0.7), 4)))).quantize(step, ROUND_HALF_UP)
        if share <= 0 or share >= remaining:
            break
        parts.append(share)
        remaining -= share
    parts.append(remaining)
    return parts


def _voucher_number(rng: random.Random, method: str, day: datetime.date) -> str | None:
    """A bank statement reference for transfers, a cash voucher number for cash, else none."""
    if method in _TRANSFER_METHODS:
        return f"{day:%Y%m%d}-{rng.randint(100_000, 999_999)}"
    if method == "cash":
        return f"PB-{day.year}-{rng.randint(1, 9_999):05d}"
    return None


# -- partners --------------------------------------------------------------------------------------


def spending_partner(partner: Mapping[str, Any]) -> dict[str, Any]:
    """A ``Partner`` as a spending names it (the spec's ``SpendingPartner``: ``tax_code``, not ``taxcode``)."""
    return {
        "id": partner["id"],
        "name": partner.get("name", ""),
        "address": copy.deepcopy(partner.get("address")),
        "tax_code": partner.get("taxcode", ""),
        "iban": partner.get("iban", ""),
        "swift": partner.get("swift", ""),
        "account_number": partner.get("account_number", ""),
        "phone": partner.get("phone", ""),
        "group_member_tax_number": partner.get("group_member_tax_number", ""),
        "internal_comment": "",
    }


def document_partner(partner: Mapping[str, Any]) -> dict[str, Any]:
    """A ``Partner`` as a new document names it (``DocumentPartner``: no billing settings)."""
    keys = ("id", "name", "address", "emails", "taxcode", "iban", "swift", "account_number", "phone", "tax_type")
    return {key: copy.deepcopy(partner[key]) for key in keys if key in partner}


def _supplier_partner(rng: random.Random, supplier: _Supplier, partner_id: int) -> dict[str, Any]:
    if supplier.country_code == "HU":
        bank_name, bank_code, swift = rng.choice(_BANKS)
        account = _hu_account_number(rng, bank_code)
        city, post_code = rng.choice(_CITIES)
        street = f"{rng.choice(_STREETS)} {rng.randint(1, 120)}."
        iban = _iban("HU", account.replace("-", ""))
        # A VAT group member invoices under the group's number (VAT code 5) and names its own (code 4).
        taxcode = _hu_tax_number(rng, vat_code="5" if supplier.vat_group_member else "2")
        group_member = _hu_tax_number(rng, vat_code="4") if supplier.vat_group_member else ""
        domain = f"{_slug(supplier.name.rsplit(' ', 1)[0])}.hu"
        phone = f"+36 1 {rng.randint(100, 999)} {rng.randint(1000, 9999)}"
        tax_type, language = "HAS_TAX_NUMBER", "hu"
    else:
        post_code, city, street, swift, language = _FOREIGN_SUPPLIER_PLACES[supplier.country_code]
        vat_prefix, vat_digits, bban_length, phone_code = _FOREIGN_FORMATS[supplier.country_code]
        account, group_member = "", ""
        iban = _iban(supplier.country_code, _digits(rng, bban_length))
        taxcode = vat_prefix + _digits(rng, vat_digits)
        domain = f"{_slug(supplier.name.split(' ')[0])}.{supplier.country_code.lower()}"
        phone = f"+{phone_code} {rng.randint(100, 999)} {rng.randint(100000, 999999)}"
        tax_type = "FOREIGN"
    return {
        "id": partner_id,
        "name": supplier.name,
        "address": {"country_code": supplier.country_code, "post_code": post_code, "city": city, "address": street},
        "emails": [f"szamla@{domain}"],
        "taxcode": taxcode,
        "iban": iban,
        "swift": swift,
        "account_number": account,
        "phone": phone,
        "tax_type": tax_type,
        "general_ledger_number": "",
        "custom_billing_settings": _billing_settings(supplier.payment_method, supplier.due_days, supplier.currency,
                                                     language),
        "group_member_tax_number": group_member,
    }


def _billing_settings(payment_method: str, due_days: int, currency: str, language: str) -> dict[str, Any]:
    return {"payment_method": payment_method, "document_form": "electronic", "due_days": due_days,
            "document_currency": currency, "template_language_code": language,
            "discount": {"type": "percent", "value": 0}}


def _check_partner_fields(fields: Mapping[str, Any]) -> None:
    unknown = set(fields) - PARTNER_FIELDS
    if unknown:
        raise ValueError(f"not fields of a Partner: {', '.join(sorted(unknown))}")
