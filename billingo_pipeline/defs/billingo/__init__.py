"""The Billingo sync in Dagster: assets, their checks, the job, the daily schedule and the sensors."""
