"""Alerts about failed sync runs: a generic JSON webhook and e-mail (SMTP), both off unless configured.

Configuration comes from the environment of the process that evaluates the sensor (the code
location's server in a deployment), read at every alert so a change needs no code reload:

- ``BILLINGO_ALERT_WEBHOOK_URL``: POST the alert as JSON there. The body carries a ``text`` field
  too, so a Slack/Mattermost/Teams-style incoming webhook shows it as it is.
- ``BILLINGO_ALERT_SMTP_HOST`` (turns e-mail on), ``_PORT`` (587), ``_USER`` + ``_PASSWORD`` (login,
  optional), ``_FROM``, ``_TO`` (comma-separated), ``_STARTTLS`` (true unless ``false``/``0``/``no``).
- ``DAGSTER_WEBSERVER_URL``: base URL of the Dagster UI; the alert then links to the run.

Keys: an alert is built only from key-free fields (run id, job, company slugs, the key-free error
messages the sync writes, sync-log rows without their document payloads). Nothing here can decrypt
anything: the sensor needs no API key. As defence in depth every outgoing string is also scrubbed
of anything shaped like a secret (``redact_secrets``).

``send_alert`` never raises: each channel gets bounded timeouts, and a failure is logged and returned
as an outcome, so a broken mail server cannot stop the sensor from marking sync-log rows FAILED.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import smtplib
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any
from urllib.parse import urlsplit

import dagster as dg
import requests
from sqlalchemy.engine import Engine

from .partitions import PARTITION_TAG, RANGE_END_TAG, RANGE_START_TAG
from .settings import FERNET_KEY_ENV
from .warehouse.sync_log import fail_running_syncs_of_run, sync_rows

logger = logging.getLogger(__name__)

WEBHOOK_URL_ENV = "BILLINGO_ALERT_WEBHOOK_URL"
SMTP_HOST_ENV = "BILLINGO_ALERT_SMTP_HOST"
SMTP_PORT_ENV = "BILLINGO_ALERT_SMTP_PORT"
SMTP_USER_ENV = "BILLINGO_ALERT_SMTP_USER"
SMTP_PASSWORD_ENV = "BILLINGO_ALERT_SMTP_PASSWORD"
SMTP_FROM_ENV = "BILLINGO_ALERT_SMTP_FROM"
SMTP_TO_ENV = "BILLINGO_ALERT_SMTP_TO"
SMTP_STARTTLS_ENV = "BILLINGO_ALERT_SMTP_STARTTLS"
WEBSERVER_URL_ENV = "DAGSTER_WEBSERVER_URL"
# Values that are secrets wherever they appear; their literal values are scrubbed from alerts.
SECRET_ENVS = (FERNET_KEY_ENV, SMTP_PASSWORD_ENV)

DEFAULT_SMTP_PORT = 587
# (connect, read) for the webhook; one timeout for every SMTP socket operation. A sensor evaluation
# has 60 s and handles up to 5 failed runs: an unreachable channel must cost seconds, not minutes.
WEBHOOK_TIMEOUT = (3.0, 10.0)
SMTP_TIMEOUT_SECONDS = 10.0
# One retry for a webhook that refused the connection, answered 5xx or rate-limited: nothing was
# delivered then. A read timeout is not retried: the receiver may have the alert already.
WEBHOOK_ATTEMPTS = 2
WEBHOOK_RETRY_DELAY_SECONDS = 1.0
MAX_ERROR_CHARS = 2000
MAX_ROW_ERROR_CHARS = 500

REDACTED = "[REDACTED]"
# Billingo API keys are UUIDs. Dagster run ids are UUIDs too, so the ids an alert may name are
# passed in as ``keep`` and survive; any other UUID-shaped string is treated as a key.
_UUID = re.compile(r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b")
# A Fernet token (a stored, encrypted API key) always starts with version byte 0x80 -> "gAAAAA".
_FERNET_TOKEN = re.compile(r"gAAAAA[0-9A-Za-z_\-]{20,}={0,2}")
# `X-API-KEY: ...`, `api_key=...`, `"apiKey": "..."`, `Authorization: Bearer ...`.
_KEY_ASSIGNMENT = re.compile(
    r"(?i)(\b(?:x[-_]api[-_]key|api[-_]?key|authorization|password|secret|token)\b[\"']?\s*[:=]\s*[\"']?)"
    r"(?:bearer\s+)?[^\s\"',;}]+"
)
# Credentials inside URLs (a warehouse or SMTP URL in an exception message).
_URL_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://[^/\s:@]+):[^@\s/]+@")


def redact_secrets(text: str, *, keep: Iterable[str] = (), environ: Mapping[str, str] | None = None) -> str:
    """``text`` without anything that looks like an API key, a stored key or another secret.

    ``keep``: UUID-shaped strings that are known not to be keys (the run ids the alert names).
    """
    if not text:
        return text
    environ = os.environ if environ is None else environ
    for name in SECRET_ENVS:
        for value in (v.strip() for v in (environ.get(name) or "").split(",")):
            if len(value) >= 8:
                text = text.replace(value, REDACTED)
    keep_lower = {k.lower() for k in keep}
    text = _URL_CREDENTIALS.sub(rf"\1:{REDACTED}@", text)
    text = _KEY_ASSIGNMENT.sub(rf"\1{REDACTED}", text)
    text = _FERNET_TOKEN.sub(REDACTED, text)
    return _UUID.sub(lambda m: m.group(0) if m.group(0).lower() in keep_lower else REDACTED, text)


def _redact_all(value: Any, keep: Iterable[str]) -> Any:
    if isinstance(value, str):
        return redact_secrets(value, keep=keep)
    if isinstance(value, Mapping):
        return {k: _redact_all(v, keep) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redact_all(v, keep) for v in value]
    return value


# --- configuration ---------------------------------------------------------------------------


class AlertConfigError(ValueError):
    """A channel is half-configured; the message names the variable (never a value)."""


@dataclass(frozen=True)
class WebhookChannel:
    url: str = field(repr=False)  # a Slack-style URL is itself a secret

    @property
    def display_name(self) -> str:
        parts = urlsplit(self.url)
        return f"webhook {parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}"


@dataclass(frozen=True)
class SmtpChannel:
    host: str
    port: int
    sender: str
    recipients: tuple[str, ...]
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    starttls: bool = True

    @property
    def display_name(self) -> str:
        return f"e-mail via {self.host}:{self.port}"


@dataclass(frozen=True)
class AlertChannels:
    webhook: WebhookChannel | None = None
    smtp: SmtpChannel | None = None
    # Half-configured channels: reported as failed deliveries at every alert, not silently dropped.
    problems: tuple[str, ...] = ()

    @property
    def configured(self) -> list[WebhookChannel | SmtpChannel]:
        return [c for c in (self.webhook, self.smtp) if c is not None]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AlertChannels:
        environ = os.environ if environ is None else environ
        problems: list[str] = []
        webhook = None
        if url := (environ.get(WEBHOOK_URL_ENV) or "").strip():
            if urlsplit(url).scheme in ("http", "https") and urlsplit(url).hostname:
                webhook = WebhookChannel(url)
            else:
                problems.append(f"{WEBHOOK_URL_ENV} is not an http(s) URL: webhook alerts are off")
        smtp = None
        if (environ.get(SMTP_HOST_ENV) or "").strip():
            try:
                smtp = _smtp_from_env(environ)
            except AlertConfigError as exc:
                problems.append(f"{exc}: e-mail alerts are off")
        return cls(webhook=webhook, smtp=smtp, problems=tuple(problems))


def _flag(value: str | None, default: bool) -> bool:
    if value is None or not value.strip():
        return default
    return value.strip().lower() not in ("0", "false", "no", "off")


def _smtp_from_env(environ: Mapping[str, str]) -> SmtpChannel:
    port_text = (environ.get(SMTP_PORT_ENV) or "").strip() or str(DEFAULT_SMTP_PORT)
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise AlertConfigError(f"{SMTP_PORT_ENV} is not a port number")
    recipients = tuple(a.strip() for a in (environ.get(SMTP_TO_ENV) or "").split(",") if a.strip())
    if not recipients:
        raise AlertConfigError(f"{SMTP_HOST_ENV} is set but {SMTP_TO_ENV} is empty")
    sender = (environ.get(SMTP_FROM_ENV) or "").strip()
    if not sender:
        raise AlertConfigError(f"{SMTP_HOST_ENV} is set but {SMTP_FROM_ENV} is empty")
    username = (environ.get(SMTP_USER_ENV) or "").strip() or None
    password = environ.get(SMTP_PASSWORD_ENV) or None
    if bool(username) != bool(password):
        raise AlertConfigError(f"{SMTP_USER_ENV} and {SMTP_PASSWORD_ENV} must be set together")
    return SmtpChannel(
        host=environ[SMTP_HOST_ENV].strip(),
        port=int(port_text),
        sender=sender,
        recipients=recipients,
        username=username,
        password=password,
        starttls=_flag(environ.get(SMTP_STARTTLS_ENV), default=True),
    )


# --- the alert -------------------------------------------------------------------------------

# The sync-log columns an alert shows; `errors` (per-document messages) stays in the warehouse.
ROW_FIELDS = (
    "id",
    "company",
    "status",
    "trigger",
    "started_at",
    "finished_at",
    "error_message",
    "invoices_processed",
    "invoices_failed",
    "documents_fetched",
    "api_calls",
)


def _jsonable(value: Any) -> Any:
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    return value


def alert_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """The key-free subset of a ``sync_log`` row (as ``sync_rows`` returns it) an alert carries."""
    out = {name: _jsonable(row.get(name)) for name in ROW_FIELDS if name in row}
    if isinstance(out.get("error_message"), str):
        out["error_message"] = out["error_message"][:MAX_ROW_ERROR_CHARS]
    out["document_errors"] = len(row.get("errors") or [])
    return out


@dataclass(frozen=True)
class SyncAlert:
    run_id: str
    job_name: str
    companies: tuple[str, ...]
    error_message: str
    sync_log_rows: tuple[Mapping[str, Any], ...] = ()
    run_url: str | None = None
    failed_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc))
    rows_marked_failed: int = 0
    # Other run ids the text may name (e.g. "already being synced by run ..."); kept by the scrub.
    known_ids: tuple[str, ...] = ()

    @property
    def subject(self) -> str:
        who = ", ".join(self.companies[:5]) + (f" and {len(self.companies) - 5} more" if len(self.companies) > 5 else "")
        return f"[billingo] sync run failed: {who or 'no company'} (run {self.run_id[:8]})"

    @property
    def text(self) -> str:
        lines = [
            f"Billingo sync run {self.run_id} of job {self.job_name} failed at {self.failed_at:%Y-%m-%d %H:%M:%S} UTC.",
            f"Companies: {', '.join(self.companies) or '-'}",
            f"Error: {self.error_message}",
        ]
        if self.rows_marked_failed:
            lines.append(f"{self.rows_marked_failed} sync-log row(s) left RUNNING by the run were marked FAILED.")
        if self.sync_log_rows:
            lines.append("Sync log:")
            for row in self.sync_log_rows:
                message = f" - {row.get('error_message')}" if row.get("error_message") else ""
                lines.append(f"  #{row.get('id')} {row.get('company')}: {row.get('status')}{message}")
        if self.run_url:
            lines.append(f"Run: {self.run_url}")
        return "\n".join(lines)

    def payload(self) -> dict[str, Any]:
        """The webhook body: structured fields plus ``text`` for chat-style receivers."""
        body = {
            "event": "billingo_sync_run_failed",
            "run_id": self.run_id,
            "job": self.job_name,
            "companies": list(self.companies),
            "error_message": self.error_message,
            "failed_at": self.failed_at.isoformat(),
            "rows_marked_failed": self.rows_marked_failed,
            "sync_log_rows": [dict(r) for r in self.sync_log_rows],
            "run_url": self.run_url,
            "subject": self.subject,
            "text": self.text,
        }
        return _redact_all(body, self._keep)

    @property
    def _keep(self) -> tuple[str, ...]:
        return (self.run_id, *self.known_ids)

    def email(self, sender: str, recipients: Sequence[str]) -> EmailMessage:
        message = EmailMessage()
        message["Subject"] = redact_secrets(self.subject, keep=self._keep)
        message["From"] = sender
        message["To"] = ", ".join(recipients)
        message["Date"] = formatdate(localtime=False)
        message["Message-ID"] = make_msgid(domain="billingo-pipeline")
        message.set_content(redact_secrets(self.text, keep=self._keep))
        return message


def run_url(run_id: str, environ: Mapping[str, str] | None = None) -> str | None:
    base = ((os.environ if environ is None else environ).get(WEBSERVER_URL_ENV) or "").strip().rstrip("/")
    return f"{base}/runs/{run_id}" if base else None


# --- delivery --------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeliveryOutcome:
    channel: str
    delivered: bool
    detail: str = ""


def _send_webhook(alert: SyncAlert, channel: WebhookChannel) -> str:
    body = json.dumps(alert.payload(), ensure_ascii=False).encode("utf-8")
    last = ""
    for attempt in range(1, WEBHOOK_ATTEMPTS + 1):
        try:
            response = requests.post(
                channel.url,
                data=body,
                headers={"Content-Type": "application/json; charset=utf-8", "User-Agent": "billingo-pipeline-alerts"},
                timeout=WEBHOOK_TIMEOUT,
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            # The exception text may hold the URL (a secret for Slack-style hooks): type only.
            last = f"{type(exc).__name__}"
            if not isinstance(exc, requests.ConnectionError):
                break
        else:
            if response.status_code < 300:
                return f"HTTP {response.status_code}"
            last = f"HTTP {response.status_code}"
            if response.status_code < 500 and response.status_code != 429:
                break  # a 4xx will not change on a retry
        if attempt < WEBHOOK_ATTEMPTS:
            time.sleep(WEBHOOK_RETRY_DELAY_SECONDS)
    raise RuntimeError(f"not delivered ({last})")


def _send_email(alert: SyncAlert, channel: SmtpChannel) -> str:
    message = alert.email(channel.sender, channel.recipients)
    with smtplib.SMTP(channel.host, channel.port, timeout=SMTP_TIMEOUT_SECONDS) as smtp:
        smtp.ehlo()
        if channel.starttls:
            smtp.starttls()
            smtp.ehlo()
        if channel.username and channel.password:
            smtp.login(channel.username, channel.password)
        refused = smtp.send_message(message)
    if refused:
        raise RuntimeError(f"refused for {len(refused)} of {len(channel.recipients)} recipient(s)")
    return f"sent to {len(channel.recipients)} recipient(s)"


def send_alert(alert: SyncAlert, channels: AlertChannels, log: logging.Logger | logging.LoggerAdapter | None = None) -> list[DeliveryOutcome]:
    """Deliver ``alert`` on every configured channel; never raises, returns one outcome per channel."""
    log = log or logger
    outcomes = [DeliveryOutcome(channel="configuration", delivered=False, detail=p) for p in channels.problems]
    for channel in channels.configured:
        try:
            detail = _send_webhook(alert, channel) if isinstance(channel, WebhookChannel) else _send_email(alert, channel)
        except Exception as exc:  # noqa: BLE001 - an alert channel must never break the sensor
            detail = redact_secrets(f"{type(exc).__name__}: {exc}", keep=(alert.run_id,))
            log.error(f"alert for run {alert.run_id} not sent by {channel.display_name}: {detail}")
            outcomes.append(DeliveryOutcome(channel.display_name, False, detail))
        else:
            log.info(f"alert for run {alert.run_id} sent by {channel.display_name} ({detail})")
            outcomes.append(DeliveryOutcome(channel.display_name, True, detail))
    for problem in channels.problems:
        log.error(f"alert for run {alert.run_id}: {problem}")
    return outcomes


# --- a failed run: finalize its sync-log rows, then alert ------------------------------------


@dataclass(frozen=True)
class FailedRunReport:
    rows_marked_failed: int
    alert: SyncAlert
    outcomes: list[DeliveryOutcome]


def run_error_message(step_failures: Sequence[Any], run_failure_message: str | None) -> str:
    """What went wrong, from the run's STEP_FAILURE events (a ``dg.Failure``'s description, else
    the error's message) or, when no step reported one (a lost worker, a start timeout), the run
    failure event's own message."""
    messages = []
    for event in step_failures:
        data = getattr(event, "step_failure_data", None)
        if data is None:
            continue
        text = (data.user_failure_data.description if data.user_failure_data else None) or (
            data.error.message.strip() if data.error else ""
        )
        if text and text not in messages:
            messages.append(text)
    message = "; ".join(messages) or (run_failure_message or "").strip() or "the run failed"
    return message[:MAX_ERROR_CHARS]


def run_companies(tags: Mapping[str, str], rows: Sequence[Mapping[str, Any]]) -> tuple[str, ...]:
    """The companies the run was about: those with a sync-log row, else its partition tags."""
    from_rows = [r["company"] for r in sorted(rows, key=lambda r: r.get("id") or 0)]
    if from_rows:
        return tuple(dict.fromkeys(from_rows))
    if PARTITION_TAG in tags:
        return (tags[PARTITION_TAG],)
    if RANGE_START_TAG in tags:
        start, end = tags[RANGE_START_TAG], tags.get(RANGE_END_TAG, tags[RANGE_START_TAG])
        return (start,) if start == end else (f"{start}..{end}",)
    return ()


def _run_ids_named(instance: dg.DagsterInstance | None, texts: Iterable[str], own_run_id: str) -> list[str]:
    candidates = {m.group(0).lower() for text in texts for m in _UUID.finditer(text or "")} - {own_run_id.lower()}
    if instance is None or not candidates:
        return []
    return [r.dagster_run.run_id for r in instance.get_run_records(dg.RunsFilter(run_ids=sorted(candidates)))]


def report_failed_sync_run(
    engine: Engine,
    *,
    run_id: str,
    job_name: str,
    tags: Mapping[str, str],
    error_message: str,
    channels: AlertChannels | None = None,
    instance: dg.DagsterInstance | None = None,
    log: logging.Logger | logging.LoggerAdapter | None = None,
) -> FailedRunReport:
    """Mark the run's RUNNING sync-log rows FAILED, then alert (the rows first: they must not stay
    RUNNING even if every alert channel is down).

    ``instance``: UUIDs in the messages that are runs of this instance (a sync refused because
    "run ... holds the company") are named in the alert; any other UUID is scrubbed as a key.
    """
    log = log or logger
    marked = fail_running_syncs_of_run(engine, run_id, f"the Dagster run failed before this sync finished: {error_message}")
    if marked:
        log.warning(f"run {run_id}: {marked} sync-log row(s) left RUNNING were marked FAILED")
    rows = sync_rows(engine, run_id=run_id, limit=1000)
    alert = SyncAlert(
        run_id=run_id,
        job_name=job_name,
        companies=run_companies(tags, rows),
        error_message=error_message,
        sync_log_rows=tuple(alert_row(r) for r in sorted(rows, key=lambda r: r["id"])),
        run_url=run_url(run_id),
        rows_marked_failed=marked,
        known_ids=tuple(_run_ids_named(instance, [error_message, *(r.get("error_message") or "" for r in rows)], run_id)),
    )
    channels = AlertChannels.from_env() if channels is None else channels
    if not channels.configured and not channels.problems:
        log.info(f"run {run_id}: no alert channel configured ({WEBHOOK_URL_ENV}, {SMTP_HOST_ENV})")
        return FailedRunReport(marked, alert, [])
    return FailedRunReport(marked, alert, send_alert(alert, channels, log))
