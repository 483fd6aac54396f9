"""What the Dagster UI is given to show: inline charts, the warehouse tables' column schema, and
each company's figures on its materializations.

The chart and schema builders are pure and tested as such; the figures come from a real sync of
simulated companies through Dagster, on SQLite and on the real PostgreSQL.
"""

from __future__ import annotations

import itertools
from decimal import Decimal

import dagster as dg
import pytest
import sqlalchemy as sa

from billingo_pipeline.defs.billingo.assets import SYNC_TABLES, billingo_sync
from billingo_pipeline.reporting.charts import INLINE_MARKDOWN_LIMIT, Bar, ChartTooLong, bar_chart_svg, compact_amount, inline_image_markdown
from billingo_pipeline.table_metadata import COLUMN_SCHEMA, ROW_COUNT, TABLE_NAME, column_type, table_schema
from billingo_pipeline.warehouse import schema

from .conftest import add_simulated_company, materialize_company

HUGE = Decimal("-99999999999999.99")  # the widest amount a Money column can sum to, negative


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (Decimal("0"), "0"), (Decimal("950.49"), "950"), (Decimal("12500"), "12.5k"), (Decimal("999999"), "1000k"),
        (Decimal("1234567.89"), "1.2M"), (Decimal("-34000000000"), "-34.0bn"), (Decimal("123456789012345"), "123457bn"),
    ],
)
def test_compact_amount(value, text):
    assert compact_amount(value) == text


def test_compact_amounts_stay_short_whatever_the_magnitude():
    for exponent, sign in itertools.product(range(0, 13), (1, -1)):
        assert len(compact_amount(sign * Decimal(10) ** exponent * Decimal("9.99"))) <= 7


def test_the_report_charts_fit_the_inline_limit_at_their_widest():
    aging = [Bar(label, HUGE, overdue=label != "current") for label in ("current", "1-30", "31-60", "61-90", "90+")]
    aging_markdown = inline_image_markdown(bar_chart_svg(aging, "open receivables in HUF by days overdue"), "aging of a-company-slug-of-40-characters-xx")
    weeks = [Bar("overdue", -HUGE, overdue=True), *(Bar(f"12-{n:02d}", -HUGE + n) for n in range(1, 13))]
    title = f"expected HUF per due week, tallest {compact_amount(-HUGE)}"
    forecast_markdown = inline_image_markdown(bar_chart_svg(weeks, title, bar_width=36, value_labels=False), "cash flow")
    for markdown in (aging_markdown, forecast_markdown):
        assert len(markdown) < INLINE_MARKDOWN_LIMIT
        target = markdown.split("](", 1)[1]
        assert " " not in target and "#" not in target  # neither may appear in the link target


def test_bars_scale_to_the_tallest_and_overdue_ones_are_red():
    bars = [Bar("a", Decimal(50)), Bar("b", Decimal(100), overdue=True), Bar("c", Decimal(-5)), Bar("d", Decimal("0.1"))]
    svg = bar_chart_svg(bars, "t", bar_width=30)
    # Plot height 100: "a" half as tall as "b"; a negative amount draws nothing but keeps its
    # label; a tiny one is still one pixel ("d", drawn from where "a" ended: 3 bars of 35 on).
    assert "<path fill='steelblue' d='M5,130v-50h30v50m75,0v-1h30v1'/>" in svg
    assert "<path fill='firebrick' d='M40,130v-100h30v100'/>" in svg
    assert ">c</tspan>" in svg and ">-5</tspan>" in svg


def test_a_chart_too_long_for_the_inline_limit_is_refused():
    bars = [Bar(f"w{n}", Decimal(n)) for n in range(40)]
    with pytest.raises(ChartTooLong, match="shows under 1000"):
        inline_image_markdown(bar_chart_svg(bars, "too many"), "chart")


def test_markup_in_labels_is_escaped():
    svg = bar_chart_svg([Bar("<b>&", Decimal(1))], "50% (#1)")
    assert "<b>" not in svg and "&lt;b&gt;&amp;" in svg and "50 1" in svg


@pytest.mark.parametrize("table", list(SYNC_TABLES.values()), ids=lambda table: table.name)
def test_the_column_schema_lists_every_column_of_the_table(table):
    columns = table_schema(table).columns
    assert [c.name for c in columns] == [c.name for c in table.columns]
    for column, listed in zip(table.columns, columns):
        assert listed.type == column_type(column.type)
        assert listed.description == column.comment
        assert listed.constraints.nullable == column.nullable


def test_column_types_read_as_the_warehouse_means_them():
    invoices = {c.name: c for c in table_schema(schema.billingo_invoices).columns}
    assert invoices["gross_total"].type == "decimal(20,6)"
    assert invoices["conversion_rate"].type == "decimal(20,8)"
    assert invoices["first_seen_at"].type == "timestamp (UTC)"
    assert invoices["document_id"].type == "bigint" and invoices["company_id"].type == "integer"
    assert invoices["invoice_number"].type == "varchar(128)" and invoices["comment"].type == "text"
    assert invoices["cancelled"].type == "boolean" and invoices["due_date"].type == "date"
    assert invoices["gross_total"].description == "gross_total"
    assert invoices["company_id"].constraints.other == ["references companies.id"]
    assert invoices["id"].constraints.unique and not invoices["invoice_number"].constraints.unique
    raw = {c.name: c for c in table_schema(schema.billingo_documents_raw).columns}
    assert raw["payload"].type == "json"
    assert table_schema(schema.billingo_invoices).constraints.other == ["unique (company_id, document_id)"]


def test_the_sync_assets_carry_their_table_and_column_schema_before_any_run():
    for spec in billingo_sync.specs:
        table = SYNC_TABLES[spec.key]
        assert spec.metadata[TABLE_NAME] == table.name
        assert spec.metadata[COLUMN_SCHEMA].schema == table_schema(table)


def _company_rows(engine, table, company_id):
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(table).where(table.c.company_id == company_id)).scalar_one()


def test_each_company_materialization_carries_its_row_counts_and_sync_figures(engine, warehouse_url, simulator, instance, fernet_key):
    add_simulated_company(engine, simulator, "acme", seed=61, documents=30)
    add_simulated_company(engine, simulator, "globex", seed=62, documents=7)
    for slug in ("acme", "globex"):
        assert materialize_company(instance, warehouse_url, simulator, slug, page_size=10).success
    with engine.connect() as conn:
        ids = dict(conn.execute(sa.select(schema.companies.c.slug, schema.companies.c.id)).all())
        durations = dict(conn.execute(sa.select(schema.sync_log.c.company_id, schema.sync_log.c.duration_seconds)).all())
    for slug, documents in (("acme", 30), ("globex", 7)):
        metadata = {}
        for key, table in SYNC_TABLES.items():
            event = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key, asset_partitions=[slug]), limit=1).records[0]
            metadata[key] = {k: v.value for k, v in event.asset_materialization.metadata.items()}
            # The company's rows only, never the other company's.
            assert metadata[key][ROW_COUNT] == _company_rows(engine, table, ids[slug]), (slug, key)
        invoices = metadata[dg.AssetKey("billingo_invoices")]
        assert metadata[dg.AssetKey("billingo_documents_raw")][ROW_COUNT] == documents
        assert invoices["sync_documents_fetched"] == documents
        assert invoices["sync_api_calls"] >= 1 + -(-documents // 10)  # Billingo's clock and every page
        assert invoices["sync_duration_seconds"] == round(durations[ids[slug]], 3)
        assert invoices["health_level"] in (0, 1, 2) and isinstance(invoices["sync_duration_seconds"], float)
