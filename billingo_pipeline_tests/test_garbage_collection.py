"""The collector's thresholds while syncs run: raised once for all of them, put back after the last."""

from __future__ import annotations

import gc
import threading

import pytest

from billingo_pipeline.garbage_collection import SYNC_YOUNG_THRESHOLD, fewer_collections


@pytest.fixture
def thresholds():
    saved = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    yield
    gc.set_threshold(*saved)


def test_the_young_threshold_is_raised_while_a_sync_runs_and_put_back_after(thresholds):
    with fewer_collections():
        assert gc.get_threshold() == (SYNC_YOUNG_THRESHOLD, 10, 10)
    assert gc.get_threshold() == (700, 10, 10)


def test_overlapping_syncs_share_the_raise_and_the_last_one_out_restores(thresholds):
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    seen = []

    def first():
        with fewer_collections():
            first_in.set()
            second_in.wait(5)
        first_out.set()

    thread = threading.Thread(target=first)
    thread.start()
    first_in.wait(5)
    with fewer_collections():
        second_in.set()
        first_out.wait(5)
        seen.append(gc.get_threshold())  # the first has ended; this one still runs
    thread.join(5)
    assert seen == [(SYNC_YOUNG_THRESHOLD, 10, 10)]
    assert gc.get_threshold() == (700, 10, 10)


def test_a_higher_threshold_or_a_disabled_collector_is_left_alone(thresholds):
    gc.set_threshold(SYNC_YOUNG_THRESHOLD * 5, 10, 10)
    with fewer_collections():
        assert gc.get_threshold() == (SYNC_YOUNG_THRESHOLD * 5, 10, 10)
    gc.set_threshold(0, 10, 10)
    with fewer_collections():
        assert gc.get_threshold() == (0, 10, 10)
    assert gc.get_threshold() == (0, 10, 10)


def test_an_error_inside_still_puts_the_thresholds_back(thresholds):
    with pytest.raises(RuntimeError):
        with fewer_collections():
            raise RuntimeError("the sync failed")
    assert gc.get_threshold() == (700, 10, 10)
