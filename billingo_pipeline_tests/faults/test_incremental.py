"""Incremental sync: after a complete full sweep only documents modified since the cursor are
asked for; the cursor is Billingo's clock, advanced only by a sync that fetched completely; full
sweeps still run when they must. On SQLite and PostgreSQL, against the simulator."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
import sqlalchemy as sa

from billingo_pipeline.sync import billingo_wall_time, plan_sync, prefetched
from billingo_pipeline.warehouse.schema import billingo_invoices, sync_log
from billingo_pipeline.warehouse.sync_log import COMPLETED, FULL, INCREMENTAL, utcnow
from billingo_pipeline_tests.faults.conftest import HISTORY_AGE

OVERLAP = dt.timedelta(minutes=10)


def _invoice(rig, document_id):
    with rig.engine.connect() as conn:
        return conn.execute(
            sa.select(billingo_invoices).where(billingo_invoices.c.company_id == rig.company_id, billingo_invoices.c.document_id == document_id)
        ).one()


def _document_requests(rig, since: int):
    return [r for r in rig.simulator.requests_log[since:] if r.path == "/v3/documents"]


def _outstanding(rig) -> list[int]:
    return sorted(i for i, d in rig.source().items() if d["payment_status"] in ("outstanding", "expired") and d["type"] == "invoice")


def test_after_a_full_sweep_an_unchanged_sync_costs_two_calls_and_fetches_nothing(rig):
    first = rig.sync()
    full = rig.last_log()
    assert (first.status, full.mode, full.modified_since) == (COMPLETED, FULL, None)
    assert abs(full.cursor - rig.simulator.now()) < dt.timedelta(seconds=5)

    before = len(rig.simulator.requests_log)
    assert rig.sync().status == COMPLETED
    incremental = rig.last_log()
    assert incremental.mode == INCREMENTAL and incremental.modified_since == full.cursor - OVERLAP
    assert incremental.api_calls == 2 and incremental.documents_fetched == 0 and incremental.invoices_processed == 0
    [request] = _document_requests(rig, before)
    assert request.query["last_modified_date"] == billingo_wall_time(full.cursor - OVERLAP)
    rig.assert_nothing_lost_or_doubled()


def test_an_invoice_paid_two_years_after_it_was_issued_is_caught_by_the_next_incremental_sync(rig):
    rig.sync()
    oldest = min(_outstanding(rig), key=lambda i: rig.source()[i]["invoice_date"])
    issued = dt.date.fromisoformat(rig.source()[oldest]["invoice_date"])
    paid_on = issued + dt.timedelta(days=730)
    rig.simulator.pay_document(rig.api_key, oldest, paid_date=paid_on)

    assert rig.sync().status == COMPLETED
    log = rig.last_log()
    assert log.mode == INCREMENTAL and log.documents_fetched == 1 and log.invoices_updated == 1
    invoice = _invoice(rig, oldest)
    assert (invoice.payment_status, invoice.paid_date) == ("paid", paid_on)
    rig.assert_nothing_lost_or_doubled()


def test_a_document_modified_while_a_sync_pages_is_caught_by_the_next_one(rig):
    rig.sync()
    newest_unpaid = max(_outstanding(rig))  # newest first: on page 1, read before page 2 is asked for

    def pay_while_paging(request):
        if request.path == "/v3/documents" and request.query.get("page") == "2":
            rig.simulator.pay_document(rig.api_key, newest_unpaid)

    rig.simulator.on_request(pay_while_paging)
    rig.sync(full=True)  # three pages: the payment lands after page 1 was read
    rig.simulator.on_request(lambda request: None)
    assert _invoice(rig, newest_unpaid).payment_status != "paid"  # this sync could not see it

    rig.sync()
    assert rig.last_log().mode == INCREMENTAL
    assert _invoice(rig, newest_unpaid).payment_status == "paid"


def test_a_deleted_draft_is_marked_by_the_next_full_sweep_only(rig):
    rig.sync()
    victim = max(rig.source())
    rig.simulator.delete_document(rig.api_key, victim)
    rig.sync()
    assert rig.last_log().mode == INCREMENTAL and _invoice(rig, victim).deleted_in_source_at is None

    rig.sync(full=True)
    log = rig.last_log()
    assert log.mode == FULL and log.invoices_marked_deleted == 1
    assert _invoice(rig, victim).deleted_in_source_at is not None


@pytest.mark.parametrize("skew_minutes", [-15, 15], ids=["billingo-behind", "billingo-ahead"])
def test_billingos_clock_off_by_fifteen_minutes_loses_nothing(rig, skew_minutes):
    rig.simulator.shift_clock(dt.timedelta(minutes=skew_minutes))
    rig.sync()
    full = rig.last_log()
    # The cursor is Billingo's clock, not ours.
    assert abs(full.cursor - rig.simulator.now()) < dt.timedelta(seconds=5)
    assert abs((full.cursor - utcnow()) - (HISTORY_AGE + dt.timedelta(minutes=skew_minutes))) < dt.timedelta(seconds=5)
    changed = _outstanding(rig)[:3]
    for document_id in changed:
        rig.simulator.pay_document(rig.api_key, document_id)
    rig.sync()
    log = rig.last_log()
    assert log.mode == INCREMENTAL and log.invoices_updated == 3 and log.invoices_failed == 0
    assert all(_invoice(rig, i).payment_status == "paid" for i in changed)


def test_a_sync_that_did_not_fetch_completely_does_not_move_the_cursor(rig):
    rig.sync()
    cursor = rig.last_log().cursor
    rig.simulator.inject_fault("paging_nonsense", envelope={"total": -1})
    rig.sync()
    assert rig.last_log().fetch_complete is False
    rig.sync()
    assert rig.last_log().modified_since == cursor - OVERLAP  # still from the last complete fetch


def test_without_billingos_clock_the_sync_runs_and_the_next_starts_from_the_old_cursor(rig):
    rig.sync()
    cursor = rig.last_log().cursor
    rig.simulator.inject_fault("server_error", times=4, path_prefix="/v3/utils/time")
    assert rig.sync().status == COMPLETED
    assert rig.last_log().cursor is None
    rig.sync()
    assert rig.last_log().modified_since == cursor - OVERLAP


def _age_last_full_sweep(rig, **values):
    with rig.engine.begin() as conn:
        conn.execute(sync_log.update().where(sync_log.c.mode == FULL).values(**values))


def test_full_sweeps_still_run_weekly_after_normalization_changes_and_on_demand(rig):
    rig.sync()
    now = rig.last_log().cursor
    assert plan_sync(rig.engine, rig.company_id, billingo_now=now).mode == INCREMENTAL
    assert plan_sync(rig.engine, rig.company_id, billingo_now=now, full_requested=True).reason == "a full sweep was asked for"
    weekly = plan_sync(rig.engine, rig.company_id, billingo_now=now + dt.timedelta(days=7, minutes=1))
    assert weekly.mode == FULL and weekly.reason.startswith("the last full sweep is 7.0 days old")
    _age_last_full_sweep(rig, normalization_revision=0)
    assert plan_sync(rig.engine, rig.company_id, billingo_now=now).reason == "normalization changed since the last full sweep"


def test_first_sync_is_full(rig):
    plan = plan_sync(rig.engine, rig.company_id, billingo_now=utcnow())
    assert (plan.mode, plan.reason) == (FULL, "no complete full sweep yet")


def test_budapest_wall_time_and_the_autumn_hour_lived_twice():
    assert billingo_wall_time(dt.datetime(2026, 7, 1, 10, 0, tzinfo=dt.timezone.utc)) == "2026-07-01 12:00:00"
    assert billingo_wall_time(dt.datetime(2026, 1, 15, 10, 0, 5, tzinfo=dt.timezone.utc)) == "2026-01-15 11:00:05"
    # 2026-10-25 00:30 UTC is 02:30 CEST, a wall time that comes again at 01:30 UTC (CET): ask an hour earlier.
    assert billingo_wall_time(dt.datetime(2026, 10, 25, 0, 30, tzinfo=dt.timezone.utc)) == "2026-10-25 01:30:00"


def test_prefetching_hands_over_pages_and_errors_in_order():
    assert list(prefetched(iter(range(5)))) == [0, 1, 2, 3, 4]

    def broken():
        yield 1
        raise ValueError("page 2 is broken")

    got = []
    with pytest.raises(ValueError, match="page 2 is broken"):
        for page in prefetched(broken()):
            got.append(page)
    assert got == [1]

    produced = []

    def endless():
        for number in range(10_000):
            produced.append(number)
            yield number

    pages = prefetched(endless())
    assert next(pages) == 0
    pages.close()  # the consumer stops: so does the producer, a page or two ahead at most
    assert len(produced) <= 4


def test_while_it_waits_for_a_slow_page_the_consumer_still_does_its_own_work():
    """The sync reports finished page writes while Billingo takes its time with the next page;
    whatever that work raises stops the consumer like an error of the pages."""
    release = threading.Event()
    ticks = []

    def slow():
        yield 1
        release.wait(5)
        yield 2

    def waiting():
        ticks.append(threading.current_thread())
        if len(ticks) == 3:
            release.set()

    assert list(prefetched(slow(), while_waiting=waiting)) == [1, 2]
    assert len(ticks) >= 3 and set(ticks) == {threading.current_thread()}

    def lock_lost():
        raise RuntimeError("the sync-log row is no longer ours")

    stalled = threading.Event()

    def stalls():
        yield 1
        stalled.wait(5)

    got = []
    with pytest.raises(RuntimeError, match="no longer ours"):
        for page in prefetched(stalls(), while_waiting=lock_lost):
            got.append(page)
    stalled.set()
    assert got == [1]
