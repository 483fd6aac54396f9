"""`billingo-pipeline`: company administration, syncs and status from the terminal.

Every failure is one clear line on stderr and a non-zero exit; nothing is stored half-way:
a key is validated live and encrypted before the single write that stores it.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
from pathlib import Path

import click
import pandas as pd
from sqlalchemy.exc import SQLAlchemyError

from .. import settings
from ..admin import grant_reader, register_company, replace_api_key, rotate_fernet_key, verify_stored_api_key
from ..billingo_client import BillingoApiError
from ..credentials import CredentialError, generate_fernet_key
from ..warehouse import companies as company_store
from ..warehouse.companies import Company, CompanyError, UnknownCompanyError
from ..warehouse.engine import get_engine, parse_warehouse_url, url_without_password
from .health import health_command
from .reporting import invoices_command, report_command
from ..terminal import SyncProgressDisplay, echo_table
from ..warehouse.sync_log import (
    COMPLETED,
    PARTIAL,
    RUNNING,
    SyncProgress,
    UnlockRefusedError,
    endpoint_rows,
    error_subject,
    release_running_sync,
    sync_rows,
)

API_KEY_ENV = "BILLINGO_API_KEY"
READER_PASSWORD_ENV = "BILLINGO_READER_PASSWORD"


def missing_sqlite_file(url: str) -> Path | None:
    """The file of a SQLite warehouse URL when that file does not exist (SQLite would create it empty)."""
    try:
        parsed = parse_warehouse_url(url)
    except SQLAlchemyError:
        return None  # get_engine says what is wrong with it
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    path = Path(parsed.database)
    return None if path.exists() else path.resolve()


class Context:
    def __init__(self, warehouse_url: str, api_base_url: str):
        self._warehouse_url = warehouse_url
        self.api_base_url = api_base_url

    @property
    def warehouse_url(self) -> str:
        """The URL of a warehouse that exists. A command reading it with no SQLite file there would
        report on an empty warehouse it had just created (no companies, "unknown company"), and
        leave that file behind: such a command stops instead, with how to get a warehouse."""
        missing = missing_sqlite_file(self._warehouse_url)
        if missing is not None:
            _usage_error(
                f"no warehouse at {missing} (the SQLite file does not exist). Run `make demo` in the checkout "
                "(it writes a .env that points the CLI at the demo's warehouse), point "
                f"{settings.WAREHOUSE_URL_ENV} or --warehouse-url at an existing one, or create this one with "
                "`billingo-pipeline company add SLUG --name NAME`."
            )
        return self._warehouse_url

    @property
    def engine(self):
        return self._engine(self.warehouse_url)

    @property
    def engine_creating_warehouse(self):
        """The engine for commands that set a warehouse up: a missing SQLite file is created and migrated."""
        return self._engine(self._warehouse_url)

    def _engine(self, url: str):
        try:
            return get_engine(url)
        except SQLAlchemyError as exc:
            shown = url_without_password(url)
            _fail(f"cannot open the warehouse at {shown}: {type(exc).__name__}: {str(exc).splitlines()[0]}")


def _fail(problem: str | Exception) -> None:
    """One line on stderr; exit 2 when the input named a company that does not exist, else 1."""
    click.echo(f"error: {problem}", err=True)
    sys.exit(2 if isinstance(problem, UnknownCompanyError) else 1)


def _key_outcome(company: Company, tax_code: str | None) -> str:
    verified = f"key verified (organization tax code {tax_code})" if tax_code else "key NOT verified"
    return f"{verified}; fingerprint {company.api_key_fingerprint}"


def _add_partition(slug: str) -> None:
    if not os.environ.get("DAGSTER_HOME"):
        click.echo(f"note: DAGSTER_HOME is not set; partition '{slug}' is added when the company is first synced.")
        return
    from ..partitions import ensure_company_partitions
    from ..runner import dagster_instance

    ensure_company_partitions(dagster_instance(), [slug])
    click.echo(f"partition '{slug}' added to the Dagster instance.")


class _DotenvGroup(click.Group):
    def main(self, args=None, *rest, **kwargs):
        # A command line read from the process's own argv is the installed program: it takes the
        # working directory's .env (`make demo` writes one) before its options are read from the
        # environment. In-process callers pass their arguments and keep the environment they set
        # up, so a .env in whatever directory they run in never leaks into their os.environ.
        if args is None:
            settings.load_dotenv_file()
        return super().main(args, *rest, **kwargs)


@click.group(cls=_DotenvGroup)
@click.option("--warehouse-url", envvar=settings.WAREHOUSE_URL_ENV, default=None, help="SQLAlchemy URL of the warehouse.")
@click.option("--api-base-url", envvar=settings.API_BASE_URL_ENV, default=settings.DEFAULT_API_BASE_URL, show_default=True)
@click.pass_context
def main(click_ctx: click.Context, warehouse_url: str | None, api_base_url: str) -> None:
    """Sync Billingo invoices into the warehouse and administer companies."""
    click_ctx.obj = Context(warehouse_url or settings.warehouse_url(), api_base_url)


@main.command("generate-fernet-key")
def generate_fernet_key_command() -> None:
    """Print a new Fernet key for BILLINGO_FERNET_KEY."""
    click.echo(generate_fernet_key())


@main.command("rotate-fernet-key")
@click.pass_obj
def rotate_fernet_key_command(ctx: Context) -> None:
    """Re-encrypt every company's API key with the first key of BILLINGO_FERNET_KEY ("new,old")."""
    try:
        rotation = rotate_fernet_key(ctx.engine)
    except (CompanyError, CredentialError) as exc:
        _fail(f"nothing re-encrypted: {exc}")
    click.echo(
        f"re-encrypted the API keys of {rotation.reencrypted} companies with the first key of "
        f"{settings.FERNET_KEY_ENV} ({rotation.without_key} without a key); the other keys can now be removed from it."
    )


@main.group()
def company() -> None:
    """Add, list, update and disable companies; manage their Billingo API keys."""


api_key_option = click.option(
    "--api-key",
    envvar=API_KEY_ENV,
    prompt="Billingo API key",
    hide_input=True,
    help=f"Read from ${API_KEY_ENV} or a hidden prompt (never pass it on the command line in shared shells).",
)


allow_shared_key_option = click.option(
    "--allow-shared-key",
    is_flag=True,
    help="Accept a key another company already uses (both then share one Billingo rate limit).",
)


@company.command("add")
@click.argument("slug")
@click.option("--name", required=True, help="Display name of the company.")
@api_key_option
@click.option("--disabled", is_flag=True, help="Store the company with the BILLINGO_SYNC flag off.")
@click.option("--no-verify", is_flag=True, help="Skip the live key check (offline set-up).")
@allow_shared_key_option
@click.pass_obj
def company_add(
    ctx: Context, slug: str, name: str, api_key: str, disabled: bool, no_verify: bool, allow_shared_key: bool
) -> None:
    """Add a company with its Billingo API key (checked live, stored encrypted)."""
    try:
        added, tax_code = register_company(
            ctx.engine_creating_warehouse, slug, name, api_key, api_base_url=ctx.api_base_url, verify=not no_verify,
            sync_enabled=not disabled, allow_shared_key=allow_shared_key,
        )
    except (CompanyError, CredentialError, BillingoApiError) as exc:
        _fail(exc)
    click.echo(f"company '{slug}' added; {_key_outcome(added, tax_code)}.")
    _add_partition(slug)


@company.command("list")
@click.pass_obj
def company_list(ctx: Context) -> None:
    """List companies: flags, whether a key is configured, and its fingerprint (never the key)."""
    rows = [
        {
            "slug": c.slug,
            "name": c.name,
            "sync": "on" if c.billingo_sync_enabled else "off",
            "active": "yes" if c.is_active else "no",
            "api key": "configured" if c.has_api_key else "not configured",
            "fingerprint": c.api_key_fingerprint or "-",
            "key checked": c.api_key_checked_at.strftime("%Y-%m-%d %H:%M") if c.api_key_checked_at else "-",
        }
        for c in company_store.list_companies(ctx.engine)
    ]
    if not rows:
        click.echo("no companies yet: add one with `billingo-pipeline company add SLUG --name NAME`.")
        return
    echo_table(list(rows[0]), rows, plain=lambda: pd.DataFrame(rows).to_string(index=False))


@company.command("update")
@click.argument("slug")
@click.option("--name", default=None)
@click.option("--enable/--disable", "sync_enabled", default=None, help="Turn the BILLINGO_SYNC flag on or off.")
@click.option("--active/--inactive", "active", default=None)
@click.pass_obj
def company_update(ctx: Context, slug: str, name: str | None, sync_enabled: bool | None, active: bool | None) -> None:
    """Change a company's name or flags."""
    try:
        updated = company_store.update_company(
            ctx.engine, slug, name=name, billingo_sync_enabled=sync_enabled, is_active=active
        )
    except CompanyError as exc:
        _fail(exc)
    click.echo(
        f"company '{slug}': name={updated.name!r}, sync={'on' if updated.billingo_sync_enabled else 'off'}, "
        f"active={'yes' if updated.is_active else 'no'}."
    )


@company.command("disable")
@click.argument("slug")
@click.pass_obj
def company_disable(ctx: Context, slug: str) -> None:
    """Stop syncing a company (its data stays in the warehouse)."""
    try:
        company_store.update_company(ctx.engine, slug, billingo_sync_enabled=False)
    except CompanyError as exc:
        _fail(exc)
    click.echo(f"company '{slug}': Billingo sync disabled; its data stays in the warehouse.")


@company.command("rotate-key")
@click.argument("slug")
@api_key_option
@click.option("--no-verify", is_flag=True, help="Skip the live key check.")
@allow_shared_key_option
@click.pass_obj
def company_rotate_key(ctx: Context, slug: str, api_key: str, no_verify: bool, allow_shared_key: bool) -> None:
    """Replace a company's Billingo API key (the new one is checked live first)."""
    try:
        rotated, tax_code = replace_api_key(
            ctx.engine, slug, api_key, api_base_url=ctx.api_base_url, verify=not no_verify,
            allow_shared_key=allow_shared_key,
        )
    except (CompanyError, CredentialError, BillingoApiError) as exc:
        _fail(exc)
    click.echo(f"company '{slug}': API key replaced; {_key_outcome(rotated, tax_code)}.")
    _add_partition(slug)


@company.command("test-key")
@click.argument("slug")
@click.pass_obj
def company_test_key(ctx: Context, slug: str) -> None:
    """Check the stored key against Billingo (GET /organization)."""
    try:
        tax_code = verify_stored_api_key(ctx.engine, slug, api_base_url=ctx.api_base_url)
    except (CompanyError, CredentialError, BillingoApiError) as exc:
        _fail(exc)
    click.echo(f"company '{slug}': key OK (organization tax code {tax_code}).")


@company.command("grant-reader")
@click.argument("slug")
@click.option("--role", required=True, help="PostgreSQL login role to create (or reuse) for this company's analyst.")
@click.option("--no-password", is_flag=True, help="Set no password (pg_hba authenticates: peer, cert, ...).")
@click.pass_obj
def company_grant_reader(ctx: Context, slug: str, role: str, no_password: bool) -> None:
    """PostgreSQL: a read-only login that sees this company's rows only (row-level security)."""
    password = None
    if not no_password:
        # Never an option: argv is visible to every user of the machine.
        password = os.environ.get(READER_PASSWORD_ENV) or click.prompt(
            f"Password for role {role}", hide_input=True, confirmation_prompt=True
        )
    try:
        grant = grant_reader(ctx.engine, slug, role, password)
    except CompanyError as exc:
        _fail(exc)
    action = "created" if grant.created else "updated"
    password_note = "password set" if grant.password_set else ("no password" if grant.created else "password unchanged")
    click.echo(f"role '{role}' {action} ({password_note}); it reads companies {', '.join(grant.company_slugs)}.")


# `sync` exit codes, for cron wrappers (README "Exit codes").
# Dagster's executor turns SIGTERM into SIGINT, so both end a sync the same way (130 = 128 + SIGINT).
EXIT_COMPLETED, EXIT_FAILED, EXIT_USAGE, EXIT_PARTIAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
# A company's line in the terminal; --verbose shows Dagster's log and the whole message.
MAX_LINE_ERROR = 400


def _usage_error(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(EXIT_USAGE)


def _known_company(engine, slug: str) -> Company:
    try:
        return company_store.get_company(engine, slug)
    except CompanyError as exc:
        _usage_error(str(exc))


def _sync_line(result, verbose: bool) -> str:
    line = f"{result.company}: {result.sync_status or 'NOT STARTED'}"
    if result.counts:
        line += " · " + ", ".join(f"{value} {name}" for name, value in result.counts.items())
    line += f" · run {result.run_id}"
    if result.error:
        error = " ".join(result.error.split()).removeprefix(f"{result.company}: ")
        if not verbose and len(error) > MAX_LINE_ERROR:
            error = error[: MAX_LINE_ERROR - 3] + "..."
        line += f" · {error}"
    return line


def sync_exit_code(statuses: list[str | None]) -> int:
    """1 when any company FAILED or did not start, else 3 when any was PARTIAL, else 0."""
    if any(status not in (COMPLETED, PARTIAL) for status in statuses):
        return EXIT_FAILED
    return EXIT_PARTIAL if PARTIAL in statuses else EXIT_COMPLETED


@main.command("sync")
@click.argument("slugs", nargs=-1)
@click.option("--all", "sync_all", is_flag=True, help="Every company with sync enabled, active and a key.")
@click.option("--full", is_flag=True, help="A full sweep of every document (also marks deleted drafts), not an incremental sync.")
@click.option("--verbose", "-v", is_flag=True, help="Also show Dagster's log lines and each error in full.")
@click.pass_obj
def sync_command(ctx: Context, slugs: tuple[str, ...], sync_all: bool, full: bool, verbose: bool) -> None:
    """Run the Billingo sync (through Dagster) for the given companies.

    The companies run as the daily schedule runs them: up to 25 a Dagster run, several at once
    inside a run. Prints one line per company. Exit codes: 0 every company COMPLETED; 3 none failed but some
    were PARTIAL (documents failed, see `status`); 1 a company FAILED or was not started (already
    syncing elsewhere, the warehouse went away); 2 nothing was synced: unknown or unsyncable
    company, bad option or setting, unreadable warehouse; 130 interrupted (Ctrl-C or SIGTERM).
    """
    engine = ctx.engine
    if sync_all:
        slugs = tuple(company_store.syncable_company_slugs(engine))
    if not slugs:
        _usage_error("name one or more companies, or pass --all.")
    for slug in slugs:
        try:
            _known_company(engine, slug).require_syncable()
        except CompanyError as exc:
            _usage_error(str(exc))
    try:
        settings.sync_stale_after_seconds()
    except settings.SettingsError as exc:
        _usage_error(str(exc))
    if not os.environ.get("DAGSTER_HOME"):
        # stderr: stdout stays one line per company for scripts that read it.
        click.echo(
            "note: DAGSTER_HOME is not set, so this sync runs on a temporary Dagster instance and its run "
            "will not appear in the Dagster UI; set DAGSTER_HOME (`make demo` writes it to .env) to keep it.",
            err=True,
        )
    # Dagster is imported by the commands that run it only: the others start in a fraction of the time.
    from ..resources import BillingoResource
    from ..runner import SyncRunResult, dagster_instance, run_company_syncs

    try:
        with SyncProgressDisplay() as progress:
            results = run_company_syncs(
                list(slugs),
                warehouse_url=ctx.warehouse_url,
                billingo=BillingoResource(base_url=ctx.api_base_url),
                instance=dagster_instance(),
                console_log_level="INFO" if verbose else "CRITICAL",
                on_result=lambda result: progress.echo(_sync_line(result, verbose)),
                # --verbose shows the run's log, progress lines included, on the console.
                on_progress=None if verbose else progress.show,
                full=full,
            )
    except KeyboardInterrupt:  # between two runs, outside Dagster's own interrupt handling
        results = [SyncRunResult("", "", False, None, None, interrupted=True)]
    if any(r.interrupted for r in results):
        click.echo(
            "interrupted: a company being synced is marked FAILED (interrupted); the remaining companies were not synced.",
            err=True,
        )
        sys.exit(EXIT_INTERRUPTED)
    sys.exit(sync_exit_code([r.sync_status for r in results]))


@main.command("unlock")
@click.argument("slug")
@click.pass_obj
def unlock_command(ctx: Context, slug: str) -> None:
    """Release a company's sync lock left by a sync that died (its RUNNING row becomes FAILED).

    Refused while that sync's heartbeat is fresh: a live sync is never released. The next sync
    takes a dead row over by itself; this is for when you would rather not wait.
    """
    company = _known_company(ctx.engine, slug)
    try:
        released = release_running_sync(
            ctx.engine, company.id, stale_after=dt.timedelta(seconds=settings.sync_stale_after_seconds())
        )
    except settings.SettingsError as exc:
        _usage_error(str(exc))
    except UnlockRefusedError as exc:
        _fail(exc)
    if released is None:
        click.echo(f"company '{slug}': no sync is running; nothing to release.")
        return
    click.echo(f"company '{slug}': released the sync of run {released.run_id} (marked FAILED, abandoned).")


@main.command("status")
@click.argument("slug", required=False)
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 10_000))
@click.pass_obj
def status_command(ctx: Context, slug: str | None, limit: int) -> None:
    """Recent sync-log rows, newest first (a RUNNING row shows how far it got; a PARTIAL one,
    which documents failed and why)."""
    if slug is not None:
        _known_company(ctx.engine, slug)
    rows = sync_rows(ctx.engine, company_slug=slug, limit=limit)
    if not rows:
        click.echo("no syncs recorded yet.")
        return
    endpoints = endpoint_rows(ctx.engine, [row["id"] for row in rows])
    rows = [{**row, "endpoints": endpoints.get(row["id"], [])} for row in rows]
    cells = _sync_row_cells(rows)
    echo_table(
        list(cells[0]), cells, plain=lambda: format_sync_rows(rows, document_errors=STATUS_DOCUMENT_ERRORS),
        numeric=SYNC_ROW_NUMBERS, details=[_detail_lines(row, STATUS_DOCUMENT_ERRORS) for row in rows],
    )


# A PARTIAL sync lists this many of its failed documents under its line; the rest are counted.
STATUS_DOCUMENT_ERRORS = 5
STATUS_ERROR_LENGTH = 120


def endpoints_line(endpoints: list[dict]) -> str | None:
    """The other endpoints of a sync in one line (the row's own columns are the documents'):
    ``partners 57 (1 updated) · spendings 31 (1 created, 1 failed) · ... · 4 calls``."""
    others = [e for e in endpoints if e["endpoint"] != "documents"]
    if not others:
        return None
    parts = []
    for e in others:
        changes = [f"{e[key]} {word}" for key, word in (
            ("created", "created"), ("updated", "updated"), ("failed", "failed"), ("marked_missing", "marked missing"),
        ) if e[key]]
        parts.append(f"{e['endpoint']} {e['fetched']}" + (f" ({', '.join(changes)})" if changes else ""))
    return "    " + " · ".join(parts) + f" · {sum(e['api_calls'] for e in others)} calls"


def _detail_lines(row: dict, shown: int) -> list[str]:
    """What `status` prints under a row: how far a RUNNING sync is; the other endpoints' counts; a
    PARTIAL one's failed documents and entities."""
    if row["status"] == RUNNING:
        return [f"    {SyncProgress.of_row(row).text()}"]
    summary = endpoints_line(row.get("endpoints") or [])
    lines = [summary] if summary else []
    errors = row.get("errors") or []
    if row["status"] != PARTIAL or not errors:
        return lines
    for error in errors[:shown]:
        message = " ".join(str(error.get("message") or "").split())
        if len(message) > STATUS_ERROR_LENGTH:
            message = message[: STATUS_ERROR_LENGTH - 3] + "..."
        lines.append(f"    {error_subject(error)}: {message}")
    # The log keeps at most MAX_STORED_ERRORS messages; the failed count covers every document.
    more = max(len(errors), row["invoices_failed"] or 0) - min(len(errors), shown)
    if more > 0:
        lines.append(f"    {more} more")
    return lines


# The columns of a sync-log table that hold numbers (right-aligned).
SYNC_ROW_NUMBERS = ("seconds", "processed", "created", "updated", "skipped", "failed", "fetched", "api calls")


def _sync_row_cells(rows: list[dict]) -> list[dict]:
    return [
        {
            "company": r["company"],
            "status": r["status"],
            "started (UTC)": r["started_at"].strftime("%Y-%m-%d %H:%M:%S"),
            "seconds": f"{r['duration_seconds']:.1f}" if r["duration_seconds"] is not None else "-",
            "processed": r["invoices_processed"],
            "created": r["invoices_created"],
            "updated": r["invoices_updated"],
            "skipped": r["invoices_skipped"],
            "failed": r["invoices_failed"],
            "fetched": r["documents_fetched"],
            "api calls": r["api_calls"],
            "error": (r["error_message"] or "")[:60],
        }
        for r in rows
    ]


def format_sync_rows(rows: list[dict], *, document_errors: int = 0) -> str:
    """The rows as a table; with ``document_errors``, a RUNNING row is followed by how far it is
    and a PARTIAL row by up to that many of its failed documents."""
    table = pd.DataFrame(_sync_row_cells(rows)).to_string(index=False).split("\n")
    if not document_errors:
        return "\n".join(table)
    # to_string never wraps, so line 1 + i is row i.
    lines = [table[0]]
    for row, line in zip(rows, table[1:]):
        lines += [line, *_detail_lines(row, document_errors)]
    return "\n".join(lines)


main.add_command(health_command)
main.add_command(invoices_command)
main.add_command(report_command)
