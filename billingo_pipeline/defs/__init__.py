"""Everything Dagster loads, one folder per concern (``dg.load_from_defs_folder`` in definitions.py).

``billingo/``: the sync (assets, checks, job, schedule, sensors, the sync-health asset);
``reporting/``: the aging report and the sensor that follows syncs with it; ``resources.py``: the
resources every definition binds to. The code they run (client, normalization, warehouse,
health rules, alerts) lives outside this folder and imports nothing of it.
"""
