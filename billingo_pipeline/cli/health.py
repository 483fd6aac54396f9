"""The ``health`` command: every company's GREEN / YELLOW / RED sync health (the rules: ``billingo_pipeline/health.py``)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import click
import pandas as pd
import sqlalchemy as sa

from ..health import GREEN, RED, YELLOW, CompanyHealth, company_health
from ..terminal import echo_table, health_style
from ..warehouse.companies import list_companies
from ..warehouse.engine import get_engine, url_without_password


def _health_frame(rows: Sequence[CompanyHealth]) -> pd.DataFrame:
    running = any(h.running_progress for h in rows)
    return pd.DataFrame(
        [
            {
                "company": h.company_slug,
                "health": h.health,
                "api key": "yes" if h.key_configured else "no",
                "last sync": (h.last_sync_status or "-") + ("*" if h.running_since else ""),
                "last success (UTC)": h.last_success_at.strftime("%Y-%m-%d %H:%M") if h.last_success_at else "never",
                "age (h)": f"{h.last_success_age_hours:.1f}" if h.last_success_age_hours is not None else "-",
                "failed/processed": f"{h.last_sync_failed_documents}/{h.last_sync_documents}" if h.last_sync_status else "-",
                "reasons": "; ".join(h.reasons) or "-",
                # How far a running sync is, as its sync-log row says (a column only while one runs).
                **({"running now": h.running_progress.text() if h.running_progress else "-"} if running else {}),
            }
            for h in rows
        ]
    )


@click.command("health")
@click.argument("slugs", nargs=-1)
def health_command(slugs: tuple[str, ...]) -> None:
    """GREEN / YELLOW / RED sync health per company, with the reasons.

    Exits 1 when any company is RED (for cron and monitoring); 2 on bad input: an unknown
    company, a company without sync enabled, or a warehouse that cannot be read; 0 otherwise.
    """
    url = click.get_current_context().obj.warehouse_url
    try:
        engine = get_engine(url)
        rows = company_health(engine, slugs=list(slugs) or None)
    except sa.exc.SQLAlchemyError as exc:  # ArgumentError (a bad URL) included
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
        click.echo(f"error: cannot read the warehouse at {url_without_password(url)}: {reason}", err=True)
        sys.exit(2)
    if missing := sorted(set(slugs) - {h.company_slug for h in rows}):
        known = {c.slug for c in list_companies(engine)}
        unknown = [slug for slug in missing if slug not in known]
        if unknown:
            click.echo(f"error: unknown company: {', '.join(unknown)}", err=True)
        else:
            click.echo(f"error: Billingo sync is not enabled for: {', '.join(missing)}", err=True)
        sys.exit(2)
    if not rows:
        click.echo("no company has Billingo sync enabled.")
        return
    frame = _health_frame(rows)
    echo_table(
        list(frame.columns), frame.to_dict("records"), plain=lambda: frame.to_string(index=False),
        styles={"health": health_style},
    )
    counts = {level: sum(1 for h in rows if h.health == level) for level in (GREEN, YELLOW, RED)}
    running = " (* = a sync is running now)" if any(h.running_since for h in rows) else ""
    click.echo(f"\n{len(rows)} companies: {counts[GREEN]} GREEN, {counts[YELLOW]} YELLOW, {counts[RED]} RED{running}")
    if counts[RED]:
        sys.exit(1)
