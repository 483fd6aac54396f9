"""The building block of a Billingo list endpoint whose items are entities with ids (partners,
spendings, document blocks, bank accounts): a raw table (payload, change hash, seen/missing marks)
and a normalized table filled by a declarative field mapping (``normalize.EntityFields``).

``entity_endpoint`` turns that description into the ``ListEndpoint`` the engine sweeps
(``sync.sync_endpoint``: drift-proof paging, retries, counts): a page is prepared (what is stored of
its entities read, each hashed, the new and changed ones normalized) and written in one transaction
(one the database refuses is written alone); unchanged ones are only marked as seen; after a
complete sweep the ones Billingo no longer returns are marked, never deleted. An entity that cannot
be normalized fails alone: its raw payload is still stored, the sync ends PARTIAL.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from ..iterables import chunked
from ..normalize import DocumentError, EntityFields, FieldMapping, normalize_entity
from ..warehouse import entities as store
from ..warehouse.documents import RawDocument, raw_document
from ..warehouse.refusals import write_isolating_refusals
from ..warehouse.schema import column_limits
from . import IncrementalSubset, ListEndpoint, PageContext, PageOutcome

MARK_BATCH_SIZE = 500


@dataclass(frozen=True)
class EntityEndpoint:
    """One list endpoint of entities, described once; ``list_endpoint`` is what the engine sweeps."""

    name: str  # sync_log_endpoints.endpoint, and the asset names' stem
    entity: str  # one item, in messages: "partner"
    path: str
    tables: store.EntityTables
    mapping: EntityFields
    description: str  # of its normalized asset
    spec_schema: str  # the spec's schema of one list item, which the mapping must cover
    # Fixed query filters of every request (a status, a type); none by default.
    filters: Mapping[str, str] = field(default_factory=dict)
    # The query parameter an incremental sync filters on; None: every sync reads it whole and
    # skips unchanged rows by hash (Billingo's partners, spendings, blocks and bank accounts).
    modified_since_filter: str | None = None
    # An incremental sync reads only the rows of the normalized table ``incremental_subset``
    # selects, asked for by ``incremental_filters`` (None: every sync reads it whole).
    incremental_filters: Mapping[str, str] | None = None
    incremental_subset: Callable[[sa.Table], sa.ColumnElement[bool]] | None = None
    # Bump when the mapping changes meaning: every row is rebuilt once from its raw payload.
    revision: int = 1

    def source_hash(self, content_hash: str) -> str:
        """What a normalized row remembers it was built from: the raw hash under this mapping."""
        return hashlib.sha256(f"{self.name}:{self.revision}:{content_hash}".encode()).hexdigest()

    @property
    def raw_asset(self) -> str:
        return self.tables.raw.name

    @property
    def normalized_asset(self) -> str:
        return self.tables.normalized.name

    @property
    def list_endpoint(self) -> ListEndpoint:
        return ListEndpoint(
            name=self.name,
            path=self.path,
            modified_since_filter=self.modified_since_filter,
            prepare_page=self.prepare_page,
            write_page=self.write_page,
            mark_vanished=self.mark_vanished,
            filters=dict(self.filters),
            stores_nothing=self.stores_nothing,
            incremental=None if self.incremental_filters is None else IncrementalSubset(
                filters=dict(self.incremental_filters), left_subset=self.left_subset, mark_missing=self.mark_missing,
            ),
        )

    def stores_nothing(self, engine: Engine, company_id: int) -> bool:
        with engine.connect() as conn:
            return store.stores_no_raw(conn, self.tables, company_id)

    def left_subset(self, engine: Engine, page: PageContext) -> list[int]:
        with engine.connect() as conn:
            return store.unseen_where(
                conn, self.tables, page.company_id, page.sync_id, self.incremental_subset(self.tables.normalized)
            )

    def mark_missing(self, engine: Engine, page: PageContext, ids: Sequence[int]) -> int:
        with engine.begin() as conn:
            store.mark_raw_missing(conn, self.tables, page.company_id, ids, page.now)
            return store.mark_normalized_of_missing(conn, self.tables, page.company_id, page.now)

    # -- one page ---------------------------------------------------------------------------------

    def prepare_page(self, engine: Engine, page: PageContext, items: Sequence[tuple[int, dict]]) -> PreparedEntityPage:
        """What to do with each entity of the page, by its change hash against what is stored, and
        the normalized rows of the new and changed ones. Reads the warehouse, writes nothing."""
        states = {}
        if not page.nothing_stored:
            with engine.connect() as conn:
                states = store.entity_states(conn, self.tables, page.company_id, [entity_id for entity_id, _ in items])
        prepared = PreparedEntityPage()
        for entity_id, payload in items:
            raw = raw_document(entity_id, payload)
            state = states.get(entity_id)
            source_hash = self.source_hash(raw.content_hash)
            built_from_it = state is not None and state.content_hash == raw.content_hash and state.source_hash == source_hash
            if built_from_it and state.missing_since is None and state.deleted_in_source_at is None:
                prepared.unchanged.append(entity_id)
                continue
            entity = _Entity(entity_id, raw, None)
            if state is None:
                prepared.first_seen.add(entity_id)
            try:
                row = normalize_entity(payload, self.mapping)
            except DocumentError as exc:
                prepared.errors.append(self.error(entity_id, exc.message))
            else:
                entity.row = {**row, self.tables.id_column: entity_id, "source_hash": source_hash}
                # Rewritten only to clear a missing/deleted mark: Billingo did not change it.
                prepared.kinds[entity_id] = (
                    "unchanged" if built_from_it else "created" if state is None or state.source_hash is None else "updated"
                )
                if state is not None and state.deleted_in_source_at is not None:
                    prepared.restoring.add(entity_id)
            prepared.to_write.append(entity)
        return prepared

    def write_page(self, engine: Engine, page: PageContext, prepared: PreparedEntityPage) -> PageOutcome:
        outcome = PageOutcome(errors=list(prepared.errors))

        def write(conn: Connection, batch: Sequence[_Entity], assume_new: bool) -> None:
            store.upsert_raw(
                conn, self.tables, page.company_id, page.sync_id, [e.raw for e in batch], page.now,
                new=assume_new and all(e.entity_id in prepared.first_seen for e in batch),
            )
            rows = [e for e in batch if e.row is not None]
            store.upsert_normalized(
                conn, self.tables, page.company_id, [e.row for e in rows], page.now,
                new=assume_new and all(prepared.kinds[e.entity_id] == "created" for e in rows),
            )

        if prepared.unchanged:
            with engine.begin() as conn:
                store.touch_raw(conn, self.tables, page.company_id, page.sync_id, prepared.unchanged, page.now)
        refused = write_isolating_refusals(engine, prepared.to_write, write, lambda e: e.entity_id)
        if refused:
            # Billingo still has them: what was stored of them must not look vanished.
            with engine.begin() as conn:
                store.touch_raw(conn, self.tables, page.company_id, page.sync_id, sorted(refused), page.now)
        for entity in prepared.to_write:
            if entity.entity_id in refused:
                outcome.errors.append(self.error(entity.entity_id, f"not stored: {refused[entity.entity_id]}"))
            elif entity.row is not None:
                kind = prepared.kinds[entity.entity_id]
                outcome.created += kind == "created"
                outcome.updated += kind == "updated"
                outcome.skipped += kind == "unchanged"
                outcome.restored += entity.entity_id in prepared.restoring
        outcome.skipped += len(prepared.unchanged)
        return outcome

    def mark_vanished(self, engine: Engine, page: PageContext, vanished_while_paging: Sequence[int]) -> int:
        """After a complete sweep: every stored entity this sync did not see, and those an earlier
        pass saw but the final pass did not, are missing in Billingo; their normalized rows become
        deleted in source. Returns how many normalized rows were marked."""
        with engine.begin() as conn:
            store.mark_unseen_raw(conn, self.tables, page.company_id, page.sync_id, page.now)
            for ids in chunked(vanished_while_paging, MARK_BATCH_SIZE):
                store.mark_raw_missing(conn, self.tables, page.company_id, ids, page.now)
            return store.mark_normalized_of_missing(conn, self.tables, page.company_id, page.now)

    def error(self, entity_id: int | None, message: str) -> dict:
        """A failed entity as ``sync_log.errors`` keeps it (``sync_log.error_subject`` names it)."""
        return {"document_id": None, "endpoint": self.name, "entity": self.entity, "entity_id": entity_id, "message": message}


def entity_mapping(
    fields: tuple[FieldMapping, ...], raw_only: Mapping[str, str], tables: store.EntityTables, *, entity: str
) -> EntityFields:
    """The mapping compiled against what the normalized table's columns can hold."""
    return EntityFields(fields, raw_only, column_limits(tables.normalized), entity=entity)


@dataclass
class _Entity:
    entity_id: int
    raw: RawDocument
    row: dict | None  # None: normalization failed, only the raw payload is stored


@dataclass
class PreparedEntityPage:
    unchanged: list[int] = field(default_factory=list)
    to_write: list[_Entity] = field(default_factory=list)
    kinds: dict[int, str] = field(default_factory=dict)  # created / updated / unchanged (a mark cleared)
    restoring: set[int] = field(default_factory=set)
    first_seen: set[int] = field(default_factory=set)
    errors: list[dict] = field(default_factory=list)
