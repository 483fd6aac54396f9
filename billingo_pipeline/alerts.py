"""Alerts about failed sync runs: a generic JSON webhook and e-mail (SMTP), both off unless configured.

Configuration is the ``alerts`` resource (``resources/alerts.py``), whose fields come from these
environment variables of the process that evaluates the sensor (the code location's server in a
deployment):

- ``BILLINGO_ALERT_WEBHOOK_URL``: POST the alert as JSON there. The body carries a ``text`` field
  too, so a Slack/Mattermost/Teams-style incoming webhook shows it as it is.
- ``BILLINGO_ALERT_SMTP_HOST`` (turns e-mail on), ``_PORT`` (587), ``_USER`` + ``_PASSWORD`` (login,
  optional), ``_FROM``, ``_TO`` (comma-separated), ``_STARTTLS`` (true unless ``false``/``0``/``no``).
- ``DAGSTER_WEBSERVER_URL``: base URL of the Dagster UI; the alert then links to the run.

Keys: an alert is built only from key-free fields (run id, job, company slugs, the key-free error
messages the sync writes, sync-log rows without their document payloads). Nothing here can decrypt
anything: the sensor needs no API key. As defence in depth every outgoing string is also scrubbed
of anything shaped like a secret (``redaction.redact_secrets``).

``send_alert`` never raises: each channel gets bounded timeouts, and a failure is logged and returned
as an outcome. The failure sensor marks the run's sync-log rows FAILED before it alerts, so a broken
mail server cannot leave them RUNNING.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import smtplib
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any
from urllib.parse import urlsplit

import requests

from .redaction import SMTP_PASSWORD_ENV, redact_all, redact_secrets

logger = logging.getLogger(__name__)

WEBHOOK_URL_ENV = "BILLINGO_ALERT_WEBHOOK_URL"
SMTP_HOST_ENV = "BILLINGO_ALERT_SMTP_HOST"
SMTP_PORT_ENV = "BILLINGO_ALERT_SMTP_PORT"
SMTP_USER_ENV = "BILLINGO_ALERT_SMTP_USER"
SMTP_FROM_ENV = "BILLINGO_ALERT_SMTP_FROM"
SMTP_TO_ENV = "BILLINGO_ALERT_SMTP_TO"
SMTP_STARTTLS_ENV = "BILLINGO_ALERT_SMTP_STARTTLS"
WEBSERVER_URL_ENV = "DAGSTER_WEBSERVER_URL"

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
        return redact_all(body, self._keep)

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


# --- a failed run's alert ----------------------------------------------------------------------


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


def failed_run_alert(
    *,
    run_id: str,
    job_name: str,
    companies: Sequence[str],
    error_message: str,
    rows: Sequence[Mapping[str, Any]],
    rows_marked_failed: int,
    known_ids: Iterable[str] = (),
    webserver_url: str | None = None,
) -> SyncAlert:
    """The alert about a failed run about ``companies``, from its sync-log rows (``sync_rows`` of
    the run, after the rows it left RUNNING were marked FAILED)."""
    return SyncAlert(
        run_id=run_id,
        job_name=job_name,
        companies=tuple(companies),
        error_message=error_message,
        sync_log_rows=tuple(alert_row(r) for r in sorted(rows, key=lambda r: r["id"])),
        run_url=run_url(run_id, {WEBSERVER_URL_ENV: webserver_url or ""}),
        rows_marked_failed=rows_marked_failed,
        known_ids=tuple(known_ids),
    )


def alert_failed_run(
    alert: SyncAlert, channels: AlertChannels, log: logging.Logger | logging.LoggerAdapter | None = None
) -> list[DeliveryOutcome]:
    """Send ``alert`` on ``channels``; with none configured, say so in the log and send nothing."""
    log = log or logger
    if not channels.configured and not channels.problems:
        log.info(f"run {alert.run_id}: no alert channel configured ({WEBHOOK_URL_ENV}, {SMTP_HOST_ENV})")
        return []
    return send_alert(alert, channels, log)
