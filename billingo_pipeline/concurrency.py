"""Many companies at once inside one step: a bounded pool whose results come back to the caller's thread.

Dagster events must be yielded from the step's own thread, and an interruption (SIGINT, SIGTERM,
a run terminated from the UI) arrives there too, never in a worker. So the workers only compute;
``run_concurrently`` hands each outcome to the caller as soon as it is ready, and when the caller
is interrupted it sets ``stop`` (each worker's Billingo client then raises
``rate_limit.SyncStopRequested`` at its next request, which records that sync as interrupted),
starts nothing more, waits for the running workers to end, and lets the interruption go on.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

# How often the caller's thread wakes while it waits: short enough that a signal is handled
# promptly on every platform, long enough to cost nothing.
POLL_SECONDS = 0.5


class NotStarted(Exception):
    """An item's work never began: the caller was interrupted while items were being handed out."""


@dataclass(frozen=True)
class Outcome(Generic[T, R]):
    item: T
    result: R | None
    error: BaseException | None


def run_concurrently(
    items: Sequence[T],
    work: Callable[[T], R],
    *,
    max_workers: int,
    stop: threading.Event,
    thread_name_prefix: str = "company-sync",
) -> Iterator[Outcome[T, R]]:
    """``work(item)`` for every item, at most ``max_workers`` at a time, each outcome yielded (in
    the caller's thread) as it finishes. A failing item does not stop the others; its exception is
    in ``Outcome.error``. Closing the iterator early, or an interruption while it waits, stops the
    rest as described in the module docstring. A caller that can be interrupted while it handles
    an outcome closes the iterator when it stops (``contextlib.closing``): a generator left
    suspended would stop its workers only when it is garbage collected."""
    if max_workers < 1:
        raise ValueError(f"max_workers must be >= 1, got {max_workers}")
    if not items:
        return
    pool = ThreadPoolExecutor(max_workers=min(max_workers, len(items)), thread_name_prefix=thread_name_prefix)
    futures: dict[Future, T] = {}
    # No work starts before every future is known here: an interruption that lands while the
    # items are being submitted (a worker thread can take the interpreter as it starts) must find
    # every started one to wait for. Until the gate opens, a worker has done nothing; one that
    # finds ``stop`` set when it opens does nothing.
    gate = threading.Event()

    def gated(item: T) -> R:
        gate.wait()
        if stop.is_set():
            raise NotStarted(item)
        return work(item)

    try:
        for item in items:
            futures[pool.submit(gated, item)] = item
        gate.set()
        position = {future: index for index, future in enumerate(futures)}
        pending = set(futures)
        while pending:
            done, pending = wait(pending, timeout=POLL_SECONDS, return_when=FIRST_COMPLETED)
            for future in sorted(done, key=position.__getitem__):
                error = future.exception()
                yield Outcome(futures[future], None if error is not None else future.result(), error)
    except BaseException:
        stop.set()
        gate.set()
        unfinished = [future for future in futures if not future.done()]
        for future in unfinished:
            future.cancel()
        # The running ones see ``stop`` at their next request; their rows are finalized before we go on.
        wait(unfinished)
        raise
    finally:
        pool.shutdown(wait=True)
