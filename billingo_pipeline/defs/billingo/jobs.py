"""The sync job: raw documents -> invoices -> items, for one company partition or a range.

The aging report is not in it: a sync step records per-company materializations, never outputs
(assets.py), so a step after it in the same run would always be skipped. The report
follows every sync through its eager automation condition instead (the
``billingo_reporting_after_sync`` sensor), and ``runner.run_company_syncs`` builds it right after
the runs it starts.
"""

import dagster as dg

billingo_sync_job = dg.define_asset_job(
    name="billingo_sync_job",
    selection=dg.AssetSelection.groups("billingo"),
    description="Fetch, normalize and upsert every Billingo document of the companies (concurrently inside a range run).",
)
