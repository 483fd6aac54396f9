"""Asset checks of the Billingo sync: computed per company, stored with its sync-log row, shown in Dagster.

How the checks map to Dagster
- They are ``check_specs`` of the ``billingo_sync`` multi-asset (``SYNC_CHECK_SPECS``), so the UI
  lists them on the assets they judge and every sync step evaluates the selected ones. The checks
  are not partitioned (``asset_check(partitions_def=...)`` is a preview API): one step syncs one
  or many companies, so each check yields one ``AssetCheckResult`` per step that aggregates the
  step's companies: passed only when every company passed, severity ERROR when any failing company
  is at ERROR (else WARN), metadata naming the failing companies and the figures.
- Each company's own outcome is stored in its sync-log row (``sync_log.check_results``, one JSON
  entry per check), so SQL sees per company what the UI shows per step.
- Freshness (age of the last successful sync) changes without any sync running, so it is also
  evaluated outside runs: the ``billingo_sync_health_report`` sensor reports it as a runless
  ``AssetCheckEvaluation`` of the same check (and stores each company's result in its newest
  sync-log row). Freshness always judges every syncable company, whoever evaluates it.

Every figure is computed by plain functions over the warehouse (SQLAlchemy, both dialects), which
the tests call directly.
"""

from __future__ import annotations

import datetime as dt
import math
import threading
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import dagster as dg
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from ...asset_keys import INVOICES, ITEMS, PARTNERS, PAYMENTS, RAW
from ...billingo_client import MAX_PER_PAGE
from ...health import RED_AFTER_HOURS, YELLOW_AFTER_HOURS, CompanyHealth, company_health
from ...warehouse.schema import (
    billingo_document_payments,
    billingo_documents_raw,
    billingo_invoice_items,
    billingo_invoices,
    billingo_partners,
    billingo_payment_history_state,
    sync_log,
)
from ...warehouse.sync_log import record_check_results, utcnow

WARN, ERROR = "WARN", "ERROR"
SEVERITIES = {WARN: dg.AssetCheckSeverity.WARN, ERROR: dg.AssetCheckSeverity.ERROR}

ITEMS_ADD_UP = "items_add_up_to_totals"
UNIQUE_IDS = "unique_ids_and_invoice_numbers"
PARTNER_NAME = "partner_name_present"
INVOICE_PARTNERS = "invoice_partners_exist"
# Named for what they check: the thresholds are the constants below (migration 0008 renamed the
# stored outcomes of the names that held them).
ERROR_RATE = "error_rate_under_target"
INVOICES_PER_CALL = "invoices_per_api_call_sufficient"
FRESHNESS = "last_successful_sync_fresh"
PAYMENTS_ADD_UP = "payment_history_adds_up"

MAX_ERROR_RATE = 0.01  # the target: under 1% of a sync's documents unusable
MIN_INVOICES_PER_CALL = 50  # under this many documents per call, paging is wasting calls
# Billingo's cash rounding (settings.round); "none" rounds to the currency's minor unit.
CASH_ROUNDING_UNITS = {"one": Decimal(1), "five": Decimal(5), "ten": Decimal(10)}
# Billingo states HUF amounts in whole forints; the other zero-decimal ISO 4217 currencies too.
ZERO_DECIMAL_CURRENCIES = frozenset({"HUF", "JPY", "KRW", "ISK", "CLP", "VND"})
# Documents that may lack a partner: drafts are unfinished, receipts can be anonymous.
PARTNER_OPTIONAL_TYPES = ("draft", "draft_offer", "draft_order_form", "draft_waybill", "receipt", "receipt_cancellation")
MAX_EXAMPLES = 5
MAX_TABLE_ROWS = 50


@dataclass(frozen=True)
class CheckDefinition:
    name: str
    asset_key: dg.AssetKey
    severity: str  # of a failure (freshness decides per company: WARN or ERROR)
    description: str
    headline: str  # the figure the aggregated result shows
    combine: str  # how the headline combines over companies: sum | max | min
    figure: str | None = None  # the per-company figure the headline combines, when named differently

    @property
    def key(self) -> dg.AssetCheckKey:
        return dg.AssetCheckKey(self.asset_key, self.name)


CHECKS: dict[str, CheckDefinition] = {
    d.name: d
    for d in (
        CheckDefinition(
            ITEMS_ADD_UP, ITEMS, ERROR,
            "Every invoice's item gross amounts add up to its gross_total, within the document's cash "
            "rounding (settings.round one/five/ten: half of 1/5/10 forint) or else half a minor unit of "
            "its currency (HUF: whole forints, so 0.5).",
            "mismatching_invoices", "sum",
        ),
        CheckDefinition(
            UNIQUE_IDS, INVOICES, ERROR,
            "No Billingo document id twice (raw documents and invoices) and no invoice number twice, per company.",
            "duplicates", "sum",
        ),
        CheckDefinition(
            PARTNER_NAME, INVOICES, ERROR,
            "Every document has a partner name (drafts and receipts, which may be anonymous, excepted).",
            "documents_without_partner_name", "sum",
        ),
        CheckDefinition(
            INVOICE_PARTNERS, PARTNERS, WARN,
            "Every invoice's partner (billingo_invoices.partner_id) is among the company's partners "
            "(billingo_partners, marked deleted in source or not).",
            "invoices_with_unknown_partner", "sum",
        ),
        CheckDefinition(
            ERROR_RATE, INVOICES, WARN,
            f"Documents that could not be used are under {MAX_ERROR_RATE:.0%} of the sync's documents.",
            "error_rate", "max",
        ),
        CheckDefinition(
            INVOICES_PER_CALL, RAW, WARN,
            f"At least {MIN_INVOICES_PER_CALL} documents per Billingo API call (the clock's and the documents'), unless "
            f"the sync made no more calls than its document count needs (ceil(documents / {MAX_PER_PAGE})): a small "
            "company cannot do better.",
            "invoices_per_api_call", "min",
        ),
        CheckDefinition(
            PAYMENTS_ADD_UP, PAYMENTS, ERROR,
            "Every fetched payment history adds up to what Billingo says was paid: a paid invoice's payments "
            "sum to its gross_total (within the rounding allowance of items_add_up_to_totals), a partially "
            "paid one's to more than 0 and less than its gross_total.",
            "mismatching_histories", "sum",
        ),
        CheckDefinition(
            FRESHNESS, INVOICES, ERROR,
            "Every syncable company's last successful sync (COMPLETED or PARTIAL) ended less than 24 h ago; "
            "24-48 h is a WARN, older or never an ERROR.",
            "oldest_last_success_hours", "max", figure="last_success_hours",
        ),
    )
}

SYNC_CHECK_SPECS = [dg.AssetCheckSpec(d.name, asset=d.asset_key, description=d.description) for d in CHECKS.values()]


@dataclass(frozen=True)
class CompanyCheck:
    """One check's outcome for one company."""

    name: str
    passed: bool
    severity: str
    description: str
    figures: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self, evaluated_at: dt.datetime) -> dict:
        return {
            "passed": self.passed,
            "severity": self.severity,
            "description": self.description,
            "figures": dict(self.figures),
            "evaluated_at": evaluated_at.isoformat(),
        }


def _outcome(name: str, passed: bool, description: str, severity: str | None = None, **figures) -> CompanyCheck:
    return CompanyCheck(name, passed, severity or CHECKS[name].severity, description, figures)


# --- the checks, per company ------------------------------------------------------------------


def allowed_difference(currency: str | None, rounding: str | None) -> Decimal:
    """How far an invoice's gross may be from its items' gross sum: half the rounding unit."""
    unit = CASH_ROUNDING_UNITS.get((rounding or "").lower())
    if unit is None:
        unit = Decimal(1) if (currency or "").upper() in ZERO_DECIMAL_CURRENCIES else Decimal("0.01")
    return unit / 2


def allowed_difference_sql(currency: sa.ColumnElement, rounding: sa.ColumnElement) -> sa.ColumnElement[float]:
    """``allowed_difference`` as a SQL expression (a float), for the database to compare with."""
    minor_unit = sa.case(
        (sa.func.upper(currency).in_(sorted(ZERO_DECIMAL_CURRENCIES)), float(Decimal(1) / 2)), else_=float(Decimal("0.01") / 2)
    )
    return sa.case(
        *((sa.func.lower(rounding) == name, float(unit / 2)) for name, unit in CASH_ROUNDING_UNITS.items()), else_=minor_unit
    )


# Bound on the relative error of summing amounts as binary floats (far above n * 2**-53 for any
# invoice's item count): a candidate may be a false alarm, which the exact pass clears, never a miss.
FLOAT_SUM_TOLERANCE = 1e-9


def _items_add_up_queries() -> tuple[sa.Select, sa.Select, sa.Select]:
    """(priced invoices, invoices that may not add up, the items of those), for :company_id."""
    invoices, items = billingo_invoices, billingo_invoice_items
    company_id = sa.bindparam("company_id")

    def as_float(column):
        return sa.cast(column, sa.Float)

    sums = (
        sa.select(
            items.c.document_id,
            sa.func.sum(as_float(items.c.gross_amount)).label("gross"),
            sa.func.sum(sa.func.abs(as_float(items.c.gross_amount))).label("size"),
        )
        .where(items.c.company_id == company_id)
        .group_by(items.c.document_id)
        .subquery("item_sums")
    )
    priced = (invoices.c.company_id == company_id, invoices.c.gross_total.is_not(None))
    difference = sa.func.abs(as_float(invoices.c.gross_total) - sa.func.coalesce(sums.c.gross, 0.0))
    margin = (sa.func.abs(as_float(invoices.c.gross_total)) + sa.func.coalesce(sums.c.size, 0.0)) * FLOAT_SUM_TOLERANCE
    candidates = (
        sa.select(invoices.c.document_id, invoices.c.invoice_number, invoices.c.gross_total, invoices.c.currency, invoices.c.rounding)
        .select_from(invoices.outerjoin(sums, sums.c.document_id == invoices.c.document_id))
        .where(*priced, difference > allowed_difference_sql(invoices.c.currency, invoices.c.rounding) - margin)
        .order_by(invoices.c.document_id)
    )
    candidate_items = sa.select(items.c.document_id, items.c.gross_amount).where(
        items.c.company_id == company_id,
        items.c.document_id.in_(candidates.with_only_columns(invoices.c.document_id).order_by(None).scalar_subquery()),
    )
    return sa.select(sa.func.count()).select_from(invoices).where(*priced), candidates, candidate_items


PRICED_INVOICES, INVOICES_MAYBE_NOT_ADDING_UP, ITEMS_OF_THOSE = _items_add_up_queries()


def check_items_add_up(conn: Connection, company_id: int) -> CompanyCheck:
    # The database compares each invoice with its items' sum as floats, to find the few that may
    # not add up without sending every item over; those few are then judged exactly, summed in
    # Python (SQLite stores money as decimal text, and SUM() over it is a float).
    company = {"company_id": company_id}
    checked = conn.execute(PRICED_INVOICES, company).scalar_one()
    rows = conn.execute(INVOICES_MAYBE_NOT_ADDING_UP, company).all()
    item_sums: dict[int, Decimal] = defaultdict(Decimal)
    if rows:
        for document_id, gross in conn.execute(ITEMS_OF_THOSE, company):
            item_sums[document_id] += gross or Decimal(0)
    mismatches = []
    for row in rows:
        items_gross = item_sums.get(row.document_id, Decimal(0))
        difference = row.gross_total - items_gross
        if abs(difference) > allowed_difference(row.currency, row.rounding):
            mismatches.append(
                f"{row.invoice_number or row.document_id}: gross_total {row.gross_total.normalize():f} vs items "
                f"{items_gross.normalize():f} {row.currency or ''} (rounding {row.rounding or 'none'})".rstrip()
            )
    if mismatches:
        description = f"{len(mismatches)} of {checked} invoices: items do not add up to the gross total"
    else:
        description = f"all {checked} invoices add up"
    return _outcome(
        ITEMS_ADD_UP, not mismatches, description,
        invoices_checked=checked, mismatching_invoices=len(mismatches), examples=mismatches[:MAX_EXAMPLES],
    )


def check_payments_add_up(conn: Connection, company_id: int) -> CompanyCheck:
    # Only histories fetched since their document last changed say anything: one still due may
    # be older than the invoice's status. Summed exactly in Python (SQLite stores decimal text).
    i, p, s = billingo_invoices, billingo_document_payments, billingo_payment_history_state
    judged = conn.execute(
        sa.select(i.c.document_id, i.c.invoice_number, i.c.payment_status, i.c.gross_total, i.c.currency, i.c.rounding)
        .select_from(i.join(s, sa.and_(s.c.company_id == i.c.company_id, s.c.document_id == i.c.document_id)))
        .where(
            i.c.company_id == company_id,
            s.c.fetched_at.is_not(None), s.c.due_since.is_(None), sa.not_(s.c.not_found),
            i.c.payment_status.in_(("paid", "partially_paid")), i.c.gross_total.is_not(None),
            sa.not_(i.c.cancelled), i.c.deleted_in_source_at.is_(None),
        )
        .order_by(i.c.document_id)
    ).all()
    sums: dict[int, Decimal] = defaultdict(Decimal)
    for document_id, price in conn.execute(
        sa.select(p.c.document_id, p.c.price).where(p.c.company_id == company_id, p.c.document_id.in_([r.document_id for r in judged]))
    ):
        sums[document_id] += price
    mismatches = []
    for row in judged:
        paid = sums.get(row.document_id, Decimal(0))
        if row.payment_status == "paid":
            adds_up = abs(row.gross_total - paid) <= allowed_difference(row.currency, row.rounding)
        else:
            adds_up = 0 < paid < row.gross_total
        if not adds_up:
            mismatches.append(
                f"{row.invoice_number or row.document_id}: {row.payment_status}, payments {paid.normalize():f} of gross "
                f"{row.gross_total.normalize():f} {row.currency or ''}".rstrip()
            )
    description = (
        f"{len(mismatches)} of {len(judged)} payment histories do not add up to the invoice's payment status"
        if mismatches else f"all {len(judged)} fetched payment histories add up"
    )
    return _outcome(
        PAYMENTS_ADD_UP, not mismatches, description,
        histories_checked=len(judged), mismatching_histories=len(mismatches), examples=mismatches[:MAX_EXAMPLES],
    )


def _duplicated(conn: Connection, column: sa.Column, company_id: int, *conditions) -> list:
    table = column.table
    query = (
        sa.select(column)
        .where(table.c.company_id == company_id, *conditions)
        .group_by(column)
        .having(sa.func.count() > 1)
        .order_by(column)
    )
    return list(conn.execute(query).scalars())


def check_unique_ids(conn: Connection, company_id: int) -> CompanyCheck:
    ids = sorted(
        set(_duplicated(conn, billingo_invoices.c.document_id, company_id))
        | set(_duplicated(conn, billingo_documents_raw.c.document_id, company_id))
    )
    numbers = _duplicated(
        conn, billingo_invoices.c.invoice_number, company_id,
        billingo_invoices.c.invoice_number.is_not(None), billingo_invoices.c.invoice_number != "",
    )
    problems = [f"document id {i}" for i in ids[:MAX_EXAMPLES]] + [f"invoice number {n}" for n in numbers[:MAX_EXAMPLES]]
    passed = not ids and not numbers
    description = (
        "no duplicate Billingo ids or invoice numbers"
        if passed
        else f"{len(ids)} duplicate Billingo id(s), {len(numbers)} duplicate invoice number(s)"
    )
    return _outcome(
        UNIQUE_IDS, passed, description,
        duplicates=len(ids) + len(numbers), duplicate_document_ids=len(ids), duplicate_invoice_numbers=len(numbers),
        examples=problems[:MAX_EXAMPLES],
    )


def check_partner_names(conn: Connection, company_id: int) -> CompanyCheck:
    i = billingo_invoices
    needs_partner = sa.or_(i.c.document_type.is_(None), i.c.document_type.not_in(PARTNER_OPTIONAL_TYPES))
    missing_name = sa.or_(i.c.partner_name.is_(None), sa.func.trim(i.c.partner_name) == "")
    base = sa.select(i.c.invoice_number, i.c.document_id).where(i.c.company_id == company_id, needs_partner)
    checked = conn.execute(sa.select(sa.func.count()).select_from(base.subquery())).scalar_one()
    missing = conn.execute(base.where(missing_name).order_by(i.c.document_id)).all()
    passed = not missing
    description = (
        f"all {checked} documents name their partner"
        if passed
        else f"{len(missing)} of {checked} documents have no partner name"
    )
    return _outcome(
        PARTNER_NAME, passed, description,
        documents_checked=checked, documents_without_partner_name=len(missing),
        examples=[r.invoice_number or str(r.document_id) for r in missing[:MAX_EXAMPLES]],
    )


def check_invoice_partners(conn: Connection, company_id: int) -> CompanyCheck:
    i, p = billingo_invoices, billingo_partners
    known = sa.select(p.c.partner_id).where(p.c.company_id == company_id)
    with_partner = sa.select(i.c.document_id, i.c.invoice_number, i.c.partner_id).where(
        i.c.company_id == company_id, i.c.partner_id.is_not(None)
    )
    checked = conn.execute(sa.select(sa.func.count()).select_from(with_partner.subquery())).scalar_one()
    unknown = conn.execute(with_partner.where(i.c.partner_id.not_in(known)).order_by(i.c.document_id)).all()
    passed = not unknown
    description = (
        f"all {checked} invoices with a partner name a known partner"
        if passed
        else f"{len(unknown)} of {checked} invoices name a partner not among the company's partners"
    )
    return _outcome(
        INVOICE_PARTNERS, passed, description,
        invoices_checked=checked, invoices_with_unknown_partner=len(unknown),
        examples=[f"{r.invoice_number or r.document_id}: partner {r.partner_id}" for r in unknown[:MAX_EXAMPLES]],
    )


def check_error_rate(sync_row) -> CompanyCheck:
    processed, failed = sync_row.invoices_processed or 0, sync_row.invoices_failed or 0
    rate = failed / processed if processed else 0.0
    passed = rate < MAX_ERROR_RATE
    description = f"{failed} of {processed} documents failed ({rate:.2%}; target under {MAX_ERROR_RATE:.0%})"
    return _outcome(
        ERROR_RATE, passed, description,
        documents_processed=processed, documents_failed=failed, error_rate=round(rate, 6),
    )


CLOCK_CALLS_PER_SYNC = 1


def check_invoices_per_api_call(sync_row) -> CompanyCheck:
    # The sync-log row's calls are the clock's and the documents' (sync_log_endpoints has the rest).
    calls, documents = sync_row.api_calls or 0, sync_row.documents_fetched or 0
    if calls == 0:
        return _outcome(INVOICES_PER_CALL, True, "no Billingo API call in this sync", api_calls=0, documents_fetched=documents)
    per_call = documents / calls
    # The pages the documents fill, plus the one reading of Billingo's clock (the sync's cursor).
    calls_needed = max(1, math.ceil(documents / MAX_PER_PAGE)) + CLOCK_CALLS_PER_SYNC
    passed = per_call >= MIN_INVOICES_PER_CALL or calls <= calls_needed
    description = (
        f"{per_call:.1f} documents per API call ({documents} documents, {calls} calls, {calls_needed} needed at "
        f"{MAX_PER_PAGE} per page; alert under {MIN_INVOICES_PER_CALL})"
    )
    return _outcome(
        INVOICES_PER_CALL, passed, description,
        api_calls=calls, documents_fetched=documents, calls_needed=calls_needed, invoices_per_api_call=round(per_call, 3),
    )


def check_freshness(last_success_at: dt.datetime | None, now: dt.datetime) -> CompanyCheck:
    if last_success_at is None:
        return _outcome(FRESHNESS, False, "never synced successfully", ERROR, last_success_at=None, last_success_hours=None)
    hours = (now - last_success_at).total_seconds() / 3600
    figures = {"last_success_at": last_success_at.isoformat(), "last_success_hours": round(hours, 3)}
    if hours > RED_AFTER_HOURS:
        return _outcome(FRESHNESS, False, f"last successful sync {hours:.1f} h ago (over {RED_AFTER_HOURS} h)", ERROR, **figures)
    if hours >= YELLOW_AFTER_HOURS:
        return _outcome(
            FRESHNESS, False, f"last successful sync {hours:.1f} h ago ({YELLOW_AFTER_HOURS}-{RED_AFTER_HOURS} h)", WARN, **figures
        )
    return _outcome(FRESHNESS, True, f"last successful sync {hours:.1f} h ago", WARN, **figures)


@dataclass(frozen=True)
class FreshnessOutcome:
    company_id: int
    check: CompanyCheck


def freshness_of(health: Iterable[CompanyHealth], now: dt.datetime) -> dict[str, FreshnessOutcome]:
    """Freshness of the syncable companies among ``health`` (``company_health`` rows: flag on and
    active), i.e. those with a key configured, by slug."""
    return {
        h.company_slug: FreshnessOutcome(h.company_id, check_freshness(h.last_success_at, now))
        for h in health
        if h.key_configured
    }


def freshness_by_company(engine: Engine, *, now: dt.datetime | None = None) -> dict[str, FreshnessOutcome]:
    """Freshness of every syncable company (flag on, active, key configured), by slug."""
    now = now or utcnow()
    return freshness_of(company_health(engine, now=now), now)


def store_freshness(
    engine: Engine, freshness: Mapping[str, FreshnessOutcome], sync_ids: Mapping[int, int], now: dt.datetime
) -> None:
    """Store each company's freshness in its row of ``sync_ids`` (company id -> sync-log id), if it has one."""
    for outcome in freshness.values():
        if outcome.company_id in sync_ids:
            store_company_checks(engine, sync_ids[outcome.company_id], {FRESHNESS: outcome.check}, now)


SYNC_ROW_CHECKS = {ERROR_RATE: check_error_rate, INVOICES_PER_CALL: check_invoices_per_api_call}
DATA_CHECKS = {
    ITEMS_ADD_UP: check_items_add_up, UNIQUE_IDS: check_unique_ids, PARTNER_NAME: check_partner_names,
    PAYMENTS_ADD_UP: check_payments_add_up,
    INVOICE_PARTNERS: check_invoice_partners,
}


def evaluate_company_checks(engine: Engine, company_id: int, sync_id: int, names: AbstractSet[str]) -> dict[str, CompanyCheck]:
    """The per-sync checks in ``names`` (freshness excluded: see ``freshness_by_company``).

    A check that cannot be computed fails at ERROR with the reason instead of failing the sync,
    which has already been recorded by then.
    """
    outcomes: dict[str, CompanyCheck] = {}
    with engine.connect() as conn:
        row = conn.execute(sa.select(sync_log).where(sync_log.c.id == sync_id)).one()
        for name in CHECKS:
            if name not in names or name == FRESHNESS:
                continue
            try:
                if name in SYNC_ROW_CHECKS:
                    outcomes[name] = SYNC_ROW_CHECKS[name](row)
                else:
                    outcomes[name] = DATA_CHECKS[name](conn, company_id)
            except sa.exc.SQLAlchemyError as exc:
                conn.rollback()
                outcomes[name] = _outcome(name, False, f"could not be evaluated: {type(exc).__name__}: {str(exc).splitlines()[0]}", ERROR)
    return outcomes


def store_company_checks(engine: Engine, sync_id: int, outcomes: Mapping[str, CompanyCheck], evaluated_at: dt.datetime | None = None) -> None:
    evaluated_at = evaluated_at or utcnow()
    record_check_results(engine, sync_id, {name: check.to_json(evaluated_at) for name, check in outcomes.items()})


def newest_sync_ids(engine: Engine, company_ids: AbstractSet[int]) -> dict[int, int]:
    """Each company's newest sync-log row (where the freshness sensor stores its outcome)."""
    if not company_ids:
        return {}
    with engine.connect() as conn:
        return dict(
            conn.execute(
                sa.select(sync_log.c.company_id, sa.func.max(sync_log.c.id))
                .where(sync_log.c.company_id.in_(sorted(company_ids)))
                .group_by(sync_log.c.company_id)
            ).all()
        )


def standing_outcomes(engine: Engine, names: AbstractSet[str], companies: Mapping[int, str]) -> dict[str, dict[str, CompanyCheck]]:
    """Each company's newest stored outcome of each check in ``names`` (``companies``: id -> slug),
    by check then slug; a company with no stored outcome of a check is left out of it."""
    wanted = {(company_id, name) for company_id in companies for name in names}
    found: dict[str, dict[str, CompanyCheck]] = defaultdict(dict)
    if not wanted:
        return found
    query = (
        sa.select(sync_log.c.company_id, sync_log.c.check_results)
        .where(sync_log.c.company_id.in_(sorted(companies)), sync_log.c.check_results.is_not(None))
        .order_by(sync_log.c.id.desc())
    )
    with engine.connect() as conn:
        # Newest first, stopping once every company's checks are found: a long history is not read.
        for company_id, stored in conn.execution_options(yield_per=200).execute(query):
            for name, entry in (stored if isinstance(stored, dict) else {}).items():
                if (company_id, name) in wanted and isinstance(entry, dict):
                    wanted.discard((company_id, name))
                    found[name][companies[company_id]] = CompanyCheck(
                        name,
                        bool(entry.get("passed")),
                        entry.get("severity") if entry.get("severity") in SEVERITIES else CHECKS[name].severity,
                        str(entry.get("description") or ""),
                        entry.get("figures") if isinstance(entry.get("figures"), dict) else {},
                    )
            if not wanted:
                break
    return found


# --- aggregation for Dagster ------------------------------------------------------------------


def _combine(definition: CheckDefinition, outcomes: Mapping[str, CompanyCheck]):
    figure = definition.figure or definition.headline
    values = [o.figures.get(figure) for o in outcomes.values()]
    values = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if not values:
        return None
    return {"sum": sum, "max": max, "min": min}[definition.combine](values)


def aggregate(name: str, outcomes: Mapping[str, CompanyCheck]) -> dict[str, Any]:
    """passed / severity / description / metadata of one check over several companies."""
    definition = CHECKS[name]
    failing = {slug: o for slug, o in sorted(outcomes.items()) if not o.passed}
    severity = ERROR if any(o.severity == ERROR for o in failing.values()) else (WARN if failing else definition.severity)
    if failing:
        shown = "; ".join(f"{slug}: {o.description}" for slug, o in list(failing.items())[:MAX_EXAMPLES])
        more = f"; and {len(failing) - MAX_EXAMPLES} more" if len(failing) > MAX_EXAMPLES else ""
        description = f"{len(failing)} of {len(outcomes)} companies fail. {shown}{more}"
    elif len(outcomes) == 1:
        description = next(iter(outcomes.values())).description
    else:
        description = f"all {len(outcomes)} companies pass"
    metadata: dict[str, Any] = {
        "companies_checked": dg.MetadataValue.int(len(outcomes)),
        "companies_failing": dg.MetadataValue.int(len(failing)),
        "failing_companies": dg.MetadataValue.json(sorted(failing)),
    }
    headline = _combine(definition, outcomes)
    if headline is not None:
        metadata[definition.headline] = (
            dg.MetadataValue.int(headline) if isinstance(headline, int) else dg.MetadataValue.float(float(headline))
        )
    if name == FRESHNESS:
        metadata["never_synced_companies"] = dg.MetadataValue.int(
            sum(1 for o in outcomes.values() if o.figures.get("last_success_hours") is None)
        )
    rows = failing or (outcomes if len(outcomes) <= MAX_TABLE_ROWS else {})
    if rows:
        table = ["| company | result | severity | details |", "| --- | --- | --- | --- |"]
        for slug, o in list(rows.items())[:MAX_TABLE_ROWS]:
            examples = ", ".join(map(str, o.figures.get("examples") or []))
            table.append(
                f"| {slug} | {'pass' if o.passed else 'FAIL'} | {o.severity if not o.passed else '-'} | "
                f"{(o.description + (': ' + examples if examples else '')).replace('|', '/')} |"
            )
        if len(rows) > MAX_TABLE_ROWS:
            table.append(f"| ... | | | {len(rows) - MAX_TABLE_ROWS} more in sync_log.check_results |")
        metadata["companies"] = dg.MetadataValue.md("\n".join(table))
    return {"passed": not failing, "severity": SEVERITIES[severity], "description": description, "metadata": metadata}


def check_result(name: str, outcomes: Mapping[str, CompanyCheck]) -> dg.AssetCheckResult:
    definition = CHECKS[name]
    return dg.AssetCheckResult(asset_key=definition.asset_key, check_name=name, **aggregate(name, outcomes))


def check_evaluation(name: str, outcomes: Mapping[str, CompanyCheck]) -> dg.AssetCheckEvaluation:
    """The same, as a runless evaluation a sensor reports."""
    definition = CHECKS[name]
    return dg.AssetCheckEvaluation(asset_key=definition.asset_key, check_name=name, **aggregate(name, outcomes))


class StepChecks:
    """The checks of one billingo_sync step: evaluated per company, stored, aggregated at the end."""

    def __init__(self, engine: Engine, selected: AbstractSet[dg.AssetCheckKey], run_id: str):
        self.engine = engine
        self.run_id = run_id
        self.names = {name for name, d in CHECKS.items() if d.key in selected}
        self.outcomes: dict[str, dict[str, CompanyCheck]] = defaultdict(dict)
        self._lock = threading.Lock()

    def after_sync(self, slug: str, company_id: int, sync_id: int) -> dict[str, CompanyCheck]:
        """Evaluate and store one company's checks; safe to call from several threads at once
        (the step's workers): only the collecting of the outcomes is serialized."""
        outcomes = evaluate_company_checks(self.engine, company_id, sync_id, self.names)
        store_company_checks(self.engine, sync_id, outcomes)
        with self._lock:
            for name, outcome in outcomes.items():
                self.outcomes[name][slug] = outcome
        return outcomes

    def results(self, *, standing: bool = False) -> Iterator[dg.AssetCheckResult]:
        """One result per selected check that has something to judge; freshness over every
        syncable company, stored in the rows this run wrote.

        ``standing``: the step wrote no company's data (its companies were refused before syncing:
        unknown, disabled, already syncing). A check none of its companies reached then reports
        the syncable companies' stored outcomes, marked as such: left without a result, the check
        would show as failed in Dagster for every company (it is not partitioned), though none of
        their data changed.
        """
        now = utcnow()
        health = company_health(self.engine, now=now) if FRESHNESS in self.names or standing else []
        if standing:
            syncable = {h.company_id: h.company_slug for h in health if h.key_configured}
            unreached = {name for name in self.names if name != FRESHNESS and not self.outcomes.get(name)}
            for name, outcomes in standing_outcomes(self.engine, unreached, syncable).items():
                result = aggregate(name, outcomes)
                result["description"] = f"not evaluated in this run (no company was synced); stored results: {result['description']}"
                result["metadata"]["evaluated_in_this_run"] = dg.MetadataValue.bool(False)
                yield dg.AssetCheckResult(asset_key=CHECKS[name].asset_key, check_name=name, **result)
        if FRESHNESS in self.names:
            freshness = freshness_of(health, now)
            with self.engine.connect() as conn:
                # One row per company of this run (start_sync reuses a company's row within a run).
                rows_of_run = dict(
                    conn.execute(
                        sa.select(sync_log.c.company_id, sync_log.c.id).where(sync_log.c.run_id == self.run_id)
                    ).all()
                )
            store_freshness(self.engine, freshness, rows_of_run, now)
            if freshness:
                self.outcomes[FRESHNESS] = {slug: f.check for slug, f in freshness.items()}
        for name in CHECKS:
            if name in self.names and self.outcomes.get(name):
                yield check_result(name, self.outcomes[name])
