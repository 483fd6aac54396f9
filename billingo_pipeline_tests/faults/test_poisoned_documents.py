"""One poisoned document costs one document, with the same outcome and stored values on SQLite
and PostgreSQL: values a column cannot hold are document errors named by field, the raw payload is
kept losslessly, every other document lands, the sync ends PARTIAL, and the errors are one plain
line each (never SQL, parameters or payload excerpts)."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
import sqlalchemy as sa

from billingo_pipeline.sync import write_isolating_refusals
from billingo_pipeline.warehouse.documents import stored_payload
from billingo_pipeline.warehouse.schema import billingo_documents_raw, billingo_invoice_items, billingo_invoices
from billingo_pipeline.warehouse.sync_log import COMPLETED, FAILED, PARTIAL

# field path to corrupt -> value -> what the document's error must say (after "field: ")
POISONS = [
    ("document_partner.name", "Kiss\x00Kft", "document_partner.name: contains a NUL character"),
    ("gross_total", float("inf"), "gross_total: inf is not a finite number"),
    ("items.0.quantity", float("nan"), "items[0].quantity: nan is not a finite number"),
    ("gross_total", 1e15, "gross_total: 1E+15 is out of range for the warehouse (at most 14 digits before the decimal point)"),
    ("summary.net_amount", 1.5e38, "summary.net_amount: 1.5E+38 is out of range for the warehouse"),
    ("comment", "bad \ud800 text", "comment: contains an unpaired UTF-16 surrogate"),
    ("document_partner.name", "N" * 300, "document_partner.name: 300 characters, more than the 255"),
    ("block_id", 2**64, "block_id: 18446744073709551616 is out of range for a 64-bit integer column"),
    ("items.0.net_unit_amount", 99999999999999.9999999, "items[0].net_unit_amount"),
]
# Poison in a field that stays raw-only costs nothing: the document is stored as usual.
HARMLESS = ("partner.name", "raw\x00only")


def _raw_rows(rig):
    with rig.engine.connect() as conn:
        return {
            r.document_id: stored_payload(r.payload, r.payload_verbatim)
            for r in conn.execute(
                sa.select(billingo_documents_raw.c.document_id, billingo_documents_raw.c.payload, billingo_documents_raw.c.payload_verbatim)
                .where(billingo_documents_raw.c.company_id == rig.company_id)
            )
        }


def _same_json(a, b) -> bool:
    """Equal as JSON values: numbers compared exactly by value (JSONB keeps 1.5e38 as the integer
    150000...0, the same number), NaN equal to NaN."""
    def exact(value):
        return json.loads(json.dumps(value), parse_float=Decimal, parse_int=Decimal, parse_constant=str)
    return exact(a) == exact(b)


def test_each_poisoned_document_fails_alone_and_everything_else_lands(rig):
    ids = sorted(rig.source())
    poisoned = dict(zip(ids, POISONS))
    for document_id, (path, value, _) in poisoned.items():
        rig.simulator.corrupt_document(rig.api_key, document_id, path, value)
    harmless_id = ids[len(POISONS)]
    rig.simulator.corrupt_document(rig.api_key, harmless_id, *HARMLESS)

    outcome = rig.sync()
    log = rig.last_log()
    assert (outcome.status, log.status) == (PARTIAL, PARTIAL), log.error_message
    assert log.invoices_failed == len(POISONS) and log.error_message is None
    errors = {e["document_id"]: e["message"] for e in log.errors}
    assert set(errors) == set(poisoned)
    for document_id, (_, _, expected) in poisoned.items():
        message = errors[document_id]
        assert message.startswith(expected), (document_id, message)
        assert "out of range" in message or not isinstance(poisoned[document_id][1], (int, float)) or "finite" in message
        assert "\n" not in message and "\x00" not in message and len(message) < 200
        assert not any(word in message.upper() for word in ("INSERT", "SELECT", "UPDATE ", "VALUES", "[SQL"))

    # Every other document landed; the poisoned ones are stored raw, exactly as Billingo sent them.
    rig.assert_nothing_lost_or_doubled(failed_ids=frozenset(poisoned))
    raw, source = _raw_rows(rig), rig.source()
    assert all(_same_json(raw[i], source[i]) for i in source)
    assert raw[harmless_id]["partner"]["name"] == "raw\x00only"

    # The next sync reports the same documents again, and nothing else changes.
    again = rig.sync()
    log = rig.last_log()
    assert again.status == PARTIAL and {e["document_id"] for e in log.errors} == set(poisoned)
    assert log.invoices_created == log.invoices_updated == 0  # the poisoned ones fail again, nothing else changes

    # Once Billingo serves a document correctly it is stored by the next sync.
    fixed_id = ids[0]
    rig.simulator.corrupt_document(rig.api_key, fixed_id, "document_partner.name", "Kiss Kft")
    rig.sync()
    assert fixed_id in rig.stored_ids(billingo_invoices)
    assert rig.last_log().invoices_failed == len(POISONS) - 1


def test_stored_values_are_the_same_on_both_dialects(rig):
    """The limits are the column's, not the database's: SQLite refuses what PostgreSQL would."""
    [first, second, *_] = sorted(rig.source())
    rig.simulator.corrupt_document(rig.api_key, first, "gross_total", 99999999999999.98)
    rig.simulator.corrupt_document(rig.api_key, second, "document_partner.name", "É" * 255)
    assert rig.sync().status == COMPLETED
    with rig.engine.connect() as conn:
        gross = conn.execute(sa.select(billingo_invoices.c.gross_total).where(billingo_invoices.c.document_id == first)).scalar_one()
        name = conn.execute(sa.select(billingo_invoices.c.partner_name).where(billingo_invoices.c.document_id == second)).scalar_one()
    assert str(gross) == "99999999999999.980000" and name == "É" * 255  # the largest that fit, exactly


def test_a_sync_where_every_document_fails_is_failed_with_a_message(rig):
    for document_id in rig.source():
        rig.simulator.corrupt_document(rig.api_key, document_id, "gross_total", "12.700,00 Ft")
    outcome = rig.sync()
    log = rig.last_log()
    assert (outcome.status, log.status) == (FAILED, FAILED)
    assert log.error_message.startswith(f"all {len(rig.source())} document(s) failed; first: document ")
    assert "gross_total: '12.700,00 Ft' is not a number" in log.error_message


def test_a_batch_the_database_refuses_is_written_again_one_document_at_a_time(rig):
    """Whatever the limits miss, the database's refusal of one row costs only that row."""
    def write(conn, batch, assume_new):  # an item of an invoice that does not exist breaks the foreign key
        conn.execute(billingo_invoice_items.insert(), [
            {"company_id": rig.company_id, "document_id": d, "position": 1} for d in batch
        ])

    rig.sync()
    [stored_id, *_] = sorted(rig.stored_ids(billingo_invoices))
    with rig.engine.begin() as conn:
        conn.execute(billingo_invoice_items.delete().where(billingo_invoice_items.c.document_id == stored_id))
    refused = write_isolating_refusals(rig.engine, [stored_id, 999_999_999], write, lambda d: d)
    assert list(refused) == [999_999_999]
    assert refused[999_999_999].startswith("the warehouse refused it (IntegrityError") or "ForeignKeyViolation" in refused[999_999_999]
    with rig.engine.connect() as conn:
        positions = conn.execute(sa.select(billingo_invoice_items.c.position).where(billingo_invoice_items.c.document_id == stored_id)).all()
    assert positions == [(1,)]


def _refuse_comment_in_the_database(rig, comment: str) -> None:
    """A rule only the database knows (a trigger): what the column limits cannot foresee."""
    with rig.engine.begin() as conn:
        if rig.engine.dialect.name == "sqlite":
            for event in ("INSERT", "UPDATE"):
                conn.exec_driver_sql(
                    f"CREATE TRIGGER refuse_{event.lower()} BEFORE {event} ON billingo_invoices "
                    f"WHEN NEW.comment = '{comment}' BEGIN SELECT RAISE(ABORT, 'refused by a test trigger'); END"
                )
        else:
            conn.exec_driver_sql(
                "CREATE FUNCTION refuse_comment() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                f"IF NEW.comment = '{comment}' THEN RAISE EXCEPTION 'refused by a test trigger' USING ERRCODE = 'check_violation'; "
                "END IF; RETURN NEW; END $$"
            )
            conn.exec_driver_sql(
                "CREATE TRIGGER refuse_comment BEFORE INSERT OR UPDATE ON billingo_invoices "
                "FOR EACH ROW EXECUTE FUNCTION refuse_comment()"
            )


def test_a_document_the_database_refuses_in_a_full_sweep_is_not_marked_deleted(rig):
    assert rig.sync().status == COMPLETED
    refused_id = max(rig.source())
    _refuse_comment_in_the_database(rig, "refuse me")
    rig.simulator.corrupt_document(rig.api_key, refused_id, "comment", "refuse me")

    outcome = rig.sync(full=True)
    log = rig.last_log()
    assert outcome.status == PARTIAL and log.invoices_marked_deleted == 0
    [error] = log.errors
    assert error["document_id"] == refused_id and error["message"].startswith("not stored: the warehouse refused it (")
    assert "refused by a test trigger" in error["message"] and "INSERT" not in error["message"]
    # Billingo still has it: the invoice stored before stays live, nothing else moved.
    assert rig.live_invoice_ids() == set(rig.source())
