"""Billingo assets, one partition per company: raw documents -> invoices -> invoice items.

The assets are a thin shell: the work is in ``billingo_pipeline.sync`` (plain functions).
Invoices and items are one multi-asset because they are written in one transaction per batch:
an invoice must never be visible without its items.
"""


from collections.abc import Iterator, Mapping

import dagster as dg

from ..billingo_client import BillingoApiError
from ..credentials import CredentialError
from ..partitions import company_partitions
from ..resources import BillingoResource, WarehouseResource
from ..sync import fetch_raw_documents, normalize_raw_documents
from ..warehouse.companies import CompanyError, get_company
from ..warehouse.sync_log import fail_sync, find_sync, finish_sync, start_sync

TRIGGER_TAG = "billingo/trigger"
GROUP = "billingo"

# Errors whose message is already a clear, key-free sentence for the UI and the sync log.
EXPECTED_ERRORS = (BillingoApiError, CredentialError, CompanyError)


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


def _errors_table(errors: list[dict], limit: int = 20) -> dg.MetadataValue:
    lines = ["| document id | message |", "| --- | --- |"]
    for error in errors[:limit]:
        message = str(error.get("message", "")).replace("|", "\\|")
        lines.append(f"| {error.get('document_id')} | {message} |")
    if len(errors) > limit:
        lines.append(f"| ... | {len(errors) - limit} more in the sync_log table |")
    return dg.MetadataValue.md("\n".join(lines))


@dg.asset(
    partitions_def=company_partitions,
    group_name=GROUP,
    kinds={"python", "sql"},
    description="Every Billingo document of the company, as GET /documents returned it (JSON payload + hash).",
)
def billingo_documents_raw(
    context: dg.AssetExecutionContext, billingo: BillingoResource, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    engine = warehouse.get_engine()
    slug = context.partition_key
    try:
        company = get_company(engine, slug)
        company.require_syncable()
    except CompanyError as exc:
        raise dg.Failure(description=str(exc)) from None
    sync_id = start_sync(engine, company.id, context.run.run_id, sync_trigger(context.run.tags))
    client = None
    try:
        client = billingo.client_for(company, logger=context.log)
        with client:
            outcome = fetch_raw_documents(engine, company, client, sync_id)
    except Exception as exc:
        message = str(exc) or type(exc).__name__
        message = client.redact(message) if client is not None else message
        fail_sync(engine, sync_id, message)
        if isinstance(exc, EXPECTED_ERRORS):
            # `from None`: the cause's traceback is not needed and must not carry anything secret.
            raise dg.Failure(description=message) from None
        raise dg.Failure(description=f"{type(exc).__name__}: {message}") from None

    for note in outcome.notes:
        context.log.warning(f"company '{slug}': {note}")
    return dg.MaterializeResult(
        metadata={
            "company": slug,
            "sync_log_id": dg.MetadataValue.int(sync_id),
            "documents_fetched": dg.MetadataValue.int(outcome.documents_fetched),
            "api_calls": dg.MetadataValue.int(outcome.api_calls),
            "pages": dg.MetadataValue.int(outcome.pages_fetched),
            "fetch_complete": dg.MetadataValue.bool(outcome.complete),
            "marked_missing": dg.MetadataValue.int(outcome.marked_missing),
            "unusable_documents": dg.MetadataValue.int(len(outcome.errors)),
            "duration_seconds": dg.MetadataValue.float(round(outcome.duration_seconds, 3)),
        }
    )


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            "billingo_invoices",
            deps=["billingo_documents_raw"],
            group_name=GROUP,
            kinds={"python", "sql"},
            description="Normalized invoice headers: dates, partner, payment status/method, exact totals.",
        ),
        dg.AssetSpec(
            "billingo_invoice_items",
            deps=["billingo_invoices"],
            group_name=GROUP,
            kinds={"python", "sql"},
            description="Invoice line items: product, quantity, unit price, VAT, net/VAT/gross.",
        ),
    ],
    partitions_def=company_partitions,
)
def billingo_invoices_and_items(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource
) -> Iterator[dg.MaterializeResult]:
    engine = warehouse.get_engine()
    slug = context.partition_key
    company = get_company(engine, slug)
    # Re-normalizing on its own (raw not materialized in this run) still gets a sync-log row.
    sync_id = find_sync(engine, company.id, context.run.run_id) or start_sync(
        engine, company.id, context.run.run_id, sync_trigger(context.run.tags)
    )
    try:
        outcome = normalize_raw_documents(engine, company.id)
        status = finish_sync(engine, sync_id, outcome.counts, outcome.errors)
    except Exception as exc:
        fail_sync(engine, sync_id, f"{type(exc).__name__}: {exc}")
        raise

    counts = outcome.counts
    if outcome.errors:
        context.log.warning(f"company '{slug}': {len(outcome.errors)} document(s) could not be normalized")
    yield dg.MaterializeResult(
        asset_key="billingo_invoices",
        metadata={
            "company": slug,
            "sync_status": status,
            "sync_log_id": dg.MetadataValue.int(sync_id),
            "processed": dg.MetadataValue.int(counts.processed),
            "created": dg.MetadataValue.int(counts.created),
            "updated": dg.MetadataValue.int(counts.updated),
            "skipped": dg.MetadataValue.int(counts.skipped),
            "failed": dg.MetadataValue.int(counts.failed),
            "marked_deleted_in_source": dg.MetadataValue.int(counts.marked_deleted),
            "restored": dg.MetadataValue.int(outcome.restored),
            "duration_seconds": dg.MetadataValue.float(round(outcome.duration_seconds, 3)),
            **({"errors": _errors_table(outcome.errors)} if outcome.errors else {}),
        },
    )
    yield dg.MaterializeResult(
        asset_key="billingo_invoice_items",
        metadata={"company": slug, "items_written": dg.MetadataValue.int(counts.items_written)},
    )
