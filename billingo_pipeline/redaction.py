"""Scrubbing secrets out of text that leaves the process (alerts, delivery errors).

Anything shaped like a Billingo API key (a UUID), a stored key (a Fernet token), a credential in a
URL or a ``key=value`` assignment is replaced, and so is the literal value of every secret
environment variable (the Fernet key, the SMTP password) wherever it appears.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

from .settings import FERNET_KEY_ENV

SMTP_PASSWORD_ENV = "BILLINGO_ALERT_SMTP_PASSWORD"
# Values that are secrets wherever they appear; their literal values are scrubbed from alerts.
SECRET_ENVS = (FERNET_KEY_ENV, SMTP_PASSWORD_ENV)

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


def redact_all(value: Any, keep: Iterable[str]) -> Any:
    if isinstance(value, str):
        return redact_secrets(value, keep=keep)
    if isinstance(value, Mapping):
        return {k: redact_all(v, keep) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_all(v, keep) for v in value]
    return value


def uuids_in(text: str) -> set[str]:
    """The UUID-shaped strings of ``text``, lower-cased (run ids, or keys)."""
    return {m.group(0).lower() for m in _UUID.finditer(text or "")}
