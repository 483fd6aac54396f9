"""One partition per company (tenant), keyed by the company slug, and how companies are laid out
over runs: contiguous partition ranges (the daily schedule and the CLI's runner both use them)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import dagster as dg

from .iterables import chunked

COMPANY_PARTITIONS_NAME = "billingo_companies"

company_partitions = dg.DynamicPartitionsDefinition(name=COMPANY_PARTITIONS_NAME)

# Dagster's run tags naming the partitions a run covers: one partition, or a range (the daily
# schedule's chunks, backfills).
PARTITION_TAG = "dagster/partition"
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


def ensure_company_partitions(instance: dg.DagsterInstance, slugs: Sequence[str]) -> list[str]:
    """Add the slugs that are not partitions yet; returns the ones added."""
    existing = set(instance.get_dynamic_partitions(COMPANY_PARTITIONS_NAME))
    missing = [slug for slug in slugs if slug not in existing]
    if missing:
        instance.add_dynamic_partitions(COMPANY_PARTITIONS_NAME, missing)
    return missing


@dataclass(frozen=True)
class SyncChunk:
    """One run's companies: the partition range ``first``..``last`` and the companies wanted in it."""

    first: str
    last: str
    companies: tuple[str, ...]

    @property
    def tags(self) -> dict[str, str]:
        return {RANGE_START_TAG: self.first, RANGE_END_TAG: self.last}


def plan_sync_chunks(
    partition_keys: Sequence[str], wanted: Iterable[str], per_run: int, *, outside: Iterable[str] = ()
) -> list[SyncChunk]:
    """Contiguous chunks of the wanted companies, in partition order, at most ``per_run`` each.

    A range holds every partition between its ends: the step skips those that are not syncable,
    but a partition in ``outside`` (e.g. a syncable company nobody asked for) must never be inside
    one, so a chunk ends before it."""
    if per_run < 1:
        raise ValueError(f"per_run must be >= 1, got {per_run}")
    wanted_set, outside_set = set(wanted), set(outside)
    segments: list[list[str]] = [[]]
    for key in partition_keys:
        if key in wanted_set:
            segments[-1].append(key)
        elif key in outside_set and segments[-1]:
            segments.append([])
    return [
        SyncChunk(chunk[0], chunk[-1], tuple(chunk))
        for segment in segments
        for chunk in chunked(segment, per_run)
    ]
