"""Billingo assets, one partition per company: raw documents -> invoices -> invoice items, and
the invoices' payment histories; each other endpoint's raw table -> its normalized table
(partners, spendings, document blocks, bank accounts; ``endpoints/registry.py``), all written by
the same sync.

The assets are one multi-asset because one company's sync is one unit: its sync-log row
goes RUNNING -> COMPLETED/PARTIAL/FAILED inside one step, and invoices are written together
with their items. The step accepts a range of company partitions (``BackfillPolicy``), so many
companies sync in few runs.

One execution model, whatever the run holds (one company or 50): the companies sync at the same
time in a bounded pool (``BillingoResource.max_concurrent_companies``, default 4), each with its
own client, under its key's shared request budget (rate_limit.py); as each company finishes, the
step yields one ``AssetMaterialization`` per asset it wrote for that company's partition, from
the step's own thread. Their metadata carries the company's sync status, so a range run logs its
companies' statuses in one line at its end instead of one line per company (every event is a
write to Dagster's event log). The step never yields outputs: an output stands for every partition of the
run's range, and a company that failed or was skipped must not look materialized. A failing
company does not stop the others; a company already syncing elsewhere is refused alone. Assets
downstream (the aging report) follow these materializations through their automation condition,
after every sync the same way.

Selecting only ``billingo_invoices``/``billingo_invoice_items`` re-normalizes what is already
stored without calling Billingo. Invoices and items are always written together, and a fetch is
always normalized: selecting ``billingo_documents_raw`` alone (the UI's natural click) writes all
three, so all three are recorded as materialized (Dagster takes a step's materializations of
assets outside its selection). What the UI shows materialized is what the warehouse holds.

After each company's sync its asset checks (``checks.py`` here) are evaluated and stored with its
sync-log row, and its materializations carry its health and key metrics (``health.py`` here, over
the rules of ``billingo_pipeline/health.py``), the sync's duration, documents and API calls, and its
rows in each table (``dagster/row_count``; the specs carry the tables' column schema,
``billingo_pipeline/table_metadata.py``); the step reports one
result per check for all its companies. A range run (the daily schedule's chunks, backfills)
skips a company disabled since the run was requested instead of failing. A run tagged
``billingo/full_sweep=true`` (``billingo-pipeline sync --full``, or a launch from the UI with that
tag) asks every company of it for a full sweep instead of an incremental sync.
"""

import contextlib
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import dagster as dg
from sqlalchemy.exc import SQLAlchemyError

from ...asset_keys import ENTITY_ASSETS, INVOICES, ITEMS, PAYMENTS, RAW
from ...concurrency import run_concurrently
from ...endpoints.registry import ENTITY_ENDPOINTS
from ...partitions import company_partitions
from ...rate_limit import SyncStopRequested
from ...resources import BillingoResource, FernetKeyResource, WarehouseResource
from ...sync import CompanySyncError, CompanySyncResult, NormalizeOutcome, sync_company
from ...table_metadata import row_count_metadata, table_definition_metadata
from ...warehouse import schema
from ...warehouse.company_figures import CompanyFigures, company_figures
from ...warehouse.companies import Company, CompanyError, CompanyNotSyncableError, UnknownCompanyError, get_company
from ...warehouse.engine import warehouse_error_summary
from ...warehouse.sync_log import COMPLETED, SyncAlreadyRunningError, error_subject
from .checks import SYNC_CHECK_SPECS, StepChecks
from .health import sync_operations_metadata

TRIGGER_TAG = "billingo/trigger"
# "true": every company of the run gets a full sweep (the only kind that marks documents deleted in source).
FULL_SWEEP_TAG = "billingo/full_sweep"
GROUP = "billingo"
# Companies per run (the daily schedule, backfills, the CLI): each run pays Dagster's fixed cost
# (a deployed run: process start and code load; any run: start, check results, end), so fewer
# runs pay it less often, while the run queue's concurrent runs (4 in dagster.yaml) still all have
# work for a fleet of 200. A slow company holds up only its pool slot, not its run's others.
COMPANIES_PER_RUN = 50
# The warehouse table each asset is: its columns are on the spec, the company's row count on
# each materialization.
SYNC_TABLES = {
    RAW: schema.billingo_documents_raw,
    INVOICES: schema.billingo_invoices,
    ITEMS: schema.billingo_invoice_items,
    PAYMENTS: schema.billingo_document_payments,
    **{
        key: table
        for endpoint in ENTITY_ENDPOINTS
        for key, table in zip(ENTITY_ASSETS[endpoint.name], (endpoint.tables.raw, endpoint.tables.normalized))
    },
}
# Assets only a sync that calls Billingo writes.
FETCHED_ASSETS = frozenset({RAW, PAYMENTS, *(key for keys in ENTITY_ASSETS.values() for key in keys)})
# What a company's sync may end with that is its own failure, not the step's.
COMPANY_FAILURES = (CompanyError, CompanySyncError, SyncAlreadyRunningError)
# Those of them that refuse the company before anything of it is written.
REFUSALS = (CompanyError, SyncAlreadyRunningError)


def sync_trigger(tags: Mapping[str, str]) -> str:
    if tags.get(TRIGGER_TAG):
        return tags[TRIGGER_TAG]
    if "dagster/schedule_name" in tags:
        return "schedule"
    if "dagster/sensor_name" in tags:
        return "sensor"
    if "dagster/backfill" in tags:
        return "backfill"
    return "manual"


def full_sweep_requested(tags: Mapping[str, str]) -> bool:
    return tags.get(FULL_SWEEP_TAG, "").strip().lower() == "true"


def _errors_table(errors: list[dict], limit: int = 20) -> dg.MetadataValue:
    lines = ["| item | message |", "| --- | --- |"]
    for error in errors[:limit]:
        message = str(error.get("message", "")).replace("|", "\\|")
        lines.append(f"| {error_subject(error)} | {message} |")
    if len(errors) > limit:
        lines.append(f"| ... | {len(errors) - limit} more in the sync_log table |")
    return dg.MetadataValue.md("\n".join(lines))


def _sync_figures(result: CompanySyncResult, figures: CompanyFigures | None) -> dict[str, dg.MetadataValue]:
    """The whole sync's duration, documents and API calls, as numbers the UI plots."""
    metadata: dict[str, dg.MetadataValue] = {}
    if figures is not None and figures.sync_duration_seconds is not None:
        metadata["sync_duration_seconds"] = dg.MetadataValue.float(round(figures.sync_duration_seconds, 3))
    if result.fetch is not None:
        metadata["sync_documents_fetched"] = dg.MetadataValue.int(result.fetch.documents_fetched)
        metadata["sync_api_calls"] = dg.MetadataValue.int(result.fetch.api_calls)
    return metadata


def _materializations(
    result: CompanySyncResult,
    operations: Mapping[str, dg.MetadataValue] | None = None,
    figures: CompanyFigures | None = None,
) -> Iterator[dg.AssetMaterialization]:
    """One materialization per asset the company's sync wrote, selected or not: the raw documents
    when it fetched, the invoices and their items when it normalized."""
    common = {"company": result.company, "sync_log_id": dg.MetadataValue.int(result.sync_id), "sync_status": result.status}
    counts_by_table = figures.row_counts if figures is not None else {}

    def row_count(key: dg.AssetKey) -> dict[str, dg.MetadataValue]:
        return row_count_metadata(counts_by_table, SYNC_TABLES[key])

    # Health, key metrics and the sync's figures (plottable per company over time): on the
    # invoices, else on the raw documents.
    operations = {**(operations or {}), **_sync_figures(result, figures)}
    normalized = result.normalize
    if result.fetch is not None:
        fetch = result.fetch
        yield dg.AssetMaterialization(
            asset_key=RAW,
            partition=result.company,
            metadata={
                **common,
                "documents_fetched": dg.MetadataValue.int(fetch.documents_fetched),
                "api_calls": dg.MetadataValue.int(fetch.api_calls),
                "pages": dg.MetadataValue.int(fetch.pages_fetched),
                "sync_mode": dg.MetadataValue.text(f"{fetch.mode} ({fetch.plan_reason})"),
                "fetch_complete": dg.MetadataValue.bool(fetch.complete),
                "marked_missing": dg.MetadataValue.int(fetch.marked_missing),
                "unusable_documents": dg.MetadataValue.int(len(fetch.errors)),
                "duration_seconds": dg.MetadataValue.float(round(fetch.duration_seconds, 3)),
                **row_count(RAW),
                **(operations if normalized is None else {}),
            },
        )
    if normalized is None:
        return
    counts = normalized.counts
    yield dg.AssetMaterialization(
        asset_key=INVOICES,
        partition=result.company,
        metadata={
            **common,
            "processed": dg.MetadataValue.int(counts.processed),
            **_write_counts(normalized),
            "duration_seconds": dg.MetadataValue.float(round(normalized.duration_seconds, 3)),
            **row_count(INVOICES),
            **operations,
        },
    )
    yield dg.AssetMaterialization(
        asset_key=ITEMS,
        partition=result.company,
        metadata={**common, "items_written": dg.MetadataValue.int(counts.items_written), **row_count(ITEMS)},
    )
    if result.payments is not None:
        payments = result.payments
        yield dg.AssetMaterialization(
            asset_key=PAYMENTS,
            partition=result.company,
            metadata={
                **common,
                "payment_histories_fetched": dg.MetadataValue.int(payments.fetched),
                "payments_written": dg.MetadataValue.int(payments.payments_written),
                "payment_history_calls": dg.MetadataValue.int(payments.api_calls),
                "payment_histories_deferred": dg.MetadataValue.int(payments.deferred),
                "documents_not_found": dg.MetadataValue.int(payments.not_found),
                **row_count(PAYMENTS),
            },
        )

    for name, (endpoint_fetch, endpoint_normalized) in result.endpoints.items():
        raw_key, normalized_key = ENTITY_ASSETS[name]
        yield dg.AssetMaterialization(
            asset_key=raw_key,
            partition=result.company,
            metadata={
                **common,
                "fetched": dg.MetadataValue.int(endpoint_fetch.documents_fetched),
                "api_calls": dg.MetadataValue.int(endpoint_fetch.api_calls),
                "pages": dg.MetadataValue.int(endpoint_fetch.pages_fetched),
                "fetch_complete": dg.MetadataValue.bool(endpoint_fetch.complete),
                **row_count(raw_key),
            },
        )
        yield dg.AssetMaterialization(
            asset_key=normalized_key,
            partition=result.company,
            metadata={**common, **_write_counts(endpoint_normalized), **row_count(normalized_key)},
        )


def _write_counts(normalized: NormalizeOutcome) -> dict[str, dg.MetadataValue]:
    """What a sweep's writes did to a normalized table, and its errors."""
    counts = normalized.counts
    return {
        "created": dg.MetadataValue.int(counts.created),
        "updated": dg.MetadataValue.int(counts.updated),
        "skipped": dg.MetadataValue.int(counts.skipped),
        "failed": dg.MetadataValue.int(counts.failed),
        "marked_deleted_in_source": dg.MetadataValue.int(counts.marked_deleted),
        "restored": dg.MetadataValue.int(normalized.restored),
        **({"errors": _errors_table(normalized.errors)} if normalized.errors else {}),
    }


def _sync_table_spec(key: dg.AssetKey, description: str, deps: tuple[dg.AssetKey, ...] = ()) -> dg.AssetSpec:
    """One table the sync writes, as an asset: its column schema comes from ``warehouse/schema.py``."""
    return dg.AssetSpec(
        key, deps=list(deps), group_name=GROUP, kinds={"python", "sql"}, skippable=True,
        description=description, metadata=table_definition_metadata(SYNC_TABLES[key]),
    )


def _entity_specs() -> list[dg.AssetSpec]:
    """Each other list endpoint's raw table and the normalized table built from it."""
    specs = []
    for endpoint in ENTITY_ENDPOINTS:
        raw_key, normalized_key = ENTITY_ASSETS[endpoint.name]
        specs.append(_sync_table_spec(
            raw_key, f"Every Billingo {endpoint.entity} of the company, as GET {endpoint.path} returned it (JSON payload + hash).",
        ))
        specs.append(_sync_table_spec(normalized_key, endpoint.description, deps=(raw_key,)))
    return specs


@dg.multi_asset(
    name="billingo_sync",
    specs=[
        _sync_table_spec(RAW, "Every Billingo document of the company, as GET /documents returned it (JSON payload + hash)."),
        _sync_table_spec(INVOICES, "Normalized invoice headers: dates, partner, payment status/method, exact totals.", deps=(RAW,)),
        _sync_table_spec(ITEMS, "Invoice line items: product, quantity, unit price, VAT, net/VAT/gross.", deps=(INVOICES,)),
        _sync_table_spec(
            PAYMENTS,
            "Payment histories (GET /documents/{id}/payments: date, price, method, voucher, rate) of the "
            "documents that are partially paid or whose payment status or paid date changed, fetched by "
            "the sync within its per-sync cap; the rest wait for the next sync.",
            deps=(INVOICES,),
        ),
        *_entity_specs(),
    ],
    partitions_def=company_partitions,
    can_subset=True,
    backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=COMPANIES_PER_RUN),
    # Data-quality checks, evaluated per company after its sync and aggregated per step (checks.py).
    check_specs=SYNC_CHECK_SPECS,
)
def billingo_sync(
    context: dg.AssetExecutionContext, billingo: BillingoResource, warehouse: WarehouseResource, fernet: FernetKeyResource
) -> Iterator[dg.AssetMaterialization | dg.AssetCheckResult]:
    engine = warehouse.get_engine()
    selected = set(context.selected_asset_keys)
    # Any fetched table selected syncs the company (every endpoint and the payment histories: one
    # run model); invoices or items alone re-normalize what is stored.
    fetch = bool(selected & FETCHED_ASSETS)
    run_id = context.run.run_id
    trigger = sync_trigger(context.run.tags)
    full = full_sweep_requested(context.run.tags)
    slugs = context.partition_keys
    log, instance = context.log, context.instance
    # A run of several companies (a schedule chunk, a backfill range) may hold a company disabled
    # or removed since the run was requested: it is skipped with a log line. One company asked
    # for explicitly still fails with the reason.
    skip_unsyncable = len(slugs) > 1 or trigger == "schedule"
    step_checks = StepChecks(engine, context.selected_asset_check_keys, run_id)
    stop = threading.Event()  # set when this step is interrupted: the workers' clients stop

    def run_in_progress(other_run_id: str) -> bool | None:
        # Another company's lock held by a run this instance knows has ended is taken over at once.
        other = instance.get_run_by_id(other_run_id)
        return None if other is None else not other.is_finished

    def open_client(company: Company):
        return billingo.client_for(company, logger=log, should_stop=stop.is_set, fernet=fernet)

    def sync_one(slug: str) -> _SyncedCompany:
        company = get_company(engine, slug)
        result = sync_company(
            engine,
            company,
            run_id=run_id,
            trigger=trigger,
            open_client=open_client if fetch else None,
            run_in_progress=run_in_progress,
            logger=log,
            full=full,
        )
        synced = _SyncedCompany(result)
        try:
            step_checks.after_sync(slug, company.id, result.sync_id)
            synced.operations = sync_operations_metadata(engine, company_id=company.id, company_slug=slug, sync_id=result.sync_id)
            synced.figures = company_figures(engine, company.id, result.sync_id, SYNC_TABLES.values())
        except SQLAlchemyError as exc:  # the sync itself is recorded; its checks/metrics are extras
            synced.problem = f"checks or metrics not recorded: {warehouse_error_summary(exc)}"
        return synced

    failures: dict[str, str] = {}
    refused: set[str] = set()
    statuses: dict[str, str] = {}
    skipped = 0
    workers = min(billingo.max_concurrent_companies, len(slugs))
    if len(slugs) > 1:
        log.info(f"syncing {len(slugs)} companies, {workers} at a time{' (full sweep)' if full else ''}")
    # Closed on any way out: an interruption while an outcome is handled here stops the workers
    # at once (a suspended generator would do it only when garbage collected).
    with contextlib.closing(run_concurrently(slugs, sync_one, max_workers=max(workers, 1), stop=stop)) as outcomes:
        for outcome in outcomes:
            slug, error = outcome.item, outcome.error
            if error is not None:
                if not isinstance(error, Exception):
                    raise error  # an interruption seen first by a worker still stops the step
                if skip_unsyncable and isinstance(error, (CompanyNotSyncableError, UnknownCompanyError)):
                    log.warning(f"company '{slug}': skipped, not synced in this run: {error}")
                    skipped += 1
                    continue
                failures[slug] = str(error) if isinstance(error, COMPANY_FAILURES) else _unexpected(error)
                if isinstance(error, REFUSALS):
                    refused.add(slug)
                log.error(f"company '{slug}': sync failed: {failures[slug]}")
                continue
            synced = outcome.result
            result = synced.result
            if result.normalize and result.normalize.errors:
                log.warning(f"company '{slug}': {len(result.normalize.errors)} document(s) could not be normalized")
            for note in result.fetch.notes if result.fetch else []:
                log.warning(f"company '{slug}': {note}")
            if synced.problem:
                log.warning(f"company '{slug}': {synced.problem}")
            statuses[slug] = result.status
            materializations = list(_materializations(result, synced.operations, synced.figures))
            if len(slugs) == 1 or not materializations:
                plan = f" ({result.fetch.mode} sync: {result.fetch.plan_reason})" if result.fetch else ""
                log.info(f"company '{slug}': sync {result.status}{plan}")
            yield from materializations
    if len(slugs) > 1:
        # One line for the step: each company's status is on its materializations already, and
        # every event costs the run a write to Dagster's event log.
        log.info(_step_summary(len(slugs), statuses, failures, skipped))
    try:
        # A step that wrote nothing (say one partition of a company that does not exist) leaves the
        # checks where the real companies' syncs put them rather than failing them for everyone.
        yield from step_checks.results(standing=not statuses and set(failures) <= refused)
    except SQLAlchemyError as exc:  # e.g. the warehouse went away: the failures below say what matters
        log.warning(f"asset checks not evaluated: {warehouse_error_summary(exc)}")
    if failures:
        # `from None` and key-free messages: nothing secret reaches the event log.
        raise dg.Failure(
            description="; ".join(f"{slug}: {message}" for slug, message in failures.items()),
            metadata={
                "failed_companies": dg.MetadataValue.json(sorted(failures)),
                # Each company's own line, for whoever reports per company (runner.py).
                ERRORS_BY_COMPANY: dg.MetadataValue.json(failures),
            },
        ) from None


ERRORS_BY_COMPANY = "errors_by_company"


@dataclass
class _SyncedCompany:
    result: CompanySyncResult
    operations: dict[str, dg.MetadataValue] = field(default_factory=dict)
    figures: CompanyFigures | None = None
    problem: str | None = None


def _step_summary(companies: int, statuses: Mapping[str, str], failures: Mapping[str, str], skipped: int) -> str:
    by_status: dict[str, list[str]] = {}
    for slug, status in statuses.items():
        by_status.setdefault(status, []).append(slug)
    parts = [
        f"{len(slugs)} {status}" + ("" if status == COMPLETED else f" ({_listed(slugs)})")
        for status, slugs in sorted(by_status.items())
    ]
    if failures:
        parts.append(f"{len(failures)} failed ({_listed(sorted(failures))})")
    if skipped:
        parts.append(f"{skipped} skipped")
    return f"{len(statuses)} of {companies} companies synced: {', '.join(parts) or 'none'}"


def _listed(slugs: list[str], limit: int = 5) -> str:
    return ", ".join(slugs[:limit]) + (f" and {len(slugs) - limit} more" if len(slugs) > limit else "")


def _unexpected(error: Exception) -> str:
    """One key-free line for a failure outside the sync itself (reading the company, its checks)."""
    if isinstance(error, SQLAlchemyError):
        return f"the warehouse failed: {warehouse_error_summary(error)}"
    return " ".join(f"{type(error).__name__}: {error}".split())[:400]


billingo_assets = [billingo_sync]
