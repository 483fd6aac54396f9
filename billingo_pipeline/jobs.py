"""Jobs: the full Billingo sync of one company partition (raw -> invoices -> items)."""

import dagster as dg

billingo_sync_job = dg.define_asset_job(
    name="billingo_sync_job",
    selection=dg.AssetSelection.groups("billingo", "reporting"),
    description="Fetch, normalize and upsert every Billingo document of the companies, then their aging report.",
)
