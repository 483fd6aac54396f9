"""Deterministic, realistic Billingo API v3 ``Document`` objects.

Every value comes from one ``random.Random(seed)``; the only date input is ``today`` (documents are
dated relative to it). The same seed and ``today`` therefore always give byte-identical JSON, which
lets tests, the demo and benchmarks share fixtures without storing them.

The shape follows the ``Document`` schema of the published spec (v3.0.14) field by field. Where the
spec and the live API disagree, the spec wins, with one deliberate exception copied from the live
API: unpaid documents carry today's date in ``paid_date``.

Amounts are computed with ``Decimal`` and emitted as JSON integers for HUF and as 2-decimal numbers
for EUR, the way Billingo sends them. Every document is internally consistent: item net = round(unit
price x quantity), item gross = net + VAT, the summary sums the items and ``gross_total`` equals the
item gross sum except for HUF cash rounding (``settings.round``).
"""

from __future__ import annotations

import copy
import datetime
import random
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from itertools import cycle
from typing import Any
from zoneinfo import ZoneInfo

BUDAPEST = ZoneInfo("Europe/Budapest")

# The spec's enums (v3.0.14). The simulator must only ever emit these values.
PAYMENT_STATUSES = ("expired", "none", "outstanding", "paid", "partially_paid")
UNPAID_STATUSES = frozenset({"expired", "none", "outstanding"})
DOCUMENT_TYPES = (
    "advance", "cancellation", "cert_of_completion", "d_cert_of_completion", "dossier", "draft", "draft_offer",
    "draft_order_form", "draft_waybill", "invoice", "modification", "offer", "order_form", "proforma", "receipt",
    "receipt_cancellation", "waybill",
)
PAYMENT_METHODS = (
    "aruhitel", "bankcard", "barion", "barter", "cash", "cash_on_delivery", "coupon", "elore_utalas",
    "ep_kartya", "kompenzacio", "levonas", "online_bankcard", "other", "paylike", "payoneer", "paypal",
    "paypal_utolag", "payu", "pick_pack_pont", "postai_csekk", "postautalvany", "skrill", "szep_card",
    "transferwise", "upwork", "utalvany", "valto", "wire_transfer",
)

# Offsets inside one organization's id range: documents count up from ``first_id``, products and
# partners live further up so that no id of one kind can collide with another of the same range.
PRODUCT_ID_OFFSET = 8_000_000
PARTNER_ID_OFFSET = 9_000_000

# Methods whose money arrives at the counter: the due date is the invoice date.
_IMMEDIATE_METHODS = frozenset({
    "bankcard", "barion", "cash", "coupon", "ep_kartya", "online_bankcard", "paylike", "paypal", "payu",
    "skrill", "szep_card", "utalvany",
})
_COMMON_METHODS = (("wire_transfer", 50), ("cash", 12), ("bankcard", 10), ("online_bankcard", 3),
                   ("elore_utalas", 3), ("szep_card", 2))
# The share of documents paid with one of the remaining (rare) methods. Rare methods are handed out
# in rotation rather than by independent draws so that a few hundred documents show every one.
_RARE_METHOD_SHARE = 0.2

_DOCUMENT_TYPES = (("invoice", 82), ("proforma", 7), ("advance", 4), ("draft", 4))
_CANCELLATION_SHARE = 0.03
# About one document per day, over at least a month and at most a year: small organizations then
# still have invoices that are not yet due, as real small companies do.
_MIN_HISTORY_DAYS = 30
_MAX_HISTORY_DAYS = 365

_HUF_STEP = Decimal("1")
_EUR_STEP = Decimal("0.01")

_BANKS = (
    ("OTP Bank", "117", "OTPVHUHB"), ("K&H Bank", "104", "OKHBHUHB"), ("Erste Bank", "116", "GIBAHUHB"),
    ("CIB Bank", "107", "CIBHHUHB"), ("Raiffeisen Bank", "120", "UBRTHUHB"),
    ("UniCredit Bank", "109", "BACXHUHB"), ("MBH Bank", "103", "MKKBHUHB"),
)
_CITIES = (
    ("Budapest", "1052"), ("Budapest", "1065"), ("Budapest", "1117"), ("Budapest", "1134"),
    ("Budapest", "1024"), ("Budapest", "1138"), ("Budapest", "1203"), ("Debrecen", "4024"),
    ("Szeged", "6720"), ("Miskolc", "3525"), ("Pécs", "7621"), ("Győr", "9021"), ("Nyíregyháza", "4400"),
    ("Kecskemét", "6000"), ("Székesfehérvár", "8000"), ("Szombathely", "9700"), ("Szolnok", "5000"),
    ("Veszprém", "8200"), ("Eger", "3300"), ("Sopron", "9400"), ("Zalaegerszeg", "8900"),
    ("Kaposvár", "7400"), ("Érd", "2030"), ("Gödöllő", "2100"), ("Siófok", "8600"), ("Vác", "2600"),
)
_STREETS = (
    "Fő utca", "Kossuth Lajos utca", "Petőfi Sándor utca", "Rákóczi út", "Váci út", "Andrássy út",
    "Dózsa György út", "Széchenyi tér", "Ady Endre utca", "Bartók Béla út", "Árpád fejedelem útja",
    "Jókai Mór utca", "Deák Ferenc tér", "Szent István körút", "Hunyadi János utca",
)
# Tax office (county) codes that end a Hungarian tax number: 02-20 counties, 41-44 Budapest.
_COUNTY_CODES = ("41", "42", "43", "44", "02", "03", "05", "07", "08", "09", "13", "14", "15", "16", "19", "20")
_COMPANY_PLACES = (
    "Dunamenti", "Tiszai", "Pannon", "Mátra", "Alföldi", "Bakonyi", "Kárpát", "Hungária", "Zöldmező",
    "Napfény", "Balatoni", "Hegyvidék", "Aranykalász", "Csillag", "Vértes", "Rába", "Sóskúti", "Kelet-Pest",
)
_COMPANY_TRADES = (
    "Építő", "Kereskedelmi", "Szolgáltató", "Informatikai", "Logisztikai", "Mezőgazdasági", "Vendéglátó",
    "Ingatlan", "Tanácsadó", "Gépipari", "Nyomdai", "Élelmiszer",
)
_COMPANY_FORMS = (("Kft.", 60), ("Bt.", 25), ("Zrt.", 15))
_SURNAMES = ("Nagy", "Kovács", "Tóth", "Szabó", "Horváth", "Varga", "Kiss", "Molnár", "Németh", "Farkas",
             "Balogh", "Papp", "Takács", "Juhász", "Mészáros", "Simon", "Rácz", "Fekete")
_GIVEN_NAMES = ("Péter", "Anna", "László", "Katalin", "Zoltán", "Éva", "Gábor", "Zsófia", "István",
                "Eszter", "Tamás", "Judit", "Balázs", "Réka", "Attila", "Nóra")
# name, country, post code, city, street address, SWIFT, language
_FOREIGN_PARTNERS = (
    ("Alpenland Handels GmbH", "AT", "1010", "Wien", "Kärntner Straße 21", "BKAUATWW", "de"),
    ("Steiner Technik GmbH", "AT", "8010", "Graz", "Herrengasse 7", "RZSTAT2G", "de"),
    ("Müller & Söhne GmbH", "DE", "80331", "München", "Sendlinger Straße 14", "HYVEDEMM", "de"),
    ("Nordlicht Software GmbH", "DE", "10115", "Berlin", "Invalidenstraße 88", "COBADEFF", "en"),
    ("Tatra Obchod s.r.o.", "SK", "811 01", "Bratislava", "Obchodná 35", "TATRSKBX", "en"),
)
# country -> (EU VAT number prefix, its digit count, IBAN BBAN length, phone country code)
_FOREIGN_FORMATS = {"AT": ("ATU", 8, 16, "43"), "DE": ("DE", 9, 18, "49"), "SK": ("SK", 10, 20, "421")}


@dataclass(frozen=True)
class _Product:
    name: str
    unit: str
    min_price: int  # net unit price range in HUF
    max_price: int
    vat: str
    fractional_quantity: bool  # hours and kilometres come in halves
    weight: int


_CATALOGUE = (
    _Product("Szoftverfejlesztés", "óra", 12_000, 28_000, "27%", True, 14),
    _Product("Informatikai tanácsadás", "óra", 15_000, 35_000, "27%", True, 10),
    _Product("Rendszerüzemeltetés havidíj", "hó", 60_000, 450_000, "27%", False, 8),
    _Product("Webtárhely szolgáltatás", "hó", 2_500, 15_000, "27%", False, 8),
    _Product("Irodaszer csomag", "csomag", 3_000, 25_000, "27%", False, 8),
    _Product("Nyomtatópatron", "db", 8_000, 32_000, "27%", False, 6),
    _Product("Kiszállítási díj", "alkalom", 1_990, 9_990, "27%", False, 8),
    _Product("Szakkönyv", "db", 3_500, 12_000, "5%", False, 5),
    _Product("Gyógyászati segédeszköz", "db", 4_000, 60_000, "5%", False, 3),
    _Product("Szállásszolgáltatás", "éj", 18_000, 65_000, "18%", False, 4),
    _Product("Tejtermék csomag", "csomag", 1_500, 8_000, "18%", False, 3),
    _Product("Nemzetközi fuvarozás", "km", 250, 600, "0%", True, 4),
    _Product("Oktatási szolgáltatás", "óra", 6_000, 20_000, "AAM", True, 4),
    _Product("Nyelvóra", "óra", 5_000, 12_000, "AAM", True, 3),
)
# Items typed in by hand instead of picked from the product list have no product_id.
_FREE_TEXT_ITEMS = ("Egyedi megállapodás szerinti szolgáltatás", "Helyszíni kiszállás", "Anyagköltség")
_FREE_TEXT_SHARE = 0.15
_ITEM_COUNTS = ((1, 35), (2, 25), (3, 15), (4, 10), (5, 8), (6, 7))
_COMMENTS = ("Köszönjük a megrendelést!", "A fizetési határidő után késedelmi kamatot számítunk fel.",
             "Szerződés szerinti havi díj.", "A teljesítésigazolás alapján.")
_TAGS = ("webshop", "projekt", "ismétlődő", "kiemelt ügyfél", "export")
_NOTIFICATION_STATUSES = (("opened", 35), ("downloaded", 20), ("none", 25), ("readed", 10), ("closed", 5),
                          ("failed", 5))


@dataclass(frozen=True)
class _PartnerProfile:
    id: int
    name: str
    country_code: str
    post_code: str
    city: str
    address: str
    email: str
    taxcode: str
    iban: str
    swift: str
    account_number: str
    phone: str
    tax_type: str
    language: str
    eur_share: float  # how often this partner is invoiced in EUR
    due_days: int


class DocumentFactory:
    """Creates one organization's documents in creation order: ids and invoice numbers only grow.

    The factory keeps its random state, so the simulator can go on adding documents to a generated
    history (``create``) or cancel one (``cancel``) and still be deterministic for a given sequence
    of calls.
    """

    def __init__(
        self,
        seed: int | str,
        *,
        first_id: int = 1,
        organization_name: str = "Minta Kft.",
        tax_code: str | None = None,
        invoice_prefix: str | None = None,
    ):
        self._rng = random.Random(seed)
        self._next_id = first_id
        self.tax_code = tax_code or _hu_tax_number(self._rng, vat_code="2")
        self.organization = self._organization(organization_name)
        self._prefix = invoice_prefix or _invoice_prefix(organization_name)
        self._main_block_id = self._rng.randint(100_000, 899_999)
        self._proforma_block_id = self._main_block_id + 1
        self._numbers: dict[tuple[int, int], int] = {}  # (block id, year) -> last number issued
        self._price_factor = self._rng.uniform(0.85, 1.3)
        self._partners = self._partner_profiles(first_id + PARTNER_ID_OFFSET)
        self._product_first_id = first_id + PRODUCT_ID_OFFSET
        rare_methods = [m for m in PAYMENT_METHODS if m not in dict(_COMMON_METHODS)]
        self._rng.shuffle(rare_methods)
        self._rare_methods: Iterator[str] = cycle(rare_methods)

    # -- public ----------------------------------------------------------------------------------

    @property
    def invoice_prefix(self) -> str:
        """What every invoice number of the main block starts with (``ACME`` in ``ACME-2026-000001``)."""
        return self._prefix

    @property
    def block_ids(self) -> tuple[int, int]:
        """(the main block's id, the proforma block's id): the ``block_id`` documents carry."""
        return self._main_block_id, self._proforma_block_id

    def partner_records(self) -> list[dict[str, Any]]:
        """Every partner documents are issued to, as a ``Partner`` object of the spec (the same
        object documents carry as their deprecated ``partner``), in creation (= id) order."""
        return [_partner(profile) for profile in self._partners]

    def generate(self, count: int, *, today: datetime.date) -> list[dict[str, Any]]:
        """A history of ``count`` documents created up to ``today`` (one a day, at most a year back),
        oldest first.

        About 3% of the slots are cancellations of an earlier invoice: the original comes back
        with ``cancelled: true`` and both documents reference each other in ``related_documents``.
        """
        history_days = min(max(count, _MIN_HISTORY_DAYS), _MAX_HISTORY_DAYS)
        offsets = sorted((self._rng.randint(0, history_days - 1) for _ in range(count)), reverse=True)
        documents: list[dict[str, Any]] = []
        cancellable: list[int] = []  # indexes into documents; order-independent, so removal is O(1)
        for offset in offsets:
            day = today - datetime.timedelta(days=offset)
            if cancellable and self._rng.random() < _CANCELLATION_SHARE:
                position = self._rng.randrange(len(cancellable))
                index = cancellable[position]
                cancellable[position] = cancellable[-1]
                cancellable.pop()
                documents[index], cancellation = self.cancel(documents[index], on=day, today=today)
                documents.append(cancellation)
            else:
                documents.append(self.create(invoice_date=day, today=today))
                if _is_cancellable(documents[-1]):
                    cancellable.append(len(documents) - 1)
        return documents

    def create(self, *, invoice_date: datetime.date, today: datetime.date, **overrides: Any) -> dict[str, Any]:
        """One new document issued on ``invoice_date``; ``overrides`` replace top-level fields."""
        rng = self._rng
        document_type = _weighted(rng, _DOCUMENT_TYPES)
        partner = rng.choice(self._partners)
        currency = "EUR" if rng.random() < partner.eur_share else "HUF"
        conversion_rate = Decimal(str(round(rng.uniform(380, 410), 2))) if currency == "EUR" else Decimal(1)
        method = self._payment_method()
        immediate = method in _IMMEDIATE_METHODS
        due_date = invoice_date if immediate else invoice_date + datetime.timedelta(days=partner.due_days)
        status, paid_on = self._payment(document_type, invoice_date, due_date, today, immediate)
        items = [self._item(currency, conversion_rate) for _ in range(_weighted(rng, _ITEM_COUNTS))]
        if currency == "HUF" and method == "cash":
            rounding = "five" if rng.random() < 0.7 else "one"
        else:
            rounding = "none"
        block_id = self._proforma_block_id if document_type == "proforma" else self._main_block_id
        document = {
            "id": self._take_id(),
            "invoice_number": self._invoice_number(document_type, block_id, invoice_date.year),
            "type": document_type,
            "cancelled": False,
            "block_id": block_id,
            "payment_status": status,
            "payment_method": method,
            "gross_total": None,  # filled in by _with_totals
            "currency": currency,
            "conversion_rate": _json_number(conversion_rate),
            "invoice_date": invoice_date.isoformat(),
            "fulfillment_date": (invoice_date - datetime.timedelta(days=rng.choice((0, 0, 0, 1, 3, 7)))).isoformat(),
            "due_date": due_date.isoformat(),
            # The live API shows today's date for documents that are not (partially) paid.
            "paid_date": (paid_on or today).isoformat(),
            "organization": copy.deepcopy(self.organization),
            "partner": _partner(partner),
            "document_partner": _document_partner(partner),
            "electronic": rng.random() < 0.7,
            "comment": rng.choice(_COMMENTS) if rng.random() < 0.2 else "",
            "tags": sorted(rng.sample(_TAGS, rng.randint(1, 2))) if rng.random() < 0.25 else [],
            "notification_status": "none" if document_type == "draft" else _weighted(rng, _NOTIFICATION_STATUSES),
            "language": partner.language,
            "items": items,
            "summary": None,  # filled in by _with_totals
            "settings": {
                "mediated_service": False,
                "without_financial_fulfillment": False,
                "online_payment": {"online_bankcard": "SimplePay", "barion": "Barion"}.get(method, ""),
                "round": rounding,
                "no_send_onlineszamla_by_user": False,
                "order_number": f"PO-{invoice_date.year}-{rng.randint(1, 9999):04d}" if rng.random() < 0.15 else "",
                "place_id": None,
                "instant_payment": False,
                "selected_type": document_type,
            },
            "online_szamla_status": self._nav_status(document_type, invoice_date, today),
            "related_documents": [],
            "discount": {"type": "percent", "value": 0},
            "correction_type": document_type,
        }
        _with_totals(document)
        document.update(overrides)
        return document

    def cancel(
        self, original: dict[str, Any], *, on: datetime.date, today: datetime.date
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Cancel ``original`` on day ``on``: returns (the updated original, the new cancellation).

        The input is not modified. The cancellation ("sztornó") negates every quantity and amount
        of the original, has no payment obligation (``payment_status: none``) and both documents
        reference each other.
        """
        if not _is_cancellable(original):
            raise ValueError(f"document {original.get('id')} ({original.get('type')}) cannot be cancelled")
        updated = copy.deepcopy(original)
        cancellation = copy.deepcopy(original)
        cancellation.update({
            "id": self._take_id(),
            "invoice_number": self._invoice_number("cancellation", original["block_id"], on.year),
            "type": "cancellation",
            "cancelled": False,
            "payment_status": "none",
            "invoice_date": on.isoformat(),
            "due_date": on.isoformat(),
            "paid_date": today.isoformat(),
            "comment": "",
            "related_documents": [{"id": original["id"], "invoice_number": original["invoice_number"]}],
            "correction_type": "cancellation",
            "online_szamla_status": self._nav_status("cancellation", on, today),
        })
        cancellation["settings"]["selected_type"] = "cancellation"
        for item in cancellation["items"]:
            for key in ("quantity", "net_amount", "vat_amount", "gross_amount"):
                item[key] = -item[key]
        _with_totals(cancellation, rounded_total=-_decimal(original["gross_total"]))
        updated["cancelled"] = True
        updated["correction_type"] = "canceled"
        updated["related_documents"].append({"id": cancellation["id"], "invoice_number": cancellation["invoice_number"]})
        return updated, cancellation

    # -- building blocks -------------------------------------------------------------------------

    def _take_id(self) -> int:
        document_id = self._next_id
        self._next_id += 1
        return document_id

    def _invoice_number(self, document_type: str, block_id: int, year: int) -> str:
        if document_type == "draft":
            return ""  # drafts get their number only when they are issued
        number = self._numbers.get((block_id, year), 0) + 1
        self._numbers[(block_id, year)] = number
        prefix = f"D-{self._prefix}" if block_id == self._proforma_block_id else self._prefix
        return f"{prefix}-{year}-{number:06d}"

    def _payment_method(self) -> str:
        if self._rng.random() < _RARE_METHOD_SHARE:
            return next(self._rare_methods)
        return _weighted(self._rng, _COMMON_METHODS)

    def _payment(
        self,
        document_type: str,
        invoice_date: datetime.date,
        due_date: datetime.date,
        today: datetime.date,
        immediate: bool,
    ) -> tuple[str, datetime.date | None]:
        """(payment_status, real payment date or None when unpaid)."""
        rng = self._rng
        if document_type == "draft":
            return "none", None
        if immediate and rng.random() < 0.95:
            return "paid", invoice_date
        roll = rng.random()
        if due_date < today:
            if roll < 0.82:
                return "paid", _day_between(rng, invoice_date, min(today, due_date + datetime.timedelta(days=20)))
            if roll < 0.88:
                return "partially_paid", _day_between(rng, invoice_date, today)
            return "expired", None
        if roll < 0.35:
            return "paid", _day_between(rng, invoice_date, today)
        if roll < 0.40:
            return "partially_paid", _day_between(rng, invoice_date, today)
        return "outstanding", None

    def _nav_status(self, document_type: str, invoice_date: datetime.date, today: datetime.date) -> str:
        """Only issued invoices are reported to NAV (the tax authority's Online Számla system)."""
        if document_type in ("draft", "proforma"):
            return "not_checked"
        if (today - invoice_date).days < 1:
            return self._rng.choice(("processing", "received", "done"))
        return "nav_warn" if self._rng.random() < 0.02 else "done"

    def _item(self, currency: str, conversion_rate: Decimal) -> dict[str, Any]:
        rng = self._rng
        if rng.random() < _FREE_TEXT_SHARE:
            product_id = None
            product = _Product(rng.choice(_FREE_TEXT_ITEMS), "db", 2_000, 80_000, "27%", False, 0)
        else:
            index = rng.choices(range(len(_CATALOGUE)), weights=[p.weight for p in _CATALOGUE])[0]
            product_id = self._product_first_id + index
            product = _CATALOGUE[index]
        huf_price = Decimal(round(rng.randint(product.min_price, product.max_price) * self._price_factor, -1))
        step = _EUR_STEP if currency == "EUR" else _HUF_STEP
        unit_price = (huf_price / conversion_rate).quantize(step, ROUND_HALF_UP)
        if product.fractional_quantity:
            quantity = Decimal(rng.choice(("0.5", "1", "1.5", "2", "2.5", "4", "8", "12.5", "16", "40")))
        else:
            quantity = Decimal(rng.choice((1, 1, 1, 2, 2, 3, 5, 10)))
        net = (unit_price * quantity).quantize(step, ROUND_HALF_UP)
        vat = (net * _vat_rate(product.vat)).quantize(step, ROUND_HALF_UP)
        item: dict[str, Any] = {
            "product_id": product_id,
            "name": product.name,
            "net_unit_amount": _json_number(unit_price),
            "quantity": _json_number(quantity),
            "unit": product.unit,
            "net_amount": _json_number(net),
            "gross_amount": _json_number(net + vat),
            "vat": product.vat,
            "vat_amount": _json_number(vat),
            "comment": "",
        }
        # The live API sends `entitlement: null` for taxable items, but the spec's Entitlement enum
        # is not nullable: the key is left out instead, which the spec allows.
        if product.vat == "AAM":
            item["entitlement"] = "AAM"
        return item

    def _organization(self, name: str) -> dict[str, Any]:
        rng = self._rng
        bank_name, bank_code, swift = rng.choice(_BANKS)
        account = _hu_account_number(rng, bank_code)
        city, post_code = rng.choice(_CITIES)
        return {
            "name": name,
            "tax_number": self.tax_code,
            "bank_account": {
                "id": rng.randint(10_000, 99_999),
                "name": bank_name,
                "account_number": account,
                "account_number_iban": _iban("HU", account.replace("-", "")),
                "swift": swift,
            },
            "address": {"country_code": "HU", "post_code": post_code, "city": city,
                        "address": f"{rng.choice(_STREETS)} {rng.randint(1, 120)}."},
            "small_taxpayer": False,
            "ev_number": "",
            "eu_tax_number": "HU" + self.tax_code[:8],
            "cash_settled": False,
        }

    def _partner_profiles(self, first_partner_id: int) -> list[_PartnerProfile]:
        rng = self._rng
        profiles: list[_PartnerProfile] = []
        names: set[str] = set()
        while len(names) < 24:
            names.add(f"{rng.choice(_COMPANY_PLACES)} {rng.choice(_COMPANY_TRADES)} {_weighted(rng, _COMPANY_FORMS)}")
        for name in sorted(names):
            bank_name, bank_code, swift = rng.choice(_BANKS)
            account = _hu_account_number(rng, bank_code)
            city, post_code = rng.choice(_CITIES)
            profiles.append(_PartnerProfile(
                id=first_partner_id + len(profiles), name=name, country_code="HU", post_code=post_code,
                city=city, address=f"{rng.choice(_STREETS)} {rng.randint(1, 120)}.",
                email=f"szamlazas@{_slug(name.rsplit(' ', 1)[0])}.hu", taxcode=_hu_tax_number(rng, vat_code="2"),
                iban=_iban("HU", account.replace("-", "")), swift=swift, account_number=account,
                phone=f"+36 {rng.choice(('1', '20', '30', '70'))} {rng.randint(100, 999)} {rng.randint(1000, 9999)}",
                tax_type="HAS_TAX_NUMBER", language="hu", eur_share=0.08, due_days=rng.choice((8, 15, 15, 30, 30, 45)),
            ))
        for _ in range(4):
            city, post_code = rng.choice(_CITIES)
            name = f"{rng.choice(_SURNAMES)} {rng.choice(_GIVEN_NAMES)}"
            profiles.append(_PartnerProfile(
                id=first_partner_id + len(profiles), name=name, country_code="HU", post_code=post_code,
                city=city, address=f"{rng.choice(_STREETS)} {rng.randint(1, 120)}.",
                email=f"{_slug(name).replace('-', '.')}@gmail.com", taxcode="", iban="", swift="", account_number="",
                phone=f"+36 {rng.choice(('20', '30', '70'))} {rng.randint(100, 999)} {rng.randint(1000, 9999)}",
                tax_type="NO_TAX_NUMBER", language="hu", eur_share=0.0, due_days=8,
            ))
        for name, country, post_code, city, street, swift, language in _FOREIGN_PARTNERS:
            vat_prefix, vat_digits, bban_length, phone_code = _FOREIGN_FORMATS[country]
            profiles.append(_PartnerProfile(
                id=first_partner_id + len(profiles), name=name, country_code=country, post_code=post_code,
                city=city, address=street, email=f"accounting@{_slug(name.split(' ')[0])}.{country.lower()}",
                taxcode=vat_prefix + _digits(rng, vat_digits), iban=_iban(country, _digits(rng, bban_length)),
                swift=swift, account_number="",
                phone=f"+{phone_code} {rng.randint(100, 999)} {rng.randint(100000, 999999)}",
                tax_type="FOREIGN", language=language, eur_share=0.85, due_days=30,
            ))
        return profiles


def generate_documents(
    seed: int | str,
    count: int,
    *,
    first_id: int = 1,
    today: datetime.date | None = None,
    organization_name: str = "Minta Kft.",
    tax_code: str | None = None,
    invoice_prefix: str | None = None,
) -> list[dict[str, Any]]:
    """``count`` spec-conformant Billingo documents, oldest (lowest id) first.

    ``today`` anchors every date (documents lead up to it, unpaid ones show it as
    ``paid_date``). When omitted, today's date in Budapest is used, which is the only wall-clock
    read in this module: pass ``today`` for output that is identical on every run.
    """
    factory = DocumentFactory(
        seed, first_id=first_id, organization_name=organization_name, tax_code=tax_code,
        invoice_prefix=invoice_prefix,
    )
    return factory.generate(count, today=today or datetime.datetime.now(BUDAPEST).date())


# -- helpers ---------------------------------------------------------------------------------------


def _is_cancellable(document: dict[str, Any]) -> bool:
    return document.get("type") in ("invoice", "advance") and not document.get("cancelled")


def _with_totals(document: dict[str, Any], *, rounded_total: Decimal | None = None) -> None:
    """Fill ``summary`` and ``gross_total`` from the items (and the cash rounding setting)."""
    rate = _decimal(document["conversion_rate"])
    by_vat: dict[str, dict[str, Decimal]] = {}
    for item in document["items"]:
        sums = by_vat.setdefault(item["vat"], {"net": Decimal(0), "vat": Decimal(0), "gross": Decimal(0)})
        sums["net"] += _decimal(item["net_amount"])
        sums["vat"] += _decimal(item["vat_amount"])
        sums["gross"] += _decimal(item["gross_amount"])
    net = sum((s["net"] for s in by_vat.values()), Decimal(0))
    vat = sum((s["vat"] for s in by_vat.values()), Decimal(0))
    gross = net + vat
    rate_summaries = []
    vat_local_total = Decimal(0)
    for vat_name, sums in by_vat.items():
        vat_local = (sums["vat"] * rate).quantize(_HUF_STEP, ROUND_HALF_UP)
        vat_local_total += vat_local
        rate_summaries.append({
            "vat_name": vat_name,
            "vat_percentage": float(_vat_rate(vat_name)),
            "vat_rate_net_amount": _json_number(sums["net"]),
            "vat_rate_vat_amount": _json_number(sums["vat"]),
            "vat_rate_vat_amount_local": int(vat_local),
            "vat_rate_gross_amount": _json_number(sums["gross"]),
        })
    net_local = (net * rate).quantize(_HUF_STEP, ROUND_HALF_UP)
    document["summary"] = {
        "net_amount": _json_number(net),
        "net_amount_local": int(net_local),
        "gross_amount_local": int(net_local + vat_local_total),
        "vat_amount": _json_number(vat),
        "vat_amount_local": int(vat_local_total),
        "vat_rate_summary": rate_summaries,
    }
    if rounded_total is None:
        rounded_total = _cash_round(gross, document["settings"]["round"])
    document["gross_total"] = _json_number(rounded_total)


def _cash_round(amount: Decimal, rounding: str) -> Decimal:
    """Hungarian cash rounding: to the nearest 1, 5 or 10 forint, halves upwards."""
    unit = {"none": None, "one": Decimal(1), "five": Decimal(5), "ten": Decimal(10)}[rounding]
    if unit is None:
        return amount
    return (amount / unit).quantize(Decimal(1), ROUND_HALF_UP) * unit


def _vat_rate(vat: str) -> Decimal:
    """"27%" -> 0.27, "5,5%" -> 0.055; exempt codes such as "AAM" carry no VAT."""
    if not vat.endswith("%"):
        return Decimal(0)
    return Decimal(vat[:-1].replace(",", ".")) / 100


def _decimal(value: int | float) -> Decimal:
    return Decimal(str(value))


def _json_number(value: Decimal) -> int | float:
    """Whole numbers as JSON integers (every HUF amount), others as floats (EUR cents, 1.5 hours)."""
    if value == value.to_integral_value():
        return int(value)
    return float(value)


def _weighted(rng: random.Random, choices: tuple[tuple[Any, int], ...]) -> Any:
    values, weights = zip(*choices)
    return rng.choices(values, weights=weights)[0]


def _digits(rng: random.Random, count: int) -> str:
    return "".join(str(rng.randint(0, 9)) for _ in range(count))


def _day_between(rng: random.Random, first: datetime.date, last: datetime.date) -> datetime.date:
    return first + datetime.timedelta(days=rng.randint(0, max((last - first).days, 0)))


def _check_digit(digits: list[int]) -> int:
    """The 9-7-3-1 weighted check digit of Hungarian tax and bank account numbers."""
    weights = (9, 7, 3, 1) * 2
    return (-sum(d * w for d, w in zip(digits, weights))) % 10


def _hu_tax_number(rng: random.Random, *, vat_code: str) -> str:
    """``12345678-2-42``: 7 digits + check digit, VAT status code, tax office code."""
    digits = [rng.randint(1, 9)] + [rng.randint(0, 9) for _ in range(6)]
    base = "".join(map(str, digits)) + str(_check_digit(digits))
    return f"{base}-{vat_code}-{rng.choice(_COUNTY_CODES)}"


def _hu_account_number(rng: random.Random, bank_code: str) -> str:
    """A 3x8-digit Hungarian account number whose blocks carry valid check digits."""
    first = [int(c) for c in bank_code] + [rng.randint(0, 9) for _ in range(4)]
    second = [rng.randint(0, 9) for _ in range(7)]
    blocks = ["".join(map(str, first)) + str(_check_digit(first)),
              "".join(map(str, second)) + str(_check_digit(second)),
              "00000000"]
    return "-".join(blocks)


def _iban(country: str, bban: str) -> str:
    """An IBAN with correct ISO 13616 (mod 97) check digits."""
    numeric = "".join(str(int(c, 36)) for c in bban + country + "00")
    return f"{country}{98 - int(numeric) % 97:02d}{bban}"


def _invoice_prefix(name: str) -> str:
    letters = "".join(c for c in _ascii(name.split(" ")[0]) if c.isalnum())
    return (letters[:5] or "DOC").upper()


def _ascii(text: str) -> str:
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")


def _slug(text: str) -> str:
    words = "".join(c if c.isalnum() else " " for c in _ascii(text).lower()).split()
    return "-".join(words)


def _document_partner(partner: _PartnerProfile) -> dict[str, Any]:
    return {
        "id": partner.id,
        "name": partner.name,
        "address": {"country_code": partner.country_code, "post_code": partner.post_code, "city": partner.city,
                    "address": partner.address},
        "emails": [partner.email],
        "taxcode": partner.taxcode,
        "iban": partner.iban,
        "swift": partner.swift,
        "account_number": partner.account_number,
        "phone": partner.phone,
        "tax_type": partner.tax_type,
    }


def _partner(partner: _PartnerProfile) -> dict[str, Any]:
    """The deprecated ``partner`` object: still sent by the live API, a superset of document_partner."""
    return {
        **_document_partner(partner),
        "general_ledger_number": "",
        "custom_billing_settings": {
            "payment_method": "bankcard" if partner.tax_type == "NO_TAX_NUMBER" else "wire_transfer",
            "document_form": "electronic",
            "due_days": partner.due_days,
            "document_currency": "EUR" if partner.tax_type == "FOREIGN" else "HUF",
            "template_language_code": partner.language,
            "discount": {"type": "percent", "value": 0},
        },
        "group_member_tax_number": "",
    }
