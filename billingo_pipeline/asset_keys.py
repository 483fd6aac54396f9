"""The asset keys of the code location, named once: the assets, their checks, sensors and the runner
refer to them here (the checks judge the assets they are attached to, so neither module can own them)."""

import dagster as dg

from .endpoints.registry import ENTITY_ENDPOINTS

RAW = dg.AssetKey("billingo_documents_raw")
INVOICES = dg.AssetKey("billingo_invoices")
ITEMS = dg.AssetKey("billingo_invoice_items")
PAYMENTS = dg.AssetKey("billingo_document_payments")
SYNC_HEALTH = dg.AssetKey("billingo_sync_health")

# The other list endpoints' raw and normalized tables, one asset each, named as their tables:
# endpoint name -> (raw, normalized).
ENTITY_ASSETS: dict[str, tuple[dg.AssetKey, dg.AssetKey]] = {
    endpoint.name: (dg.AssetKey(endpoint.raw_asset), dg.AssetKey(endpoint.normalized_asset)) for endpoint in ENTITY_ENDPOINTS
}
PARTNERS = ENTITY_ASSETS["partners"][1]
SPENDINGS = ENTITY_ASSETS["spendings"][1]
