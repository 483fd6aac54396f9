"""The aging report follows every sync without a run of its own being scheduled."""

import dagster as dg

# Requests the aging report after every sync: sync runs record per-company materializations, never outputs.
reporting_after_sync_sensor = dg.AutomationConditionSensorDefinition(
    "billingo_reporting_after_sync",
    target=dg.AssetSelection.groups("reporting"),
    default_status=dg.DefaultSensorStatus.RUNNING,
)
