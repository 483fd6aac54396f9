"""The failed-run alert channels as a resource: the UI lists what is configured, secrets hidden."""

from __future__ import annotations

import os
from collections.abc import Mapping

import dagster as dg
from pydantic import Field

from ..alerts import (
    SMTP_FROM_ENV,
    SMTP_HOST_ENV,
    SMTP_PORT_ENV,
    SMTP_STARTTLS_ENV,
    SMTP_TO_ENV,
    SMTP_USER_ENV,
    WEBHOOK_URL_ENV,
    WEBSERVER_URL_ENV,
    AlertChannels,
)
from ..redaction import SMTP_PASSWORD_ENV

SECRET = {"dagster__is_secret": True}

# Each field and the environment variable it comes from; the values are parsed and validated as
# ``AlertChannels.from_env`` parses the environment, so both say the same about a half-set channel.
FIELD_ENVS = {
    "webhook_url": WEBHOOK_URL_ENV,
    "smtp_host": SMTP_HOST_ENV,
    "smtp_port": SMTP_PORT_ENV,
    "smtp_user": SMTP_USER_ENV,
    "smtp_password": SMTP_PASSWORD_ENV,
    "smtp_from": SMTP_FROM_ENV,
    "smtp_to": SMTP_TO_ENV,
    "smtp_starttls": SMTP_STARTTLS_ENV,
    "webserver_url": WEBSERVER_URL_ENV,
}


class AlertChannelsResource(dg.ConfigurableResource):
    """Where failed sync runs are alerted: a JSON webhook and/or e-mail (both off when unset)."""

    # A Slack-style incoming webhook URL is itself a credential.
    webhook_url: str | None = Field(default=None, description="POST alerts as JSON here", json_schema_extra=SECRET)
    smtp_host: str | None = Field(default=None, description="SMTP server; e-mail alerts are on when set")
    smtp_port: str | None = Field(default=None, description="SMTP port (587)")
    smtp_user: str | None = Field(default=None, description="SMTP login, with smtp_password")
    smtp_password: str | None = Field(default=None, json_schema_extra=SECRET)
    smtp_from: str | None = Field(default=None, description="sender address")
    smtp_to: str | None = Field(default=None, description="recipients, comma-separated")
    smtp_starttls: str | None = Field(default=None, description="STARTTLS unless false/0/no")
    webserver_url: str | None = Field(default=None, description="Dagster UI base URL: alerts link to the run")

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> AlertChannelsResource:
        """Every field set in the environment as a ``dg.EnvVar`` (its value stays out of the run and
        resource config); an unset variable leaves its field unset, i.e. that channel off."""
        environ = os.environ if environ is None else environ
        return cls(**{name: dg.EnvVar(env) for name, env in FIELD_ENVS.items() if environ.get(env)})

    def as_environ(self) -> dict[str, str]:
        return {env: value for name, env in FIELD_ENVS.items() if (value := getattr(self, name)) is not None}

    def channels(self) -> AlertChannels:
        return AlertChannels.from_env(self.as_environ())
