"""Documents that are odd or wrong: one malformed field, 5 MB strings, many documents full of
emoji, right-to-left text and control characters. On SQLite and PostgreSQL.

A bad document costs that document only (PARTIAL, its id and field named, the rest stored, its raw
payload kept); text comes back exactly as Billingo sent it, whatever it holds.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from billingo_pipeline.warehouse.schema import billingo_documents_raw, billingo_invoice_items, billingo_invoices
from billingo_pipeline.warehouse.sync_log import COMPLETED, PARTIAL
from billingo_pipeline_tests.faults.conftest import DOCUMENTS

# Aim: 10,000. A first sync of 10,000 documents takes about a minute on PostgreSQL here (bulk writes
# are being made faster), so the matrix runs this many and bench/ measures the large numbers.
MANY_DOCUMENTS = 1_000
FIVE_MB = 5 * 1024 * 1024

NASTY_TEXTS = (
    "Kovács & Fiai Kft. 🧾💸 👨‍👩‍👧‍👦 🇭🇺",  # emoji, a ZWJ family, a flag (multi-code-point glyphs)
    "شركة الأمل للتجارة والمقاولات",  # Arabic, right to left
    'חברת שלום בע"מ',  # Hebrew, right to left, with a quote
    "Mixed \u202eevil override\u202c and \u2067isolate\u2069 bidi controls",
    "Tab\there, LF\nthere, CR\r, bell\x07, escape\x1b[31m, DEL\x7f, unit separator\x1f",
    "zero\u200bwidth, \ufeffBOM, soft\u00adhyphen, NBSP\u00a0",
    "𝕌𝕟𝕚𝕔𝕠𝕕𝕖 outside the BMP 𠜎 𝄞",
    "Árvíztűrő tükörfúrógép ÁRVÍZTŰRŐ TÜKÖRFÚRÓGÉP",
)


def _nasty(index: int, shift: int) -> str:
    return f"{NASTY_TEXTS[(index + shift) % len(NASTY_TEXTS)]} #{index}"


def _stored_texts(rig) -> tuple[dict, dict, dict]:
    """(invoice partner name and comment, first item name and comment, raw payload) by document id."""
    with rig.engine.connect() as conn:
        invoices = {r.document_id: (r.partner_name, r.comment) for r in conn.execute(
            sa.select(billingo_invoices.c.document_id, billingo_invoices.c.partner_name, billingo_invoices.c.comment)
            .where(billingo_invoices.c.company_id == rig.company_id))}
        items = {r.document_id: (r.name, r.comment) for r in conn.execute(
            sa.select(billingo_invoice_items.c.document_id, billingo_invoice_items.c.name, billingo_invoice_items.c.comment)
            .where(billingo_invoice_items.c.company_id == rig.company_id, billingo_invoice_items.c.position == 1))}
        raw = dict(conn.execute(
            sa.select(billingo_documents_raw.c.document_id, billingo_documents_raw.c.payload)
            .where(billingo_documents_raw.c.company_id == rig.company_id)).all())
    return invoices, items, raw


def test_one_malformed_field_fails_that_document_only(rig):
    bad = list(rig.source().values())[7]
    good_quantity = bad["items"][0]["quantity"]
    rig.simulator.corrupt_document(rig.api_key, bad["id"], "items.0.quantity", "két darab")

    result = rig.sync()
    log = rig.last_log()
    assert (result.success, result.status, log.status) == (True, PARTIAL, PARTIAL)
    assert (log.invoices_processed, log.invoices_created, log.invoices_failed) == (DOCUMENTS, DOCUMENTS - 1, 1)
    [error] = log.errors
    assert error["document_id"] == bad["id"] and "items[0].quantity" in error["message"]
    assert "\n" not in error["message"] and log.error_message is None
    rig.assert_nothing_lost_or_doubled(failed_ids=frozenset({bad["id"]}))

    # Asking again changes nothing: still that one document, nothing doubled.
    again = rig.sync()
    assert again.status == PARTIAL and [e["document_id"] for e in rig.last_log().errors] == [bad["id"]]
    rig.assert_nothing_lost_or_doubled(failed_ids=frozenset({bad["id"]}))

    # Once Billingo serves it correctly, the next sync stores it and completes.
    rig.simulator.corrupt_document(rig.api_key, bad["id"], "items.0.quantity", good_quantity)
    log = rig.assert_recovers()
    assert log.invoices_created == 1


def test_five_megabyte_text_fields_are_stored_and_read_back_exactly(rig):
    documents = list(rig.source().values())
    huge_comment = ("Megjegyzés 🧾 שלום \t" * (FIVE_MB // 19))[:FIVE_MB]
    huge_item_comment = ("x" * 1023 + "\n") * (FIVE_MB // 1024)
    rig.simulator.corrupt_document(rig.api_key, documents[0]["id"], "comment", huge_comment)
    rig.simulator.corrupt_document(rig.api_key, documents[1]["id"], "items.0.comment", huge_item_comment)

    result = rig.sync()
    assert result.status == COMPLETED and rig.last_log().invoices_created == DOCUMENTS
    rig.assert_nothing_lost_or_doubled()
    invoices, items, raw = _stored_texts(rig)
    assert invoices[documents[0]["id"]][1] == huge_comment
    assert items[documents[1]["id"]][1] == huge_item_comment
    assert raw[documents[0]["id"]]["comment"] == huge_comment
    assert raw[documents[1]["id"]]["items"][0]["comment"] == huge_item_comment
    rig.assert_recovers(unchanged=True)


def test_a_five_megabyte_partner_name_fails_that_document_only_on_both_dialects(rig):
    # partner_name is a 255-character column: PostgreSQL would refuse the row, SQLite would take
    # it. Either way the warehouses would differ, so it is a document error on both.
    documents = list(rig.source().values())
    bad = documents[2]
    huge_name = "Óriás Név Kft. " * (FIVE_MB // 15)
    rig.simulator.corrupt_document(rig.api_key, bad["id"], "document_partner.name", huge_name)

    result = rig.sync()
    log = rig.last_log()
    assert (result.status, log.invoices_failed, log.invoices_created) == (PARTIAL, 1, DOCUMENTS - 1)
    [error] = log.errors
    assert error["document_id"] == bad["id"] and "document_partner.name" in error["message"]
    assert huge_name[:100] not in error["message"]  # the message names the field, it does not quote it
    rig.assert_nothing_lost_or_doubled(failed_ids=frozenset({bad["id"]}))
    _, _, raw = _stored_texts(rig)
    assert raw[bad["id"]]["document_partner"]["name"] == huge_name


@pytest.mark.parametrize("rig", [MANY_DOCUMENTS], indirect=True)
def test_many_documents_with_emoji_rtl_and_control_characters_come_back_exactly(rig):
    for index, document in enumerate(rig.source().values()):
        rig.simulator.corrupt_document(rig.api_key, document["id"], "document_partner.name", _nasty(index, 0))
        rig.simulator.corrupt_document(rig.api_key, document["id"], "items.0.name", _nasty(index, 1))
        rig.simulator.corrupt_document(rig.api_key, document["id"], "comment", _nasty(index, 2) * 3)
    source = rig.source()

    result = rig.sync(page_size=100)
    log = rig.last_log()
    assert (result.status, log.invoices_created, log.invoices_failed) == (COMPLETED, MANY_DOCUMENTS, 0)
    rig.assert_nothing_lost_or_doubled()
    invoices, items, raw = _stored_texts(rig)
    assert invoices == {i: (d["document_partner"]["name"], d["comment"]) for i, d in source.items()}
    assert items == {i: (d["items"][0]["name"], d["items"][0]["comment"]) for i, d in source.items()}
    assert {i: p["document_partner"]["name"] for i, p in raw.items()} == {i: d["document_partner"]["name"] for i, d in source.items()}

    # Nothing changed at Billingo: a full re-sync finds every hash equal (the text compared exactly).
    result = rig.sync(page_size=100, full=True)
    log = rig.last_log()
    assert (result.status, log.invoices_skipped, log.invoices_created, log.invoices_updated) == (COMPLETED, MANY_DOCUMENTS, 0, 0)
    rig.assert_nothing_lost_or_doubled()
