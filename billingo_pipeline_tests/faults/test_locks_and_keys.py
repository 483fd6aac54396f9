"""Two syncs of one company at once, and a Fernet key that is wrong, missing or malformed.
On SQLite and PostgreSQL.

The second of two concurrent syncs is refused before it calls Billingo, naming the run that holds
the company; the first completes. A sync that cannot decrypt the company's API key fails with one
line saying why (never a key, never the bad value), calls nobody, and the sync after the key is
fixed completes.
"""

from __future__ import annotations

import os

import pytest

from billingo_pipeline.credentials import generate_fernet_key
from billingo_pipeline.settings import FERNET_KEY_ENV
from billingo_pipeline.warehouse.sync_log import COMPLETED, FAILED, RUNNING
from billingo_pipeline_tests.faults.conftest import DOCUMENTS


def test_a_second_concurrent_sync_is_refused_naming_the_run_that_holds_the_company(rig):
    first_run_id = "run-holding-acme"
    refused = []

    def second_sync_while_the_first_pages(request):
        # On the simulator's thread, while the first sync waits for its page 2: a real second caller.
        if request.path == "/v3/documents" and request.query.get("page") == "2" and not refused:
            calls_before = len(rig.simulator.requests_log)
            refused.append(rig.sync(via_dagster=True))
            refused.append(len(rig.simulator.requests_log) - calls_before)

    rig.simulator.on_request(second_sync_while_the_first_pages)
    first = rig.sync(run_id=first_run_id)

    second, billingo_calls_of_second = refused
    assert (second.success, second.status) == (False, None)  # refused before it wrote a row
    assert f"company '{rig.slug}' is already being synced by run {first_run_id}" in second.error
    assert billingo_calls_of_second == 0
    rig.assert_key_free(second.error)
    assert (first.success, first.status) == (True, COMPLETED)
    assert [(r.run_id, r.status) for r in rig.log_rows() if r.status == RUNNING] == []
    rig.assert_nothing_lost_or_doubled()
    rig.assert_recovers(unchanged=True)


FERNET_FAULTS = {
    "wrong": (lambda mp: mp.setenv(FERNET_KEY_ENV, generate_fernet_key()), "cannot be decrypted"),
    "missing": (lambda mp: mp.delenv(FERNET_KEY_ENV), f"{FERNET_KEY_ENV} is not set"),
    "malformed": (lambda mp: mp.setenv(FERNET_KEY_ENV, "not-a-fernet-key-0123456789"), "is not a valid Fernet key"),
}


@pytest.mark.parametrize("fault", list(FERNET_FAULTS))
def test_an_unusable_fernet_key_fails_the_sync_clearly_and_calls_nobody(rig, fernet_key, monkeypatch, fault):
    assert rig.sync().status == COMPLETED
    break_key, words = FERNET_FAULTS[fault]
    with monkeypatch.context() as patched:
        break_key(patched)
        bad_value = os.environ.get(FERNET_KEY_ENV)
        calls_before = len(rig.simulator.requests_log)
        result = rig.sync()
        assert len(rig.simulator.requests_log) == calls_before
    log = rig.last_log()
    assert (result.success, result.status, log.status) == (False, FAILED, FAILED)
    assert words in log.error_message and words in result.error and "\n" not in log.error_message
    for secret in (fernet_key, bad_value, rig.api_key):
        if secret:
            assert secret not in log.error_message and secret not in result.error
    if fault == "wrong":
        assert f"company '{rig.slug}'" in log.error_message
    assert rig.live_invoice_ids() == set(rig.source())

    # The right key back in the environment: the next sync completes, nothing to redo.
    rig.assert_recovers(unchanged=True)
