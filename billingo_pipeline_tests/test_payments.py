"""Payment histories and the payment-status history, end to end: the simulator on a real socket ->
the sync -> the warehouse, on SQLite and on the real PostgreSQL. The first test syncs through
Dagster runs as the CLI does; the others call the engine as the sync asset does (a run costs a
second or more and adds nothing to what they check).
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
import sqlalchemy as sa

from billingo_pipeline.normalize import DocumentError, normalize_payment_history
from billingo_pipeline.reporting.queries import open_on, partner_days_to_pay, read_view
from billingo_pipeline.settings import PAYMENT_HISTORIES_PER_SYNC_ENV
from billingo_pipeline.simulator.ledger import payment_entry
from billingo_pipeline.warehouse import payments as payment_store
from billingo_pipeline.warehouse.companies import get_company
from billingo_pipeline.warehouse.schema import (
    billingo_document_payments,
    billingo_invoice_status_history,
    billingo_payment_history_state,
    sync_log,
)
from billingo_pipeline.warehouse.sync_log import COMPLETED, FULL, INCREMENTAL, utcnow

from .conftest import add_simulated_company, sync_companies, sync_directly

# The generated history is stamped up to a minute before "now": a clock moved past the incremental
# overlap (10 minutes) keeps it out of an incremental sync, whose counts are then exact.
HISTORY_AGE = dt.timedelta(minutes=12)
PAYMENT_PATH_SUFFIX = "/payments"


def _sync(engine, simulator, *slugs, full=False):
    results = sync_directly(engine, simulator, *slugs, full=full)
    assert all(r.success for r in results), [r.error for r in results]
    return results


def _sync_through_dagster(instance, warehouse_url, simulator, *slugs):
    results = sync_companies(instance, warehouse_url, simulator, *slugs)
    assert all(r.success for r in results), [r.error for r in results]
    return results


def _last_log(engine, company_id=None):
    query = sa.select(sync_log).order_by(sync_log.c.id.desc()).limit(1)
    if company_id is not None:
        query = query.where(sync_log.c.company_id == company_id)
    with engine.connect() as conn:
        return conn.execute(query).one()


def _stored_payments(engine, company_id: int) -> dict[int, list[tuple]]:
    p = billingo_document_payments
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(p.c.document_id, p.c.payment_date, p.c.price, p.c.payment_method, p.c.voucher_number, p.c.conversion_rate)
            .where(p.c.company_id == company_id).order_by(p.c.document_id, p.c.position)
        ).all()
    stored: dict[int, list[tuple]] = {}
    for row in rows:
        stored.setdefault(row.document_id, []).append(tuple(row)[1:])
    return stored


def _as_rows(history: list[dict]) -> list[tuple]:
    """A simulator payment history as the warehouse should hold it (exact decimals)."""
    return [
        (dt.date.fromisoformat(p["date"]), Decimal(str(p["price"])), p["payment_method"], p["voucher_number"],
         None if p["conversion_rate"] is None else Decimal(str(p["conversion_rate"])))
        for p in history
    ]


def _history(engine, company_id: int, document_id: int) -> list[sa.Row]:
    h = billingo_invoice_status_history
    with engine.connect() as conn:
        return conn.execute(
            sa.select(h).where(h.c.company_id == company_id, h.c.document_id == document_id).order_by(h.c.id)
        ).all()


def _payment_requests(simulator) -> list[str]:
    return [r.path for r in simulator.requests_log if r.path.endswith(PAYMENT_PATH_SUFFIX)]


def test_partially_paid_invoices_get_their_payments_and_paid_ones_cost_no_request(engine, warehouse_url, simulator, instance, fernet_key):
    api_key = add_simulated_company(engine, simulator, "acme", seed=7, documents=120)
    simulator.shift_clock(HISTORY_AGE)
    source = simulator.documents(api_key)
    partial = [d["id"] for d in source if d["payment_status"] == "partially_paid"]
    assert len(partial) >= 3  # the seed's portfolio has some

    _sync_through_dagster(instance, warehouse_url, simulator, "acme")
    company = get_company(engine, "acme")
    log = _last_log(engine)
    assert log.status == COMPLETED
    # One request per partially paid document, none for the others (paid ones are settled: a
    # first sight of them is no reason to spend the rate budget).
    assert (log.payment_history_calls, log.payment_histories_fetched, log.payment_histories_deferred) == (len(partial), len(partial), 0)
    assert sorted(_payment_requests(simulator)) == sorted(f"/v3/documents/{d}/payments" for d in partial)
    # The sync log's api_calls stay the sweep's (the clock and the pages): payment requests are counted apart.
    assert log.api_calls == 1 + log.pages_fetched
    stored = _stored_payments(engine, company.id)
    assert set(stored) == set(partial)
    for document_id in partial:
        assert stored[document_id] == _as_rows(simulator.payments(api_key, document_id))
    # Every invoice's first observation is its first status-history row.
    with engine.connect() as conn:
        first_rows = conn.execute(
            sa.select(sa.func.count()).select_from(billingo_invoice_status_history)
            .where(billingo_invoice_status_history.c.company_id == company.id, billingo_invoice_status_history.c.sync_id == log.id)
        ).scalar_one()
    assert first_rows == len(source)

    # An unchanged night: no status row, no payment request.
    _sync(engine, simulator, "acme")
    log = _last_log(engine)
    assert (log.mode, log.api_calls, log.payment_history_calls, log.payment_histories_deferred) == (INCREMENTAL, 2, 0, 0)
    assert len(_payment_requests(simulator)) == len(partial)


def test_a_recorded_payment_is_caught_by_the_next_sync_with_its_status_history(engine, simulator, fernet_key):
    api_key = add_simulated_company(engine, simulator, "acme", seed=8, documents=40)
    simulator.shift_clock(HISTORY_AGE)
    target = next(d for d in simulator.documents(api_key) if d["payment_status"] == "outstanding" and not d["cancelled"] and d["type"] == "invoice")
    gross = Decimal(str(target["gross_total"]))
    _sync(engine, simulator, "acme")
    company = get_company(engine, "acme")
    first_sync = _last_log(engine).id

    part = (gross / 4).quantize(Decimal("1") if target["currency"] == "HUF" else Decimal("0.01"))
    simulator.record_payment(api_key, target["id"], price=part, voucher_number="V-1")
    _sync(engine, simulator, "acme")
    second = _last_log(engine)
    assert (second.mode, second.payment_history_calls, second.payment_histories_fetched) == (INCREMENTAL, 1, 1)
    assert [row[1] for row in _stored_payments(engine, company.id)[target["id"]]] == [part]

    simulator.record_payment(api_key, target["id"], voucher_number="V-2")  # the rest
    _sync(engine, simulator, "acme")
    third = _last_log(engine)
    assert (third.payment_history_calls, third.payment_histories_fetched) == (1, 1)
    stored = _stored_payments(engine, company.id)[target["id"]]
    assert stored == _as_rows(simulator.payments(api_key, target["id"]))
    assert sum(row[1] for row in stored) == gross and [row[3] for row in stored] == ["V-1", "V-2"]

    history = _history(engine, company.id, target["id"])
    assert [(h.payment_status, h.previous_payment_status, h.sync_id) for h in history] == [
        ("outstanding", None, first_sync), ("partially_paid", "outstanding", second.id), ("paid", "partially_paid", third.id),
    ]
    # Billingo's fake paid_date of an unpaid document is not a paid date.
    assert history[0].paid_date is None and history[2].paid_date == simulator.today()
    assert history[0].observed_at < history[1].observed_at < history[2].observed_at
    assert history[1].observed_at >= second.started_at and history[2].observed_at <= third.finished_at


def test_the_cap_defers_the_rest_and_the_next_syncs_fetch_them_first(engine, simulator, fernet_key, monkeypatch):
    monkeypatch.setenv(PAYMENT_HISTORIES_PER_SYNC_ENV, "1")
    api_key = add_simulated_company(engine, simulator, "acme", seed=7, documents=120)
    simulator.shift_clock(HISTORY_AGE)
    partial = sorted(d["id"] for d in simulator.documents(api_key) if d["payment_status"] == "partially_paid")
    assert len(partial) == 3
    company = get_company(engine, "acme")

    def sync_and_fetched() -> tuple[sa.Row, set[int]]:
        _sync(engine, simulator, "acme")
        return _last_log(engine), set(_stored_payments(engine, company.id))

    log, fetched = sync_and_fetched()
    assert (log.payment_history_calls, log.payment_histories_fetched, log.payment_histories_deferred) == (1, 1, 2)
    # A payment recorded now makes another history due, after the two deferred ones.
    late = next(d for d in simulator.documents(api_key) if d["payment_status"] == "outstanding" and d["type"] == "invoice" and not d["cancelled"])
    simulator.record_payment(api_key, late["id"], price=Decimal(str(late["gross_total"])) / 2)
    order = []
    for deferred_after in (2, 1, 0):  # the deferred two first, although these syncs see no change of them
        log, now_fetched = sync_and_fetched()
        assert (log.mode, log.payment_history_calls, log.payment_histories_deferred) == (INCREMENTAL, 1, deferred_after)
        order.extend(now_fetched - fetched)
        fetched = now_fetched
    assert set(order[:2]) <= set(partial) and order[2] == late["id"]
    assert fetched == {*partial, late["id"]}
    # Once caught up, a sync spends nothing on payments.
    log, _ = sync_and_fetched()
    assert (log.payment_history_calls, log.payment_histories_deferred) == (0, 0)


def test_a_history_as_a_php_object_and_a_server_error_are_taken_in_stride(engine, simulator, fernet_key):
    api_key = add_simulated_company(engine, simulator, "acme", seed=7, documents=120)
    simulator.shift_clock(HISTORY_AGE)
    partial = sorted(d["id"] for d in simulator.documents(api_key) if d["payment_status"] == "partially_paid")
    # The first history request answers 500 once (retried), the next one comes as an object.
    simulator.inject_fault("server_error", path_prefix=f"/v3/documents/{partial[0]}/payments")
    simulator.inject_fault("data_not_list", path_prefix=f"/v3/documents/{partial[1]}/payments")
    _sync(engine, simulator, "acme")
    log = _last_log(engine)
    assert (log.status, log.payment_histories_fetched, log.payment_histories_deferred) == (COMPLETED, len(partial), 0)
    assert log.payment_history_calls == len(partial) + 1  # the retry counts
    stored = _stored_payments(engine, get_company(engine, "acme").id)
    for document_id in partial[:2]:
        assert stored[document_id] == _as_rows(simulator.payments(api_key, document_id))


def test_a_gone_document_is_not_a_failure_and_clears_its_mark(engine, simulator, fernet_key):
    add_simulated_company(engine, simulator, "acme", seed=9, documents=10)
    simulator.shift_clock(HISTORY_AGE)
    _sync(engine, simulator, "acme")
    company = get_company(engine, "acme")
    gone = 999_999_999
    with engine.begin() as conn:
        payment_store.mark_payments_due(conn, company.id, _last_log(engine).id, [gone], utcnow())
    _sync(engine, simulator, "acme")
    log = _last_log(engine)
    assert (log.status, log.payment_history_calls, log.payment_histories_fetched, log.payment_histories_deferred) == (COMPLETED, 1, 0, 0)
    with engine.connect() as conn:
        mark = conn.execute(sa.select(billingo_payment_history_state).where(billingo_payment_history_state.c.document_id == gone)).one()
    assert mark.due_since is None and mark.not_found


def test_an_unchanged_full_sweep_a_day_later_adds_no_status_row(engine, simulator, fernet_key):
    api_key = add_simulated_company(engine, simulator, "acme", seed=10, documents=40)
    _sync(engine, simulator, "acme")
    company = get_company(engine, "acme")
    with engine.connect() as conn:
        before = conn.execute(sa.select(sa.func.count()).select_from(billingo_invoice_status_history)).scalar_one()
    simulator.shift_clock(dt.timedelta(days=1))  # every unpaid document now shows another paid_date
    assert any(d["payment_status"] == "outstanding" for d in simulator.documents(api_key))
    _sync(engine, simulator, "acme", full=True)
    assert _last_log(engine).mode == FULL
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(billingo_invoice_status_history)).scalar_one() == before == 40
        # Unpaid documents never get Billingo's "today" as their paid date.
        assert conn.execute(
            sa.select(sa.func.count()).select_from(billingo_invoice_status_history).where(
                billingo_invoice_status_history.c.company_id == company.id,
                billingo_invoice_status_history.c.payment_status.in_(("outstanding", "expired")),
                billingo_invoice_status_history.c.paid_date.is_not(None),
            )
        ).scalar_one() == 0


def test_payments_and_history_stay_with_their_company(engine, simulator, fernet_key):
    acme_key = add_simulated_company(engine, simulator, "acme", seed=7, documents=60)
    globex_key = add_simulated_company(engine, simulator, "globex", seed=12, documents=60)
    simulator.shift_clock(HISTORY_AGE)
    _sync(engine, simulator, "acme", "globex")
    acme, globex = get_company(engine, "acme"), get_company(engine, "globex")
    for company, key in ((acme, acme_key), (globex, globex_key)):
        partial = {d["id"] for d in simulator.documents(key) if d["payment_status"] == "partially_paid"}
        assert set(_stored_payments(engine, company.id)) == partial
    # Each company's documents have ids of its own organization: nothing crossed over.
    assert not set(_stored_payments(engine, acme.id)) & set(_stored_payments(engine, globex.id))
    with engine.connect() as conn:
        for table in (billingo_document_payments, billingo_invoice_status_history):
            rows = conn.execute(sa.select(table.c.company_id, table.c.document_id)).all()
            acme_ids = {d["id"] for d in simulator.documents(acme_key)}
            assert all((company_id == acme.id) == (document_id in acme_ids) for company_id, document_id in rows)
    # A payment in one company is fetched for that company alone.
    target = next(d for d in simulator.documents(globex_key) if d["payment_status"] == "outstanding" and d["type"] == "invoice" and not d["cancelled"])
    simulator.record_payment(globex_key, target["id"])
    _sync(engine, simulator, "acme", "globex")
    assert _last_log(engine, acme.id).payment_history_calls == 0
    assert _last_log(engine, globex.id).payment_history_calls == 1
    assert target["id"] in _stored_payments(engine, globex.id)


# --- reporting from the payments and the status history --------------------------------------------


def test_receivables_net_of_payments_days_to_pay_and_open_on_a_date(engine, simulator, fernet_key):
    api_key = add_simulated_company(engine, simulator, "acme", seed=11, documents=0)
    today = simulator.today()
    partner = {"name": "Gamma Bt.", "address": {"country_code": "HU", "post_code": "1011", "city": "Budapest", "address": "Fő u. 2."},
               "emails": [], "taxcode": "11111111-2-41", "iban": "", "swift": "", "account_number": "", "phone": "", "tax_type": "HAS_TAX_NUMBER"}

    def issue(gross, *, invoice_days_ago, due_days_ago, currency="HUF", rate=1):
        return simulator.add_document(
            api_key, type="invoice", document_partner=partner, currency=currency, conversion_rate=rate, gross_total=gross,
            invoice_date=(today - dt.timedelta(days=invoice_days_ago)).isoformat(),
            due_date=(today - dt.timedelta(days=due_days_ago)).isoformat(), payment_status="outstanding",
        )["id"]

    huf = issue(100000, invoice_days_ago=20, due_days_ago=5)
    eur = issue(250.50, invoice_days_ago=10, due_days_ago=-20, currency="EUR", rate=400.25)
    settled = issue(30000, invoice_days_ago=15, due_days_ago=7)
    _sync(engine, simulator, "acme")
    simulator.set_payments(api_key, huf, [payment_entry(today - dt.timedelta(days=3), 35000, "wire_transfer")])
    simulator.set_payments(api_key, eur, [payment_entry(today - dt.timedelta(days=1), Decimal("100.25"), "bankcard", conversion_rate=Decimal("401"))])
    simulator.set_payments(api_key, settled, [payment_entry(today - dt.timedelta(days=4), 30000, "cash")])
    _sync(engine, simulator, "acme")

    receivables = {r["document_id"]: r for r in read_view(engine, "report_receivables", "acme").to_dict("records")}
    assert (receivables[huf]["recorded_paid_amount"], receivables[huf]["open_amount"], receivables[huf]["open_amount_huf"]) == (
        Decimal("35000.00"), Decimal("65000.00"), Decimal("65000.00"))
    # 150.25 EUR left, in HUF at the invoice's rate: 150.25 x 400.25 = 60137.5625 -> 60137.56; the
    # paid part in HUF is the gross in HUF (250.50 x 400.25 = 100262.625 -> 100262.63) less that.
    assert (receivables[eur]["open_amount"], receivables[eur]["open_amount_huf"], receivables[eur]["paid_amount_huf"]) == (
        Decimal("150.25"), Decimal("60137.56"), Decimal("40125.07"))
    assert (receivables[settled]["is_open"], receivables[settled]["paid_amount"]) == (False, Decimal("30000.00"))
    aging = {r["currency"]: r for r in read_view(engine, "report_aging_by_company", "acme").to_dict("records")}
    assert (aging["HUF"]["total_amount"], aging["HUF"]["days_1_30_amount"], aging["HUF"]["partially_paid_amount"]) == (
        Decimal("65000.00"), Decimal("65000.00"), Decimal("65000.00"))
    assert (aging["EUR"]["total_amount"], aging["EUR"]["total_huf"]) == (Decimal("150.25"), Decimal("60137.56"))

    [days] = partner_days_to_pay(engine, "acme").to_dict("records")
    # settled: issued 15 days ago, paid (its last payment's date) 4 days ago, due 7 days ago.
    assert (days["partner_name"], days["paid_invoice_count"], days["average_days_to_pay"], days["average_days_late"]) == (
        "Gamma Bt.", 1, Decimal("11.00"), Decimal("3.00"))

    def open_numbers(on):
        frame = open_on(engine, "acme", on)
        return {r["document_id"]: (r["payment_status"], r["paid_by_date"], r["open_amount"]) for r in frame.to_dict("records")}

    # Today: the two part-paid invoices, less what was paid.
    assert open_numbers(today) == {
        huf: ("partially_paid", Decimal("35000.00"), Decimal("65000.00")),
        eur: ("partially_paid", Decimal("100.25"), Decimal("150.25")),
    }
    # Five days ago (before any payment): judged by the first observation, all three were open in full.
    assert open_numbers(today - dt.timedelta(days=5)) == {
        huf: ("outstanding", Decimal("0.00"), Decimal("100000.00")),
        eur: ("outstanding", Decimal("0.00"), Decimal("250.50")),
        settled: ("outstanding", Decimal("0.00"), Decimal("30000.00")),
    }
    # Before the EUR invoice was issued: only the two older ones.
    assert set(open_numbers(today - dt.timedelta(days=12))) == {huf, settled}


def test_a_payment_history_is_normalized_exactly_or_refused_by_field():
    rows = normalize_payment_history([
        {"date": "2026-11-02", "price": 0.1, "payment_method": "cash", "voucher_number": None, "conversion_rate": 1},
        {"date": "2026-11-03", "price": 1234.56, "payment_method": "wire_transfer", "voucher_number": "A-1", "conversion_rate": 395.12},
    ])
    assert rows[0]["price"] == Decimal("0.1") and rows[1]["conversion_rate"] == Decimal("395.12")
    assert rows[1]["payment_date"] == dt.date(2026, 11, 3)
    with pytest.raises(DocumentError, match=r"payments\[2\]\.price"):
        normalize_payment_history([{"date": "2026-11-02", "price": 1, "payment_method": "cash"},
                                   {"date": "2026-11-02", "price": "12,5", "payment_method": "cash"}])
    with pytest.raises(DocumentError, match=r"payments\[1\]\.date: missing"):
        normalize_payment_history([{"price": 1, "payment_method": "cash"}])
    # PHP's object form of an array with gaps in its keys is read as the array, in key order.
    assert normalize_payment_history({"10": {"date": "2026-11-04", "price": 2, "payment_method": "cash"},
                                      "2": {"date": "2026-11-03", "price": 1, "payment_method": "cash"}})[0]["price"] == 1
    with pytest.raises(DocumentError, match="expected an array"):
        normalize_payment_history({"data": []})


def test_status_change_and_due_rules():
    outstanding = payment_store.TrackedState("outstanding", None, False)
    part = payment_store.TrackedState("partially_paid", dt.date(2026, 11, 2), False)
    paid = payment_store.TrackedState("paid", dt.date(2026, 11, 5), False)
    assert payment_store.status_change(None, outstanding) and not payment_store.payments_due(None, outstanding)
    assert payment_store.payments_due(None, part) and not payment_store.payments_due(None, paid)
    assert not payment_store.status_change(outstanding, outstanding) and not payment_store.payments_due(part, part)
    assert payment_store.payments_due(outstanding, part) and payment_store.payments_due(part, paid)
    assert payment_store.payments_due(paid, paid._replace(paid_date=dt.date(2026, 11, 6)))
    cancelled = outstanding._replace(cancelled=True)
    assert payment_store.status_change(outstanding, cancelled) and not payment_store.payments_due(outstanding, cancelled)
