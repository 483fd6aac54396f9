"""Billingo list endpoints as the sync engine sees them: each is described once (path, incremental
filter, how a page is stored, what a complete full sweep may mark) and swept by the same engine
(``sync.sync_endpoint``): drift-proof paging, retries, the cursor, heartbeats and counts.

Adding an endpoint of entities with ids is a module here declaring an ``entities.EntityEndpoint``
(path, filters, its field mapping, its raw and normalized tables in ``warehouse/schema.py``), listed
in ``SYNC_ENDPOINTS`` (``endpoints/registry.py``); documents have a writer of their own (items).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Engine


@dataclass(frozen=True)
class PageContext:
    company_id: int
    sync_id: int
    now: dt.datetime
    # Nothing of the company was stored for the endpoint when its sweep began (its first sync;
    # the company's sync lock keeps anyone else from storing any since), and a sweep yields each
    # id once: ``prepare_page`` knows that none of the page is stored without reading it. Should
    # one be stored after all, the write finds it (``bulk.AssumedNewKeysExist``) and upserts.
    nothing_stored: bool = False


@dataclass
class PageOutcome:
    """What storing one page did; the engine adds them up for the sync log."""

    created: int = 0
    updated: int = 0
    skipped: int = 0  # unchanged since the last sync: nothing written but "seen"
    restored: int = 0  # back after being marked deleted in source
    items_written: int = 0
    errors: list[dict] = field(default_factory=list)  # [{document_id, message}], one per failed document

    def add(self, other: PageOutcome) -> None:
        self.created += other.created
        self.updated += other.updated
        self.skipped += other.skipped
        self.restored += other.restored
        self.items_written += other.items_written
        self.errors.extend(other.errors)


@dataclass(frozen=True)
class ListEndpoint:
    name: str
    path: str
    # The query parameter an incremental sync filters on; None: every sync of it is a full sweep.
    modified_since_filter: str | None
    # One page of items with usable ids, in two steps so the engine can write one page while it
    # prepares the next: ``prepare_page`` reads what is stored of them and does the CPU work
    # (hashing, normalization) without writing; ``write_page`` writes, in one transaction where it
    # can (one poisoned item costs that item only). A sweep yields every id once, so the two
    # pages in flight never hold the same item.
    prepare_page: Callable[[Engine, PageContext, Sequence[tuple[int, dict]]], Any]
    write_page: Callable[[Engine, PageContext, Any], PageOutcome]
    # After a complete full sweep: marks what Billingo no longer returns (never deletes); gets the
    # ids the sync saw but the final pass did not; returns how many rows it marked.
    mark_vanished: Callable[[Engine, PageContext, Sequence[int]], int]
    # Query filters every request of the sweep carries.
    filters: Mapping[str, str] = field(default_factory=dict)
    # Whether nothing of a company (by id) is stored for the endpoint yet; None: never assumed.
    stores_nothing: Callable[[Engine, int], bool] | None = None
    # For an endpoint without a modification filter: what an incremental sync reads instead of
    # everything (spendings: the unpaid ones), and how it finds what left that set since.
    incremental: IncrementalSubset | None = None

    @property
    def always_full(self) -> bool:
        """No way to read only what changed: every sync reads it whole, so every complete sweep
        may mark what vanished (the documents' incremental syncs may not)."""
        return self.modified_since_filter is None and self.incremental is None


@dataclass(frozen=True)
class IncrementalSubset:
    """An incremental sync of an endpoint without a modification filter: it sweeps the subset
    ``filters`` selects (the part that can still change), then re-reads one by one
    (``{path}/{id}``) the items stored as members of it that the sweep no longer returned (they
    changed: paid, say) and marks those Billingo no longer has. Items that enter the endpoint
    outside the subset wait for the next full sweep."""

    filters: Mapping[str, str]
    # Ids stored as members of the subset that this sync (``PageContext``) has not seen.
    left_subset: Callable[[Engine, PageContext], list[int]]
    # Mark these ids missing in Billingo (a single read answered 404); returns how many rows.
    mark_missing: Callable[[Engine, PageContext, Sequence[int]], int]
