"""The asset keys of the code location, named once: the assets, their checks, sensors and the runner
refer to them here (the checks judge the assets they are attached to, so neither module can own them)."""

import dagster as dg

RAW = dg.AssetKey("billingo_documents_raw")
INVOICES = dg.AssetKey("billingo_invoices")
ITEMS = dg.AssetKey("billingo_invoice_items")
PAYMENTS = dg.AssetKey("billingo_document_payments")
SYNC_HEALTH = dg.AssetKey("billingo_sync_health")
