"""The CLI's tables: as wide as the terminal at most (COLUMNS) when stdout is one, in colour only
then, the plain text otherwise; `--columns` on `invoices` and `report`; no company columns in the
terminal table of a one-company report, while its files keep them."""

from __future__ import annotations

import io
import re
from collections import Counter

import pandas as pd
import pytest
from click.testing import CliRunner

from billingo_pipeline.cli import main
from billingo_pipeline.reporting.queries import INVOICE_COLUMNS
from billingo_pipeline.resources import BillingoResource
from billingo_pipeline.sync import sync_company
from billingo_pipeline.warehouse.companies import get_company
from billingo_pipeline_tests.conftest import add_simulated_company

SLUG = "acme-kft"
WIDTH = 60
ESCAPE = re.compile(r"\x1b\[[0-9;]*m")
TABLE_COMMANDS = (
    ("company", "list"),
    ("status",),
    ("health",),
    ("invoices", "--company", SLUG),
    ("report", "outstanding", "--company", SLUG),
)


@pytest.fixture
def cli(engine, warehouse_url, simulator, fernet_key, monkeypatch):
    """A synced company (12 documents), and the CLI on its warehouse; not a terminal unless a
    test forces one."""
    for name in ("TTY_COMPATIBLE", "FORCE_COLOR", "NO_COLOR", "COLUMNS"):
        monkeypatch.delenv(name, raising=False)
    add_simulated_company(engine, simulator, SLUG, seed="tables", documents=12)
    billingo = BillingoResource(base_url=simulator.base_url)
    sync_company(engine, get_company(engine, SLUG), run_id="run-tables", trigger="test", open_client=billingo.client_for)
    monkeypatch.setenv("BILLINGO_WAREHOUSE_URL", warehouse_url)

    def invoke(*args: str):
        return CliRunner().invoke(main, list(args), catch_exceptions=False)

    return invoke


def _terminal(monkeypatch, width: int = WIDTH) -> None:
    monkeypatch.setenv("TTY_COMPATIBLE", "1")  # rich's switch: this stream is a terminal
    monkeypatch.setenv("COLUMNS", str(width))


@pytest.mark.parametrize("args", TABLE_COMMANDS, ids=lambda args: " ".join(args[:2]))
def test_a_terminal_table_is_never_wider_than_the_terminal(cli, monkeypatch, args):
    plain = cli(*args)
    assert plain.exit_code == 0, plain.output
    assert not ESCAPE.search(plain.stdout)
    assert max(len(line) for line in plain.stdout.splitlines()) > WIDTH  # too wide for the terminal below

    _terminal(monkeypatch)
    drawn = cli(*args)
    assert drawn.exit_code == 0, drawn.output
    assert ESCAPE.search(drawn.stdout)
    visible = ESCAPE.sub("", drawn.stdout).splitlines()
    assert max(len(line) for line in visible) <= WIDTH
    # No column is left out: a header cut by wrapping is still there, letter for letter.
    assert _characters(plain.stdout.splitlines()[0]) <= _characters("\n".join(visible))

    # Where the table fits, the same content as the plain text: the same characters (cells are
    # wrapped, never cut), rules and spaces aside.
    _terminal(monkeypatch, width=400)
    wide = ESCAPE.sub("", cli(*args).stdout)
    assert _characters(plain.stdout) == _characters(wide)


def _characters(text: str) -> Counter:
    return Counter(character for character in text if not character.isspace() and character not in "-─")


def test_health_is_in_colour_only_in_a_terminal(cli, monkeypatch):
    plain = cli("health")
    assert plain.exit_code == 0 and "GREEN" in plain.stdout and "\x1b[" not in plain.stdout
    _terminal(monkeypatch, width=200)
    drawn = cli("health")
    assert drawn.exit_code == 0
    assert "\x1b[1;32mGREEN" in drawn.stdout  # bold green


def test_invoices_columns_chooses_and_orders_the_columns(cli):
    table = cli("invoices", "--company", SLUG, "--columns", "gross_total, invoice_number")
    assert table.exit_code == 0, table.output
    assert table.stdout.splitlines()[0].split() == ["gross_total", "invoice_number"]
    exported = cli("invoices", "--company", SLUG, "--format", "csv", "--columns", "invoice_number,currency")
    assert list(pd.read_csv(io.StringIO(exported.stdout)).columns) == ["invoice_number", "currency"]
    assert len(pd.read_csv(io.StringIO(exported.stdout))) > 0


@pytest.mark.parametrize(
    "args, valid",
    [
        (("invoices", "--company", SLUG), INVOICE_COLUMNS),
        (("report", "outstanding", "--company", SLUG), ("company_slug", "invoice_number")),
    ],
    ids=["invoices", "report"],
)
def test_an_unknown_column_is_a_usage_error_listing_the_valid_ones(cli, args, valid):
    result = cli(*args, "--columns", "invoice_number,colour")
    assert result.exit_code == 2
    [line] = result.stderr.splitlines()
    assert line.startswith("error: --columns: unknown column colour for ")
    listed = line.split("valid columns: ")[1].split(", ")
    assert set(valid) <= set(listed)
    assert result.stdout == ""


def test_a_company_report_table_has_no_company_columns_but_its_files_do(cli, tmp_path):
    table = cli("report", "outstanding", "--company", SLUG)
    assert table.exit_code == 0, table.output
    header = table.stdout.splitlines()[0].split()
    assert "company_slug" not in header and "company_id" not in header and "invoice_number" in header

    exported = cli("report", "outstanding", "--company", SLUG, "--format", "csv")
    frame = pd.read_csv(io.StringIO(exported.stdout))
    assert {"company_id", "company_slug"} <= set(frame.columns) and set(frame["company_slug"]) == {SLUG}

    cli("report", "outstanding", "--company", SLUG, "--format", "xlsx", "--output", str(tmp_path / "out.xlsx"))
    assert "company_slug" in pd.read_excel(tmp_path / "out.xlsx").columns

    asked = cli("report", "outstanding", "--company", SLUG, "--columns", "company_slug,invoice_number")
    assert asked.stdout.splitlines()[0].split() == ["company_slug", "invoice_number"]
