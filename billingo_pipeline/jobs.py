"""The sync job: raw documents -> invoices -> items, then the aging report, for one company partition or a range."""

import dagster as dg

billingo_sync_job = dg.define_asset_job(
    name="billingo_sync_job",
    selection=dg.AssetSelection.groups("billingo", "reporting"),
    description="Fetch, normalize and upsert every Billingo document of the companies, then their aging report.",
)
