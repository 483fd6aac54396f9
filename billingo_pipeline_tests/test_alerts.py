"""Failed sync runs: the sensor marks their sync-log rows FAILED and alerts by webhook and e-mail.

Everything is real: the runs are genuinely failed Dagster runs of ``billingo_sync_job`` (a key the
simulator rejects; a run worker interrupted while it pages Billingo), the sensor is evaluated
through ``build_run_status_sensor_context``, the webhook receiver is an ``http.server`` on
127.0.0.1 and the mail server is aiosmtpd, both started here. Each flow runs on both warehouse
dialects, and the API key is looked for in every byte that left the process.
"""

from __future__ import annotations

import email
import email.policy
import json
import os
import signal
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dagster as dg
import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from billingo_pipeline import alerts
from billingo_pipeline.admin import register_company
from billingo_pipeline.alerts import AlertChannels, SyncAlert, send_alert
from billingo_pipeline.defs.billingo.assets import billingo_assets
from billingo_pipeline.defs.billingo.jobs import billingo_sync_job
from billingo_pipeline.partitions import COMPANY_PARTITIONS_NAME
from billingo_pipeline.resources import AlertChannelsResource, BillingoResource, FernetKeyResource, WarehouseResource
from billingo_pipeline.defs.billingo.sensors import (
    SYNC_RUN_CANCELED_SENSOR,
    SYNC_RUN_FAILURE_SENSOR,
    is_sync_run,
    sync_run_canceled_sensor,
    sync_run_failure_sensor,
)
from billingo_pipeline.redaction import redact_secrets
from billingo_pipeline.simulator import generate_api_key
from billingo_pipeline.warehouse.schema import companies, sync_log
from billingo_pipeline.warehouse.sync_log import COMPLETED, FAILED, RUNNING
from .conftest import free_port

SMTP_USER, SMTP_PASSWORD = "alerts@billingo.test", "smtp-secret-pw-7f3a"
WEBSERVER_URL = "http://dagster.internal:3000"
ALERT_ENVS = [name for name in os.environ if name.startswith("BILLINGO_ALERT_")] + ["DAGSTER_WEBSERVER_URL"]


# --- real receivers ---------------------------------------------------------------------------


class WebhookReceiver:
    """An HTTP server on 127.0.0.1 that records every POST; ``statuses`` are answered first."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.statuses: list[int] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/billingo"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def raw(self) -> str:
        return "\n".join(r["body"].decode("utf-8") for r in self.requests)

    def json_bodies(self) -> list[dict]:
        return [json.loads(r["body"]) for r in self.requests]


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    receiver.thread.start()
    yield receiver
    receiver.server.shutdown()
    receiver.server.server_close()


class MailSink:
    def __init__(self) -> None:
        self.envelopes = []
        self.logins: list[tuple[bytes, bytes]] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's naming
        self.envelopes.append(envelope)
        return "250 Message accepted for delivery"

    def authenticate(self, server, session, envelope, mechanism, auth_data):
        if isinstance(auth_data, LoginPassword):
            self.logins.append((auth_data.login, auth_data.password))
            ok = auth_data.login == SMTP_USER.encode() and auth_data.password == SMTP_PASSWORD.encode()
            return AuthResult(success=ok)
        return AuthResult(success=False)

    @property
    def raw(self) -> str:
        return "\n".join(e.original_content.decode("utf-8", "replace") for e in self.envelopes)

    @property
    def decoded(self) -> str:
        """Headers and decoded bodies: a quoted-printable soft break could hide a string in ``raw``."""
        return "\n".join(f"{m['Subject']}\n{m.get_content()}" for m in self.messages())

    def messages(self):
        return [email.message_from_bytes(e.original_content, policy=email.policy.default) for e in self.envelopes]


@pytest.fixture
def smtp_server():
    sink = MailSink()
    # AUTH without TLS is for this loopback test only; production uses STARTTLS (the default).
    controller = Controller(
        sink, hostname="127.0.0.1", port=free_port(), authenticator=sink.authenticate, auth_require_tls=False
    )
    controller.start()
    yield sink, controller.port
    controller.stop()


@pytest.fixture
def alert_env(monkeypatch, webhook, smtp_server):
    """Both channels configured for the real local receivers, as a deployment would."""
    for name in ALERT_ENVS:
        monkeypatch.delenv(name, raising=False)
    _, port = smtp_server
    monkeypatch.setenv("BILLINGO_ALERT_WEBHOOK_URL", webhook.url)
    monkeypatch.setenv("BILLINGO_ALERT_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("BILLINGO_ALERT_SMTP_PORT", str(port))
    monkeypatch.setenv("BILLINGO_ALERT_SMTP_USER", SMTP_USER)
    monkeypatch.setenv("BILLINGO_ALERT_SMTP_PASSWORD", SMTP_PASSWORD)
    monkeypatch.setenv("BILLINGO_ALERT_SMTP_FROM", "dagster@billingo.test")
    monkeypatch.setenv("BILLINGO_ALERT_SMTP_TO", "data-team@billingo.test, oncall@billingo.test")
    monkeypatch.setenv("BILLINGO_ALERT_SMTP_STARTTLS", "false")
    monkeypatch.setenv("DAGSTER_WEBSERVER_URL", WEBSERVER_URL)


# --- running the real job --------------------------------------------------------------------


class InterruptMissedDagster(RuntimeError):
    pass


@pytest.fixture
def sigint_guard():
    """While Dagster executes, its own SIGINT handler turns the signal into an interrupted run. Should
    a signal ever arrive outside it, this handler fails the test instead of pytest's KeyboardInterrupt
    ending the whole session."""

    def handler(signum, frame):
        raise InterruptMissedDagster("SIGINT reached the test, not Dagster's run")

    previous = signal.signal(signal.SIGINT, handler)
    yield
    signal.signal(signal.SIGINT, previous)


def _run_sync_job(instance, warehouse_url, simulator, slug):
    instance.add_dynamic_partitions(COMPANY_PARTITIONS_NAME, [slug])
    defs = dg.Definitions(
        assets=billingo_assets,
        jobs=[billingo_sync_job],
        resources={
            "warehouse": WarehouseResource(url=warehouse_url),
            "billingo": BillingoResource(base_url=simulator.base_url, backoff_seconds=0.01, max_retries=0, page_size=50),
            "fernet": FernetKeyResource(),
        },
    )
    return defs.resolve_job_def(billingo_sync_job.name).execute_in_process(
        partition_key=slug, instance=instance, raise_on_error=False
    )


def _evaluate(sensor, sensor_name, instance, result, warehouse_url, event):
    context = dg.build_run_status_sensor_context(
        sensor_name=sensor_name,
        dagster_event=event,
        dagster_instance=instance,
        dagster_run=instance.get_run_by_id(result.run_id),
        resources={"warehouse": WarehouseResource(url=warehouse_url), "alerts": AlertChannelsResource.from_environment()},
    )
    if sensor is sync_run_failure_sensor:
        context = context.for_run_failure()
    return sensor(context)


def _rows(engine):
    with engine.connect() as conn:
        return conn.execute(sa.select(sync_log).order_by(sync_log.c.id)).all()


def _stored_token(engine, slug):
    with engine.connect() as conn:
        return conn.execute(sa.select(companies.c.api_key_encrypted).where(companies.c.slug == slug)).scalar_one()


def _assert_no_secret(texts, *secrets):
    for text in texts:
        for secret in secrets:
            assert secret not in text


# --- the flows -------------------------------------------------------------------------------


def _acme_with_action_on_page_two(engine, simulator, seed, action) -> str:
    """Company 'acme' (600 documents, 12 pages) whose sync runs ``action`` when Billingo is asked
    for its second page: mid-sync, with the RUNNING row written. Returns its API key.

    A signal is handled in the main thread while the company syncs in a worker that fetches a page
    ahead of its writer: ten pages still to fetch and write keep the sync from finishing before the
    interruption reaches it (with three pages, it sometimes completed first)."""
    api_key = generate_api_key(seed)
    simulator.add_organization(api_key, name="Acme", seed=seed, document_count=600)
    register_company(engine, "acme", "Acme Kft.", api_key, api_base_url=simulator.base_url)
    pages = []

    def on_request(request):
        if request.path == "/v3/documents":
            pages.append(request)
            if len(pages) == 2:
                action()

    simulator.on_request(on_request)
    return api_key


def test_rejected_key_run_is_alerted_by_webhook_and_email(
    engine, warehouse_url, simulator, instance, fernet_key, alert_env, webhook, smtp_server
):
    sink, _ = smtp_server
    wrong_key = "0123456789abcdef-not-a-billingo-key"  # not UUID-shaped: only construction keeps it out
    simulator.add_organization(generate_api_key(31), name="Acme", seed=31, document_count=5)
    register_company(engine, "acme", "Acme Kft.", wrong_key, api_base_url=simulator.base_url, verify=False)

    result = _run_sync_job(instance, warehouse_url, simulator, "acme")
    assert not result.success
    [row] = _rows(engine)
    assert row.status == FAILED and "HTTP 401" in row.error_message  # the sync finalized its own row

    outcome = _evaluate(sync_run_failure_sensor, SYNC_RUN_FAILURE_SENSOR, instance, result, warehouse_url, result.get_run_failure_event())
    assert outcome is None
    assert _rows(engine)[0].error_message == row.error_message  # a finalized row is left alone

    [body] = webhook.json_bodies()
    assert webhook.requests[0]["headers"]["Content-Type"].startswith("application/json")
    assert body["event"] == "billingo_sync_run_failed"
    assert body["run_id"] == result.run_id and body["job"] == "billingo_sync_job"
    assert body["companies"] == ["acme"]
    assert "HTTP 401" in body["error_message"] and "acme" in body["error_message"]
    assert body["run_url"] == f"{WEBSERVER_URL}/runs/{result.run_id}"
    assert body["rows_marked_failed"] == 0
    [alert_row] = body["sync_log_rows"]
    assert (alert_row["company"], alert_row["status"], alert_row["id"]) == ("acme", FAILED, row.id)
    assert "HTTP 401" in alert_row["error_message"]
    assert result.run_id in body["text"]

    [message] = sink.messages()
    assert sink.logins == [(SMTP_USER.encode(), SMTP_PASSWORD.encode())]
    assert sorted(sink.envelopes[0].rcpt_tos) == ["data-team@billingo.test", "oncall@billingo.test"]
    assert message["Subject"] == f"[billingo] sync run failed: acme (run {result.run_id[:8]})"
    text = message.get_content()
    assert result.run_id in text and "HTTP 401" in text and "acme: FAILED" in text
    assert f"{WEBSERVER_URL}/runs/{result.run_id}" in text

    secrets = (wrong_key, _stored_token(engine, "acme"), fernet_key, SMTP_PASSWORD)
    _assert_no_secret([webhook.raw, sink.raw, sink.decoded, json.dumps(body)], *secrets)


def test_run_interrupted_mid_sync_gets_its_running_row_failed_and_alerted(
    engine, warehouse_url, simulator, instance, fernet_key, alert_env, webhook, smtp_server, sigint_guard
):
    """The run worker is interrupted while paging Billingo (SIGINT, as a stopped container gets):
    the step finalizes its own row with the reason before the run fails. A worker killed outright
    (SIGKILL, a lost node) cannot: its row stays RUNNING, and the failure sensor closes it."""
    sink, _ = smtp_server
    api_key = _acme_with_action_on_page_two(engine, simulator, 32, lambda: os.kill(os.getpid(), signal.SIGINT))
    result = _run_sync_job(instance, warehouse_url, simulator, "acme")
    assert not result.success
    assert instance.get_run_by_id(result.run_id).status == dg.DagsterRunStatus.FAILURE
    [row] = _rows(engine)
    assert row.status == FAILED and row.run_id == result.run_id
    assert row.error_message.startswith("interrupted (Ctrl-C, SIGTERM, or the Dagster run was terminated)")

    with engine.begin() as conn:  # what a worker killed before it could finalize leaves behind
        conn.execute(sync_log.update().where(sync_log.c.id == row.id).values(status=RUNNING, finished_at=None, error_message=None))

    _evaluate(sync_run_failure_sensor, SYNC_RUN_FAILURE_SENSOR, instance, result, warehouse_url, result.get_run_failure_event())

    [row] = _rows(engine)
    assert row.status == FAILED and row.finished_at is not None and row.duration_seconds >= 0
    assert row.error_message.startswith("the Dagster run failed before this sync finished: ")
    [body] = webhook.json_bodies()
    assert body["rows_marked_failed"] == 1 and body["companies"] == ["acme"]
    assert body["sync_log_rows"][0]["status"] == FAILED
    assert "interrupt" in body["error_message"].lower()
    [message] = sink.messages()
    assert "1 sync-log row(s) left RUNNING by the run were marked FAILED" in message.get_content()
    _assert_no_secret([webhook.raw, sink.raw, sink.decoded], api_key, _stored_token(engine, "acme"), fernet_key, SMTP_PASSWORD)

    # The company is free again at once, not after the 6-hour staleness rule (the hook fired once).
    again = _run_sync_job(instance, warehouse_url, simulator, "acme")
    assert again.success and _rows(engine)[-1].status == COMPLETED


def test_canceled_run_gets_its_running_row_failed_without_an_alert(
    engine, warehouse_url, simulator, instance, fernet_key, alert_env, webhook, smtp_server, sigint_guard
):
    sink, _ = smtp_server

    def cancel_from_the_ui():
        [run] = instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
        instance.report_run_canceling(run, message="canceled from the UI")
        os.kill(os.getpid(), signal.SIGINT)  # what the run launcher's terminate() sends

    _acme_with_action_on_page_two(engine, simulator, 33, cancel_from_the_ui)
    result = _run_sync_job(instance, warehouse_url, simulator, "acme")
    run = instance.get_run_by_id(result.run_id)
    assert run.status == dg.DagsterRunStatus.CANCELED
    [row] = _rows(engine)
    assert row.status == FAILED and row.error_message.startswith("interrupted")  # the step closed it itself
    with engine.begin() as conn:  # what a worker killed before it could finalize leaves behind
        conn.execute(sync_log.update().where(sync_log.c.id == row.id).values(status=RUNNING, finished_at=None, error_message=None))
    [canceled_event] = [
        r.event_log_entry.dagster_event
        for r in instance.get_records_for_run(result.run_id, of_type=dg.DagsterEventType.RUN_CANCELED).records
    ]

    _evaluate(sync_run_canceled_sensor, SYNC_RUN_CANCELED_SENSOR, instance, result, warehouse_url, canceled_event)

    [row] = _rows(engine)
    assert row.status == FAILED and row.error_message == "the Dagster run was canceled before this sync finished"
    assert webhook.requests == [] and sink.envelopes == []


def test_only_sync_runs_are_handled(instance, warehouse_url):
    @dg.op
    def explode():
        raise RuntimeError("not a sync")

    @dg.job
    def unrelated_job():
        explode()

    result = unrelated_job.execute_in_process(instance=instance, raise_on_error=False)
    assert not is_sync_run(result.dagster_run)
    outcome = _evaluate(sync_run_failure_sensor, SYNC_RUN_FAILURE_SENSOR, instance, result, warehouse_url, result.get_run_failure_event())
    assert isinstance(outcome, dg.SkipReason)
    # The implicit asset job (UI materializations, backfills) counts when it selected a sync asset.
    asset_run = dg.DagsterRun(
        job_name="__ASSET_JOB", run_id="r1", asset_selection=frozenset({dg.AssetKey("billingo_invoices")})
    )
    assert is_sync_run(asset_run)
    assert is_sync_run(dg.DagsterRun(job_name="billingo_sync_job", run_id="r2"))


# --- channels and scrubbing ------------------------------------------------------------------


def _alert(**overrides) -> SyncAlert:
    fields = dict(run_id="6f1c2b8e-1d1a-4c53-9a57-0c4a4b8a1e11", job_name="billingo_sync_job", companies=("acme",), error_message="boom")
    return SyncAlert(**{**fields, **overrides})


def test_channels_are_off_unless_configured_and_half_configuration_is_reported():
    assert AlertChannels.from_env({}).configured == [] and AlertChannels.from_env({}).problems == ()
    channels = AlertChannels.from_env(
        {"BILLINGO_ALERT_SMTP_HOST": "mail.internal", "BILLINGO_ALERT_WEBHOOK_URL": "https://hooks.example/T0/B0/xyz"}
    )
    assert channels.smtp is None and channels.webhook is not None
    assert channels.problems == ("BILLINGO_ALERT_SMTP_HOST is set but BILLINGO_ALERT_SMTP_TO is empty: e-mail alerts are off",)
    assert "xyz" not in repr(channels) and "xyz" not in channels.webhook.display_name
    smtp = AlertChannels.from_env(
        {"BILLINGO_ALERT_SMTP_HOST": "mail.internal", "BILLINGO_ALERT_SMTP_TO": "a@x.hu,b@x.hu", "BILLINGO_ALERT_SMTP_FROM": "d@x.hu", "BILLINGO_ALERT_SMTP_PASSWORD": "pw-123456"}
    )
    assert smtp.smtp is None and "must be set together" in smtp.problems[0]
    full = AlertChannels.from_env(
        {"BILLINGO_ALERT_SMTP_HOST": "mail.internal", "BILLINGO_ALERT_SMTP_TO": "a@x.hu, b@x.hu", "BILLINGO_ALERT_SMTP_FROM": "d@x.hu"}
    ).smtp
    assert (full.port, full.starttls, full.recipients) == (587, True, ("a@x.hu", "b@x.hu"))


def test_send_alert_never_raises_and_reports_each_channel(webhook, caplog):
    closed_port = free_port()  # nothing listens there: connection refused at once
    webhook.statuses = [503, 503]
    channels = AlertChannels(
        webhook=alerts.WebhookChannel(webhook.url),
        smtp=alerts.SmtpChannel(host="127.0.0.1", port=closed_port, sender="d@x.hu", recipients=("a@x.hu",), starttls=False),
        problems=("BILLINGO_ALERT_SMTP_PORT is not a port number: e-mail alerts are off",),
    )
    outcomes = send_alert(_alert(), channels)
    assert [o.delivered for o in outcomes] == [False, False, False]
    assert outcomes[1].detail == "RuntimeError: not delivered (HTTP 503)"
    assert len(webhook.requests) == alerts.WEBHOOK_ATTEMPTS  # retried once, then given up
    assert "ConnectionRefusedError" in outcomes[2].detail
    [refused] = send_alert(_alert(), AlertChannels(webhook=alerts.WebhookChannel(f"http://127.0.0.1:{closed_port}/hook")))
    assert not refused.delivered and refused.detail == "RuntimeError: not delivered (ConnectionError)"
    webhook.statuses = [503]
    [delivered] = send_alert(_alert(), AlertChannels(webhook=alerts.WebhookChannel(webhook.url)))
    assert delivered.delivered and delivered.detail == "HTTP 200"


def test_anything_shaped_like_a_key_is_scrubbed(monkeypatch):
    run_id = "6f1c2b8e-1d1a-4c53-9a57-0c4a4b8a1e11"
    api_key = generate_api_key(77)
    monkeypatch.setenv("BILLINGO_FERNET_KEY", "k" * 43 + "=")
    token = "gAAAAABm" + "x" * 80 + "=="
    text = (
        f"run {run_id}: HTTP 401 for key {api_key}; X-API-KEY: {api_key}; api_key={api_key}; stored {token}; "
        f"postgresql+psycopg://billingo:hunter22@db/warehouse; fernet {'k' * 43}="
    )
    scrubbed = redact_secrets(text, keep=[run_id])
    assert run_id in scrubbed and "HTTP 401" in scrubbed
    for secret in (api_key, token, "hunter22", "k" * 43):
        assert secret not in scrubbed
    assert "postgresql+psycopg://billingo:[REDACTED]@db/warehouse" in scrubbed
    # The payload and the e-mail go through the same scrub, whatever a field holds.
    leaky = _alert(error_message=f"unexpected: {api_key}", sync_log_rows=({"company": "acme", "error_message": token},))
    assert api_key not in json.dumps(leaky.payload()) and token not in json.dumps(leaky.payload())
    assert api_key not in leaky.email("d@x.hu", ["a@x.hu"]).as_string()
    assert run_id in json.dumps(leaky.payload())
