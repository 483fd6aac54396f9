"""What the CLI draws in a terminal: tables that fit its width, health in colour, sync progress.

Only when the stream is a terminal (rich's test: a tty, or ``TTY_COMPATIBLE=1`` / ``FORCE_COLOR``
forcing one): scripts, pipes and files get the plain text the commands always printed, with the
same content and no escape codes. The width is the terminal's (``COLUMNS`` first, then the
terminal's size); no line of a table is longer, long cells are wrapped.
"""

from __future__ import annotations

import shutil
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType

import click
from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn
from rich.table import Table
from rich.text import Text

from .warehouse.sync_log import SyncProgress

# The colour of each health word; a word without one is printed as it is.
HEALTH_STYLES = {"GREEN": "bold green", "YELLOW": "bold yellow", "RED": "bold red"}
DETAIL_STYLE = "dim"


def console(*, stderr: bool = False) -> Console:
    """A rich console on the current stdout (or stderr), as wide as the terminal. Made per use:
    click's test runner and a redirected process swap ``sys.stdout``."""
    stream = sys.stderr if stderr else sys.stdout
    return Console(file=stream, width=shutil.get_terminal_size().columns, highlight=False, soft_wrap=False)


def echo_table(
    columns: Sequence[str],
    rows: Sequence[Mapping[str, object]],
    *,
    plain: Callable[[], str],
    numeric: Sequence[str] = (),
    styles: Mapping[str, Callable[[str], str | None]] | None = None,
    details: Sequence[Sequence[str]] | None = None,
) -> None:
    """``rows`` (cells by column name) as a table on stdout.

    A terminal gets rich tables no wider than the terminal: the columns side by side while they
    fit at their widest cell (up to ``WRAP_WIDTH``: longer cells wrap), else in groups one under
    the other, each group led by the first column so its rows can be told apart. ``numeric`` columns are right-aligned,
    ``styles[column](text)`` is a cell's style, ``details[i]`` lines go under row ``i`` in the
    last column. Anything else gets ``plain()``, the command's plain text of the same rows."""
    out = console()
    if not out.is_terminal:
        click.echo(plain())
        return
    texts = [{name: _cell(row.get(name)) for name in columns} for row in rows]
    groups = column_groups(columns, texts, out.width)
    for number, group in enumerate(groups):
        table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
        for name in group:
            table.add_column(name, justify="right" if name in numeric else "left", overflow="fold")
        for index, cells in enumerate(texts):
            table.add_row(*(Text(cells[name], style=(styles or {}).get(name, _no_style)(cells[name]) or "") for name in group))
            if details and number == len(groups) - 1:
                for detail in details[index]:
                    table.add_row(*([""] * (len(group) - 1)), Text(detail.strip(), style=DETAIL_STYLE))
        if number:
            out.print()
        out.print(table)


# A cell longer than this wraps rather than push the columns after it into another group.
WRAP_WIDTH = 30
# What a rich table of ours adds to each column but the last: a space of padding either side and one between.
COLUMN_GAP = 3


def column_groups(columns: Sequence[str], rows: Sequence[Mapping[str, str]], width: int) -> list[list[str]]:
    """The columns in groups that fit ``width`` side by side, each column as wide as its widest
    cell or header, up to ``WRAP_WIDTH``; every group after the first starts with the first column
    again. A column too wide on its own gets a group (with the first) and wraps to fit."""
    def needed(name: str) -> int:
        return min(max(len(name), *(len(row[name]) for row in rows), 1), WRAP_WIDTH) + COLUMN_GAP

    first, *rest = columns
    groups = [[first]]
    used = needed(first)
    for name in rest:
        if used + needed(name) > width + COLUMN_GAP and len(groups[-1]) > 1:
            groups.append([first])
            used = needed(first)
        groups[-1].append(name)
        used += needed(name)
    return groups


def _no_style(_text: str) -> None:
    return None


def _cell(value: object) -> str:
    return "" if value is None else str(value)


def health_style(word: str) -> str | None:
    return HEALTH_STYLES.get(word)


class SyncProgressDisplay:
    """The CLI's view of running syncs, on stderr (stdout is one line per company, for scripts).

    In a terminal: a bar per company (pages of pages, documents, retries) while it syncs;
    otherwise the run log's progress lines as they are. ``show`` and ``echo`` may be called from
    any thread (companies sync at once)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._progress: Progress | None = None
        self._tasks: dict[str, TaskID] = {}

    def __enter__(self) -> SyncProgressDisplay:
        err = console(stderr=True)
        if err.is_terminal:
            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("pages · {task.fields[detail]}"),
                console=err,
                # Erased when stopped: a result line (``echo``) is written between a stop and a
                # start, so it lands above the bars whether or not stdout is this screen.
                transient=True,
                redirect_stdout=False,
                redirect_stderr=False,
            )
            self._progress.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._progress is not None:
            self._progress.stop()

    def echo(self, line: str) -> None:
        """A result line on stdout, above the bars when they are drawn."""
        with self._lock:
            if self._progress is None:
                click.echo(line)
                return
            self._progress.stop()
            click.echo(line)
            self._progress.start()

    def show(self, progress: SyncProgress) -> None:
        with self._lock:
            if self._progress is None:
                click.echo(progress.line(), err=True)
                return
            detail = progress.text().split(" · ", 1)[1]
            total = progress.pages_total if progress.pages_total and progress.pages_fetched <= progress.pages_total else None
            if progress.finished:
                total = progress.pages_fetched
            task = self._tasks.get(progress.company)
            if task is None:
                task = self._tasks[progress.company] = self._progress.add_task(
                    progress.company, total=total, detail=detail
                )
            self._progress.update(task, completed=progress.pages_fetched, total=total, detail=detail)
