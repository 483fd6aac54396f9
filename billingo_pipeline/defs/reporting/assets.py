"""The receivables report of each company, as asset metadata: the UI shows it after each sync.

It reads ``report_aging_by_company`` and ``report_cash_flow_forecast`` (migration 0002) and writes
nothing to the warehouse: the aging table and a bar chart of its buckets, the cash-flow forecast
(expected inflows per due week, overdue apart) as a table and a chart, and the headline figures as
plottable numbers (their history is charted by the UI across materializations). The charts are
small SVGs the UI shows in place (charts.py); the tables are ``MetadataValue.table``, which the UI
always shows in place.

Like ``billingo_sync`` it takes a range of company partitions per run and records one
materialization per company, so it is a one-spec multi-asset yielding ``AssetMaterialization``s.
Every sync run, of one company or many, records per-company events rather than outputs, so the
report is not part of ``billingo_sync_job``: its eager automation condition requests it once
those syncs are materialized, and ``runner.run_company_syncs`` (the CLI, the demo) builds it
right after the runs it starts, where no daemon may be running.
"""

from collections.abc import Iterator
from decimal import Decimal

import dagster as dg
import pandas as pd

from ...asset_keys import INVOICES
from ...partitions import company_partitions
from ...reporting.charts import Bar, bar_chart_svg, compact_amount, inline_image_markdown
from ...reporting.queries import AGING_BUCKETS, ReportError, aging_by_company, cash_flow_by_week
from ...resources import WarehouseResource
from ..billingo.assets import COMPANIES_PER_RUN

GROUP = "reporting"
AGING_REPORT = dg.AssetKey("billingo_aging_report")
_ZERO = Decimal("0.00")
# The forecast's week 0 holds what is already overdue (report_cash_flow_forecast).
OVERDUE_WEEK = 0


def _amount(value: Decimal) -> str:
    return f"{value:,.2f}"


def _money_columns(names: list[str]) -> list[dg.TableColumn]:
    # Exact figures as text: a float column would show 0.30000000000000004-style artefacts.
    return [dg.TableColumn(name, "decimal") for name in names]


def aging_table(aging: pd.DataFrame) -> dg.TableMetadataValue:
    """One row per currency (amounts in that currency, plus the total in HUF) and a HUF total row."""
    buckets = [label for label, _ in AGING_BUCKETS]
    schema = dg.TableSchema(
        columns=[
            dg.TableColumn("currency", "string"),
            dg.TableColumn("open invoices", "int"),
            *_money_columns([*buckets, "total", "total (HUF)"]),
        ]
    )
    records = []
    for row in aging.itertuples(index=False):
        amounts = [getattr(row, f"{prefix}_amount") for _, prefix in AGING_BUCKETS]
        records.append(_aging_record(str(row.currency), int(row.invoice_count), amounts, row.total_amount, row.total_huf))
    if not aging.empty:
        total_huf = sum(aging["total_huf"], _ZERO)
        amounts = [sum(aging[f"{prefix}_huf"], _ZERO) for _, prefix in AGING_BUCKETS]
        # This row is in HUF already: "total" and "total (HUF)" are the same figure.
        records.append(_aging_record("all, in HUF", int(aging["invoice_count"].sum()), amounts, total_huf, total_huf))
    return dg.MetadataValue.table(records=records, schema=schema)


def _aging_record(currency: str, count: int, buckets: list[Decimal], total: Decimal, total_huf: Decimal) -> dg.TableRecord:
    labels = [label for label, _ in AGING_BUCKETS]
    return dg.TableRecord(
        {"currency": currency, "open invoices": count, **{label: _amount(v) for label, v in zip(labels, buckets)},
         "total": _amount(total), "total (HUF)": _amount(total_huf)}
    )


def aging_chart(aging: pd.DataFrame, slug: str) -> str:
    """Open receivables per aging bucket in HUF (all currencies), overdue buckets in red."""
    bars = [
        Bar(label, sum(aging[f"{prefix}_huf"], _ZERO), overdue=prefix != "current")
        for label, prefix in AGING_BUCKETS
    ]
    return inline_image_markdown(bar_chart_svg(bars, "open receivables in HUF by days overdue"), f"aging of {slug}")


def _week_label(week: dict) -> str:
    return "overdue" if week["week_number"] == OVERDUE_WEEK else week["week_start"].strftime("%m-%d")


def cash_flow_table(weeks: pd.DataFrame) -> dg.TableMetadataValue:
    """The forecast's weeks: what falls due when, in HUF (week 0: already overdue)."""
    schema = dg.TableSchema(
        columns=[
            dg.TableColumn("due", "string", description="overdue, or the week's first and last due date"),
            dg.TableColumn("open invoices", "int"),
            *_money_columns(["expected (HUF)"]),
        ]
    )
    records = [
        dg.TableRecord(
            {
                "due": "overdue" if week["week_number"] == OVERDUE_WEEK else f"{week['week_start']} – {week['week_end']}",
                "open invoices": int(week["invoice_count"]),
                "expected (HUF)": _amount(week["expected_huf"]),
            }
        )
        for week in weeks.to_dict("records")
    ]
    return dg.MetadataValue.table(records=records, schema=schema)


def cash_flow_chart(weeks: pd.DataFrame) -> str:
    """Expected inflows per due week in HUF, the overdue amount apart in red; the bars are labelled
    with the week's first due date (month-day), the tallest bar's amount is in the title."""
    records = weeks.to_dict("records")
    bars = [Bar(_week_label(week), week["expected_huf"], overdue=week["week_number"] == OVERDUE_WEEK) for week in records]
    tallest = max((bar.value for bar in bars), default=_ZERO)
    title = f"expected HUF per due week, tallest {compact_amount(tallest)}"
    return inline_image_markdown(bar_chart_svg(bars, title, bar_width=36, value_labels=False), "cash flow")


@dg.multi_asset(
    name="billingo_aging_report",
    specs=[
        dg.AssetSpec(
            AGING_REPORT,
            deps=[INVOICES],
            group_name=GROUP,
            kinds={"pandas", "sql"},
            # Materialized per company (AssetMaterialization with a partition), not as the op's
            # output; a company whose report cannot be read is left out and named in the failure.
            skippable=True,
            # After each sync, in a run of its own (see the module docstring).
            automation_condition=dg.AutomationCondition.eager(),
            description="Aging of open receivables (current, 1-30, 31-60, 61-90, 90+ days overdue) per "
                        "currency and in HUF, and the cash-flow forecast (expected inflows per due week for 12 "
                        "weeks, overdue apart), each with a chart: shown as metadata after each sync.",
        )
    ],
    partitions_def=company_partitions,
    # The same runs as the sync (billingo_sync): a backfill run covers a range of companies.
    backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=COMPANIES_PER_RUN),
)
def billingo_aging_report(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource
) -> Iterator[dg.AssetMaterialization]:
    engine = warehouse.get_engine()
    failures: dict[str, str] = {}
    for slug in context.partition_keys:
        try:
            aging = aging_by_company(engine, slug)
            weeks = cash_flow_by_week(engine, slug)
        except ReportError as exc:
            failures[slug] = str(exc)
            context.log.error(f"company '{slug}': no aging report: {exc}")
            continue
        yield dg.AssetMaterialization(asset_key=AGING_REPORT, partition=slug, metadata=aging_metadata(slug, aging, weeks))
    if failures:
        raise dg.Failure(
            description="; ".join(f"{slug}: {message}" for slug, message in failures.items()),
            metadata={"failed_companies": dg.MetadataValue.json(sorted(failures))},
        )


def aging_metadata(slug: str, aging: pd.DataFrame, weeks: pd.DataFrame) -> dict[str, object]:
    """The materialization's metadata: the aging and forecast tables and charts, and the headline
    figures."""
    as_of = aging["as_of_date"].iloc[0].isoformat() if not aging.empty else None
    total_huf = sum(aging["total_huf"], _ZERO)
    overdue_huf = sum(aging["overdue_huf"], _ZERO)
    partially_paid = int(aging["partially_paid_count"].sum())
    due_weeks = weeks[weeks["week_number"] != OVERDUE_WEEK]
    return {
        "company": slug,
        "as_of_date": as_of or "",
        "aging": aging_table(aging),
        "aging_chart": dg.MetadataValue.md(aging_chart(aging, slug)),
        **(
            {"partially_paid": dg.MetadataValue.text(
                f"{partially_paid} partially paid invoice(s) count with what is left of them: the gross less "
                "their recorded payments (the whole gross while a payment history is still to be fetched)."
            )}
            if partially_paid else {}
        ),
        "cash_flow_forecast": cash_flow_table(weeks),
        **({"cash_flow_chart": dg.MetadataValue.md(cash_flow_chart(weeks))} if not weeks.empty else {}),
        # Floats so the UI can plot them over time; the exact figures are in the tables.
        "total_outstanding_huf": dg.MetadataValue.float(float(total_huf)),
        "overdue_huf": dg.MetadataValue.float(float(overdue_huf)),
        "expected_in_12_weeks_huf": dg.MetadataValue.float(float(sum(due_weeks["expected_huf"], _ZERO))),
        "open_invoices": dg.MetadataValue.int(int(aging["invoice_count"].sum())),
        "overdue_invoices": dg.MetadataValue.int(int(aging["overdue_invoice_count"].sum())),
    }


reporting_assets = [billingo_aging_report]
