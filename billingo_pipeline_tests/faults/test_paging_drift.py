"""Documents that vanish while a sync pages are marked by that same sync, on both databases."""

from __future__ import annotations

import sqlalchemy as sa

from billingo_pipeline.warehouse.schema import billingo_documents_raw, billingo_invoices
from billingo_pipeline.warehouse.sync_log import COMPLETED


def test_a_draft_deleted_while_the_sync_pages_is_marked_deleted_by_that_sync(rig):
    assert rig.sync().status == COMPLETED
    victim = max(rig.source())  # newest first: on page 1, already read when it goes
    simulator = rig.simulator
    simulator.schedule(len(simulator.requests_log) + 1, lambda: simulator.delete_document(rig.api_key, victim))

    outcome = rig.sync(full=True)  # only a full sweep may mark documents deleted
    log = rig.last_log()
    assert outcome.status == COMPLETED and log.fetch_complete
    assert log.invoices_marked_deleted == 1 and log.invoices_processed == len(rig.source())
    with rig.engine.connect() as conn:
        missing = conn.execute(
            sa.select(billingo_documents_raw.c.document_id).where(billingo_documents_raw.c.missing_since.is_not(None))
        ).scalars().all()
        deleted = conn.execute(
            sa.select(billingo_invoices.c.document_id).where(billingo_invoices.c.deleted_in_source_at.is_not(None))
        ).scalars().all()
    assert missing == [victim] and deleted == [victim]
    assert rig.live_invoice_ids() == set(rig.source())
