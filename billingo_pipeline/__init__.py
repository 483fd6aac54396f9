"""billingo-pipeline: sync Billingo (API v3) documents into a SQL warehouse with Dagster."""
