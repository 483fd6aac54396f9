"""The aging report of each company, as asset metadata: the UI shows it after each sync.

It reads ``report_aging_by_company`` (migration 0002) and writes nothing to the warehouse: the
table, a bar chart (PNG embedded as a data URI, so no file server is needed) and the headline
figures as plottable numbers (their history is charted by the UI across materializations).

Like ``billingo_sync`` it takes a range of company partitions per run and records one
materialization per company, so it is a one-spec multi-asset yielding ``AssetMaterialization``s.
Every sync run, of one company or many, records per-company events rather than outputs, so the
report is not part of ``billingo_sync_job``: its eager automation condition requests it once
those syncs are materialized, and ``runner.run_company_syncs`` (the CLI, the demo) builds it
right after the runs it starts, where no daemon may be running.
"""

import base64
import io
from collections.abc import Iterator
from decimal import Decimal

import dagster as dg
import pandas as pd
from matplotlib.figure import Figure

from ...asset_keys import INVOICES
from ...partitions import company_partitions
from ...reporting.queries import AGING_BUCKETS, ReportError, aging_by_company
from ...resources import WarehouseResource
from ..billingo.assets import COMPANIES_PER_RUN

GROUP = "reporting"
AGING_REPORT = dg.AssetKey("billingo_aging_report")
_ZERO = Decimal("0.00")


def _amount(value: Decimal) -> str:
    return f"{value:,.2f}"


def aging_markdown(aging: pd.DataFrame) -> str:
    """One row per currency (amounts in that currency, plus the total in HUF) and a HUF total row."""
    if aging.empty:
        return "No open receivables."
    header = ["currency", "open invoices", *(label for label, _ in AGING_BUCKETS), "total", "total (HUF)"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" + " ---: |" * (len(header) - 1)]
    for row in aging.itertuples(index=False):
        cells = [
            str(row.currency),
            str(row.invoice_count),
            *(_amount(getattr(row, f"{prefix}_amount")) for _, prefix in AGING_BUCKETS),
            _amount(row.total_amount),
            _amount(row.total_huf),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    total_huf = _amount(sum(aging["total_huf"], _ZERO))
    totals = [
        "**all, in HUF**",
        str(int(aging["invoice_count"].sum())),
        *(_amount(sum(aging[f"{prefix}_huf"], _ZERO)) for _, prefix in AGING_BUCKETS),
        total_huf,  # this row is in HUF already: "total" and "total (HUF)" are the same figure
        total_huf,
    ]
    lines.append("| " + " | ".join(totals) + " |")
    partially_paid = int(aging["partially_paid_count"].sum())
    if partially_paid:
        lines.append(
            f"\n{partially_paid} partially paid invoice(s) count with their whole gross: Billingo does not "
            "report how much of them was paid."
        )
    return "\n".join(lines)


def aging_chart_png(aging: pd.DataFrame, title: str) -> bytes:
    """Open receivables per aging bucket in HUF, stacked by currency."""
    # Figure without pyplot: no global state, no display needed, safe in any executor thread.
    figure = Figure(figsize=(7, 3.5), dpi=100)
    axes = figure.add_subplot()
    labels = [label for label, _ in AGING_BUCKETS]
    bottoms = [0.0] * len(labels)
    for row in aging.itertuples(index=False):
        heights = [float(getattr(row, f"{prefix}_huf")) for _, prefix in AGING_BUCKETS]
        axes.bar(labels, heights, bottom=bottoms, label=str(row.currency))
        bottoms = [b + h for b, h in zip(bottoms, heights)]
    if aging.empty:
        axes.bar(labels, bottoms)
    else:
        axes.legend(title="currency")
    axes.set_title(title)
    axes.set_xlabel("days overdue")
    axes.set_ylabel("HUF")
    axes.yaxis.set_major_formatter(lambda value, _position: f"{value:,.0f}")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


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
                        "currency and in HUF, with a chart: shown as metadata after each sync.",
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
        except ReportError as exc:
            failures[slug] = str(exc)
            context.log.error(f"company '{slug}': no aging report: {exc}")
            continue
        yield dg.AssetMaterialization(asset_key=AGING_REPORT, partition=slug, metadata=aging_metadata(slug, aging))
    if failures:
        raise dg.Failure(
            description="; ".join(f"{slug}: {message}" for slug, message in failures.items()),
            metadata={"failed_companies": dg.MetadataValue.json(sorted(failures))},
        )


def aging_metadata(slug: str, aging: pd.DataFrame) -> dict[str, object]:
    """The materialization's metadata: the table, the chart, and the headline figures."""
    as_of = aging["as_of_date"].iloc[0].isoformat() if not aging.empty else None
    title = f"Open receivables of {slug}" + (f" as of {as_of}" if as_of else "")
    chart = base64.b64encode(aging_chart_png(aging, title)).decode("ascii")
    total_huf = sum(aging["total_huf"], _ZERO)
    overdue_huf = sum(aging["overdue_huf"], _ZERO)
    return {
        "company": slug,
        "as_of_date": as_of or "",
        "aging": dg.MetadataValue.md(aging_markdown(aging)),
        "aging_chart": dg.MetadataValue.md(f"![aging of {slug}](data:image/png;base64,{chart})"),
        # Floats so the UI can plot them over time; the exact figures are in the table.
        "total_outstanding_huf": dg.MetadataValue.float(float(total_huf)),
        "overdue_huf": dg.MetadataValue.float(float(overdue_huf)),
        "open_invoices": dg.MetadataValue.int(int(aging["invoice_count"].sum())),
        "overdue_invoices": dg.MetadataValue.int(int(aging["overdue_invoice_count"].sum())),
    }


reporting_assets = [billingo_aging_report]
