"""Partners, spendings, document blocks and bank accounts: swept by the same sync as the documents,
kept raw and normalized per company, with per-endpoint counts in ``sync_log_endpoints``.

Each test runs on SQLite and on the real PostgreSQL against the simulator over a real socket.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
import sqlalchemy as sa

from billingo_pipeline.endpoints.registry import ENTITY_ENDPOINTS, SYNC_ENDPOINTS
from billingo_pipeline.resources import BillingoResource
from billingo_pipeline.sync import sync_company
from billingo_pipeline.warehouse import schema
from billingo_pipeline.warehouse.companies import get_company
from billingo_pipeline.warehouse.sync_log import COMPLETED, PARTIAL, endpoint_rows

from .conftest import add_simulated_company

PAGE_SIZE = 10  # several pages of spendings and partners even for a small company
FAST_RETRIES = {"backoff_seconds": 0.01}


def _sync(engine, simulator, slug: str, run_id: str, *, full: bool = False):
    billingo = BillingoResource(base_url=simulator.base_url, page_size=PAGE_SIZE, **FAST_RETRIES)
    return sync_company(engine, get_company(engine, slug), run_id=run_id, trigger="test", open_client=billingo.client_for, full=full)


def _rows(engine, table, company_id: int, key: str) -> dict[int, sa.Row]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(table).where(table.c.company_id == company_id)).all()
    return {getattr(row, key): row for row in rows}


def _endpoint_counts(engine, sync_id: int) -> dict[str, dict]:
    return {row["endpoint"]: row for row in endpoint_rows(engine, [sync_id])[sync_id]}


def test_first_sync_stores_every_endpoint_and_a_resync_writes_nothing(engine, simulator, fernet_key):
    api_key = add_simulated_company(engine, simulator, "acme", seed=3, documents=60)
    company = get_company(engine, "acme")
    first = _sync(engine, simulator, "acme", "run-1")
    assert first.status == COMPLETED

    partners = _rows(engine, schema.billingo_partners, company.id, "partner_id")
    source_partners = {p["id"]: p for p in simulator.partners(api_key)}
    assert set(partners) == set(source_partners)
    some = source_partners[max(source_partners)]
    stored = partners[some["id"]]
    assert (stored.name, stored.tax_number, stored.city, stored.post_code, stored.iban) == (
        some["name"], some["taxcode"] or None, some["address"]["city"], some["address"]["post_code"], some["iban"] or None,
    )
    assert stored.emails == (",".join(some["emails"]) or None)

    spendings = _rows(engine, schema.billingo_spendings, company.id, "spending_id")
    source_spendings = {s["id"]: s for s in simulator.spendings(api_key)}
    assert set(spendings) == set(source_spendings)
    for spending_id, source in source_spendings.items():
        row = spendings[spending_id]
        assert row.gross_total == Decimal(str(source["total_gross"]))
        assert row.vat_total_local == Decimal(str(source["total_vat_amount_local"]))
        assert row.due_date == dt.date.fromisoformat(source["due_date"])
        assert row.partner_id == source["partner"]["id"]
        assert row.paid_at == (dt.date.fromisoformat(source["paid_at"]) if source["paid_at"] else None)

    for endpoint in ENTITY_ENDPOINTS[2:]:
        with engine.connect() as conn:
            raw = conn.execute(sa.select(sa.func.count()).select_from(endpoint.tables.raw).where(endpoint.tables.raw.c.company_id == company.id)).scalar_one()
        assert raw == len(_rows(engine, endpoint.tables.normalized, company.id, endpoint.tables.id_column)) > 0

    counts = _endpoint_counts(engine, first.sync_id)
    assert list(counts) == [e.name for e in SYNC_ENDPOINTS]
    assert counts["partners"]["created"] == counts["partners"]["fetched"] == len(source_partners)
    assert counts["spendings"]["created"] == len(source_spendings)
    assert counts["spendings"]["api_calls"] == -(-len(source_spendings) // PAGE_SIZE)

    second = _sync(engine, simulator, "acme", "run-2", full=True)
    assert second.status == COMPLETED
    again = _endpoint_counts(engine, second.sync_id)
    for endpoint in ENTITY_ENDPOINTS:
        row = again[endpoint.name]
        assert (row["created"], row["updated"], row["failed"], row["mode"]) == (0, 0, 0, "full"), endpoint.name
        assert row["skipped"] == row["fetched"] == counts[endpoint.name]["fetched"], endpoint.name
        assert row["api_calls"] == counts[endpoint.name]["api_calls"], endpoint.name
    # Unchanged rows are not rewritten: their last change is still the first sync's.
    assert _rows(engine, schema.billingo_partners, company.id, "partner_id")[some["id"]].last_changed_at == stored.last_changed_at


def test_an_incremental_sync_reads_the_unpaid_spendings_and_rereads_those_paid_since(engine, simulator, fernet_key):
    api_key = add_simulated_company(engine, simulator, "acme", seed=10, documents=200)
    company = get_company(engine, "acme")
    assert _sync(engine, simulator, "acme", "run-1").status == COMPLETED
    unpaid = [s for s in simulator.spendings(api_key) if s["paid_at"] is None]
    # Most bills are paid: the unpaid ones are far fewer pages than all of them.
    assert 2 <= len(unpaid) and -(-len(unpaid) // PAGE_SIZE) + 1 < -(-len(simulator.spendings(api_key)) // PAGE_SIZE)
    paid_today = unpaid[0]
    simulator.pay_spending(api_key, paid_today["id"])
    new_unpaid = simulator.add_spending(api_key)
    entered_paid = simulator.add_spending(api_key, paid_at=simulator.today().isoformat())

    second = _sync(engine, simulator, "acme", "run-2")
    assert second.status == COMPLETED
    row = _endpoint_counts(engine, second.sync_id)["spendings"]
    still_unpaid = len(unpaid) - 1 + 1  # one paid, one new
    assert row["mode"] == "incremental"
    # The unpaid bills' pages, then one read of the bill paid since.
    assert row["api_calls"] == -(-still_unpaid // PAGE_SIZE) + 1
    assert (row["fetched"], row["created"], row["updated"], row["marked_missing"]) == (still_unpaid + 1, 1, 1, 0)
    spendings = _rows(engine, schema.billingo_spendings, company.id, "spending_id")
    assert spendings[paid_today["id"]].paid_at == simulator.today()
    assert spendings[new_unpaid["id"]].paid_at is None
    assert entered_paid["id"] not in spendings  # waits for the next full sweep

    third = _sync(engine, simulator, "acme", "run-3", full=True)
    row = _endpoint_counts(engine, third.sync_id)["spendings"]
    assert row["mode"] == "full" and row["created"] == 1
    spendings = _rows(engine, schema.billingo_spendings, company.id, "spending_id")
    assert set(spendings) == {s["id"] for s in simulator.spendings(api_key)}


def test_a_changed_partner_is_updated_and_a_vanished_one_marked_never_deleted(engine, simulator, fernet_key):
    api_key = add_simulated_company(engine, simulator, "acme", seed=4, documents=40)
    company = get_company(engine, "acme")
    _sync(engine, simulator, "acme", "run-1")
    customers = [p["id"] for p in simulator.partners(api_key)]
    changed, vanished = customers[-1], customers[-2]
    simulator.update_partner(api_key, changed, name="Átnevezett Kft.")
    simulator.delete_partner(api_key, vanished)

    result = _sync(engine, simulator, "acme", "run-2")
    assert result.status == COMPLETED
    counts = _endpoint_counts(engine, result.sync_id)["partners"]
    assert (counts["updated"], counts["marked_missing"]) == (1, 1)
    partners = _rows(engine, schema.billingo_partners, company.id, "partner_id")
    assert partners[changed].name == "Átnevezett Kft." and partners[changed].deleted_in_source_at is None
    assert partners[vanished].deleted_in_source_at is not None
    raw = _rows(engine, schema.billingo_partners_raw, company.id, "partner_id")
    assert raw[vanished].missing_since is not None
    assert len(partners) == len(customers)


def test_a_poisoned_spending_fails_alone(engine, simulator, fernet_key):
    api_key = add_simulated_company(engine, simulator, "acme", seed=5, documents=40)
    company = get_company(engine, "acme")
    bad = simulator.add_spending(api_key, total_gross="12.700,00 Ft")
    result = _sync(engine, simulator, "acme", "run-1")
    assert result.status == PARTIAL
    counts = _endpoint_counts(engine, result.sync_id)["spendings"]
    total = len(simulator.spendings(api_key))
    assert (counts["failed"], counts["created"], counts["fetched"]) == (1, total - 1, total)
    spendings = _rows(engine, schema.billingo_spendings, company.id, "spending_id")
    assert bad["id"] not in spendings and len(spendings) == total - 1
    # Its raw payload is kept, and the error names it.
    assert bad["id"] in _rows(engine, schema.billingo_spendings_raw, company.id, "spending_id")
    with engine.connect() as conn:
        errors = conn.execute(sa.select(schema.sync_log.c.errors).where(schema.sync_log.c.id == result.sync_id)).scalar_one()
    [error] = errors
    assert (error["endpoint"], error["entity_id"]) == ("spendings", bad["id"]) and "total_gross" in error["message"]
    # The documents are all there.
    assert result.normalize.counts.failed == 0 and result.normalize.counts.created == 40


@pytest.mark.parametrize("mutation", ["created", "re-dated"])
def test_spendings_swept_once_each_while_one_moves_between_pages(engine, simulator, fernet_key, mutation):
    """Spendings are listed by due date: a bill created with (or moved to) an early due date while
    we page shifts every later page; the sweep still stores each bill exactly once."""
    api_key = add_simulated_company(engine, simulator, "acme", seed=6, documents=80)
    company = get_company(engine, "acme")
    listed = simulator.spendings(api_key)
    earliest = dt.date.fromisoformat(listed[0]["due_date"]) - dt.timedelta(days=3)
    moved: list[dict] = []

    def on_request(request):
        if request.path.endswith("/spendings") and request.query.get("page") == "2" and not moved:
            if mutation == "created":
                moved.append(simulator.add_spending(api_key, due_date=earliest.isoformat()))
            else:
                moved.append(simulator.update_spending(api_key, listed[-1]["id"], due_date=earliest.isoformat()))

    simulator.on_request(on_request)
    result = _sync(engine, simulator, "acme", "run-1")
    assert moved and result.status == COMPLETED
    spendings = _rows(engine, schema.billingo_spendings, company.id, "spending_id")
    assert set(spendings) == {s["id"] for s in simulator.spendings(api_key)}
    assert spendings[moved[0]["id"]].due_date == earliest
    counts = _endpoint_counts(engine, result.sync_id)["spendings"]
    assert counts["created"] == len(spendings) and counts["fetch_complete"] is True


def test_two_companies_never_share_rows(engine, simulator, fernet_key):
    first_key = add_simulated_company(engine, simulator, "acme", seed=7, documents=30)
    second_key = add_simulated_company(engine, simulator, "bistro", seed=8, documents=30)
    _sync(engine, simulator, "acme", "run-a")
    _sync(engine, simulator, "bistro", "run-b")
    for slug, key in (("acme", first_key), ("bistro", second_key)):
        company = get_company(engine, slug)
        assert set(_rows(engine, schema.billingo_spendings, company.id, "spending_id")) == {s["id"] for s in simulator.spendings(key)}
        assert set(_rows(engine, schema.billingo_partners, company.id, "partner_id")) == {p["id"] for p in simulator.partners(key)}
    # One company's partner vanishing marks nothing of the other's.
    simulator.delete_partner(first_key, simulator.partners(first_key)[-1]["id"])
    _sync(engine, simulator, "acme", "run-a2")
    bistro = get_company(engine, "bistro")
    assert all(row.deleted_in_source_at is None for row in _rows(engine, schema.billingo_partners, bistro.id, "partner_id").values())


# --- payables ---------------------------------------------------------------------------------------


def _expected_open_bills(simulator, api_key: str, as_of: dt.date) -> list[dict]:
    """The open bills as the source says, computed here without the warehouse."""
    bills = []
    for source in simulator.spendings(api_key):
        if source["paid_at"] is not None:
            continue
        due = dt.date.fromisoformat(source["due_date"])
        bills.append({
            "id": source["id"], "currency": source["currency"], "days": max((as_of - due).days, 0),
            "gross": Decimal(str(source["total_gross"])).quantize(Decimal("0.01")),
            "huf": Decimal(str(source["total_gross_local"])).quantize(Decimal("0.01")),
        })
    return bills


def test_payables_outstanding_due_list_and_aging_are_exact(engine, warehouse_url, simulator, fernet_key):
    api_key = add_simulated_company(engine, simulator, "acme", seed=9, documents=120)
    as_of = simulator.today()
    # A bill with an amount binary floats cannot hold, long overdue, and one paid (not open).
    odd = simulator.add_spending(api_key, currency="EUR", conversion_rate=401.23, total_gross=1234.57,
                                 total_gross_local=495334.79, due_date=(as_of - dt.timedelta(days=95)).isoformat())
    paid = simulator.add_spending(api_key, due_date=(as_of - dt.timedelta(days=10)).isoformat())
    simulator.pay_spending(api_key, paid["id"], paid_at=as_of)
    assert _sync(engine, simulator, "acme", "run-1").status == COMPLETED
    expected = _expected_open_bills(simulator, api_key, as_of)
    assert any(b["days"] == 0 for b in expected) and any(b["days"] > 0 for b in expected)

    from billingo_pipeline.reporting.payables import payables_aging, payables_due, payables_outstanding

    outstanding = payables_outstanding(engine, "acme", as_of=as_of)
    assert sorted(outstanding["spending_id"]) == sorted(b["id"] for b in expected)
    assert paid["id"] not in set(outstanding["spending_id"])
    odd_row = outstanding[outstanding["spending_id"] == odd["id"]].iloc[0]
    assert (odd_row["gross_amount"], odd_row["gross_amount_huf"], odd_row["days_overdue"], odd_row["aging_bucket"]) == (
        Decimal("1234.57"), Decimal("495334.79"), 95, "90+",
    )
    assert list(outstanding["due_date"]) == sorted(outstanding["due_date"])

    due = payables_due(engine, "acme", as_of=as_of, within_days=7)
    assert sorted(due["spending_id"]) == sorted(
        b["id"] for b in expected
        if dt.date.fromisoformat(next(s for s in simulator.spendings(api_key) if s["id"] == b["id"])["due_date"]) <= as_of + dt.timedelta(days=7)
    )

    def bucket(days: int) -> str:
        return "current" if days <= 0 else "days_1_30" if days <= 30 else "days_31_60" if days <= 60 else "days_61_90" if days <= 90 else "days_over_90"

    aging = {row["currency"]: row for row in payables_aging(engine, "acme", as_of=as_of).to_dict("records")}
    assert set(aging) == {b["currency"] for b in expected}
    for currency, row in aging.items():
        mine = [b for b in expected if b["currency"] == currency]
        assert row["bill_count"] == len(mine)
        assert row["overdue_bill_count"] == sum(b["days"] > 0 for b in mine)
        assert row["total_amount"] == sum((b["gross"] for b in mine), Decimal("0.00"))
        assert row["total_huf"] == sum((b["huf"] for b in mine), Decimal("0.00"))
        assert row["overdue_huf"] == sum((b["huf"] for b in mine if b["days"] > 0), Decimal("0.00"))
        for prefix in ("current", "days_1_30", "days_31_60", "days_61_90", "days_over_90"):
            assert row[f"{prefix}_huf"] == sum((b["huf"] for b in mine if bucket(b["days"]) == prefix), Decimal("0.00"))
    assert aging["EUR"]["days_over_90_amount"] >= Decimal("1234.57")

    # The CLI shows the same report.
    from .conftest import invoke_cli

    result = invoke_cli(warehouse_url, "report", "payables-aging", "--company", "acme", "--as-of", as_of.isoformat(), "--format", "csv")
    assert result.exit_code == 0, result.output
    assert "days_over_90_huf" in result.output.splitlines()[0]
    assert f"{aging['HUF']['total_huf']:f}" in result.output


# --- each mapping covers its spec schema ------------------------------------------------------------

from .test_normalize import _resolve, spec_schemas  # noqa: E402,F401 - the spec fixture, shared


@pytest.mark.parametrize("endpoint", ENTITY_ENDPOINTS, ids=lambda e: e.name)
def test_every_spec_field_of_the_endpoint_is_mapped_or_raw_only(spec_schemas, endpoint):
    """Walk the endpoint's item schema (and the objects mapped field by field, such as a partner's
    address): every property is a column or listed raw-only with a reason; the tables name only
    real spec fields; every mapped column exists in the normalized table."""
    mapped, raw_only = endpoint.mapping.mapped, endpoint.mapping.raw_only
    containers = {path.rsplit(".", depth)[0] for path in mapped for depth in range(1, path.count(".") + 1)}
    unaccounted: list[str] = []
    spec_paths: set[str] = set()

    def walk(schema_name: str, prefix: str) -> None:
        for prop, node in spec_schemas[schema_name]["properties"].items():
            path = prefix + prop
            spec_paths.add(path)
            ref_name, node = _resolve(spec_schemas, node)
            if path in containers:
                walk(ref_name, f"{path}.")
            elif path not in mapped and path not in raw_only:
                unaccounted.append(path)

    walk(endpoint.spec_schema, "")
    assert not unaccounted, f"{endpoint.name}: spec fields neither mapped nor raw-only: {unaccounted}"
    assert sorted(set(mapped) - spec_paths) == []
    assert sorted(set(raw_only) - spec_paths) == []
    assert sorted(set(mapped) & set(raw_only)) == []
    assert all(reason.strip() for reason in raw_only.values())
    columns = {c.name for c in endpoint.tables.normalized.columns}
    assert {m.column for m in endpoint.mapping.fields} <= columns


@pytest.mark.parametrize("endpoint", ENTITY_ENDPOINTS, ids=lambda e: e.name)
def test_normalized_rows_have_exactly_the_mapped_columns(endpoint):
    from billingo_pipeline.normalize import normalize_entity

    row = normalize_entity({"id": 1}, endpoint.mapping)
    tracking = {"id", "company_id", endpoint.tables.id_column, "source_hash", "first_seen_at", "last_changed_at", "deleted_in_source_at"}
    assert set(row) == {c.name for c in endpoint.tables.normalized.columns} - tracking


def test_spendings_are_read_whole_until_one_complete_read_exists(engine, simulator, fernet_key):
    """A company that synced documents before spendings were swept (its documents sync
    incrementally) gets every bill once, not only the unpaid ones."""
    api_key = add_simulated_company(engine, simulator, "acme", seed=11, documents=120)
    company = get_company(engine, "acme")
    assert _sync(engine, simulator, "acme", "run-1").status == COMPLETED
    with engine.begin() as conn:  # as if this sync had not read spendings
        conn.execute(schema.sync_log_endpoints.delete().where(schema.sync_log_endpoints.c.endpoint == "spendings"))
        for table in (schema.billingo_spendings, schema.billingo_spendings_raw):
            conn.execute(table.delete())
    second = _sync(engine, simulator, "acme", "run-2")
    assert second.fetch.mode == "incremental"
    row = _endpoint_counts(engine, second.sync_id)["spendings"]
    assert row["mode"] == "full" and row["created"] == len(simulator.spendings(api_key))
    assert _endpoint_counts(engine, _sync(engine, simulator, "acme", "run-3").sync_id)["spendings"]["mode"] == "incremental"


def test_status_shows_the_other_endpoints_under_each_sync(engine, warehouse_url, simulator, fernet_key):
    from .conftest import invoke_cli

    api_key = add_simulated_company(engine, simulator, "acme", seed=12, documents=30)
    simulator.add_spending(api_key, total_gross="12.700,00 Ft")
    assert _sync(engine, simulator, "acme", "run-1").status == PARTIAL
    result = invoke_cli(warehouse_url, "status", "acme")
    assert result.exit_code == 0, result.output
    partners, spendings = len(simulator.partners(api_key)), len(simulator.spendings(api_key))
    [line] = [line for line in result.output.splitlines() if line.strip().startswith("partners ")]
    assert line.strip().startswith(f"partners {partners} ({partners} created) · spendings {spendings} ({spendings - 1} created, 1 failed) · ")
    assert any(line.strip().startswith("spending ") and "total_gross" in line for line in result.output.splitlines())
