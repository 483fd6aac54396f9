"""The alert channels and the Fernet key are resources of the code location: set from the
environment, listed in the UI, their secret values never part of what the UI is sent."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
from dagster._core.remote_representation.external_data import RepositorySnap, ResourceConfigEnvVarSnap
from dagster._serdes import serialize_value

import billingo_pipeline.definitions
from billingo_pipeline.credentials import CredentialError, encrypt_api_key, generate_fernet_key
from billingo_pipeline.resources.alerts import FIELD_ENVS
from billingo_pipeline.settings import FERNET_KEY_ENV
from billingo_pipeline.simulator import generate_api_key

WEBHOOK_URL = "https://hooks.example.test/services/T000/B000/webhook-secret-3f9c"
SMTP_PASSWORD = "smtp-secret-pw-91d2"
ALERT_ENV = {
    "BILLINGO_ALERT_WEBHOOK_URL": WEBHOOK_URL,
    "BILLINGO_ALERT_SMTP_HOST": "smtp.example.test",
    "BILLINGO_ALERT_SMTP_PORT": "2525",
    "BILLINGO_ALERT_SMTP_USER": "alerts@example.test",
    "BILLINGO_ALERT_SMTP_PASSWORD": SMTP_PASSWORD,
    "BILLINGO_ALERT_SMTP_FROM": "dagster@example.test",
    "BILLINGO_ALERT_SMTP_TO": "data-team@example.test",
    "DAGSTER_WEBSERVER_URL": "http://dagster.internal:3000",
}
SECRET_FIELDS = {"alerts": {"webhook_url", "smtp_password"}, "fernet": {"fernet_key"}}


def _load_defs() -> dg.Definitions:
    # Loaded again, as a code location (re)load does: the resources read the environment then.
    return dg.load_from_defs_folder(path_within_project=Path(billingo_pipeline.definitions.__file__).parent)


@pytest.fixture
def alert_environment(monkeypatch, fernet_key):
    for env in FIELD_ENVS.values():
        monkeypatch.delenv(env, raising=False)
    for name, value in ALERT_ENV.items():
        monkeypatch.setenv(name, value)
    return fernet_key


def _resource_snaps(defs: dg.Definitions) -> dict:
    return {snap.name: snap for snap in RepositorySnap.from_def(defs.get_repository_def()).resources}


def test_the_ui_sees_the_variables_names_and_never_the_secret_values(alert_environment):
    fernet_key = alert_environment
    defs = _load_defs()
    snaps = _resource_snaps(defs)
    assert {"alerts", "fernet", "billingo", "warehouse"} <= set(snaps)

    for resource, fields in SECRET_FIELDS.items():
        field_snaps = {f.name: f for f in snaps[resource].config_field_snaps}
        for name in fields:
            assert field_snaps[name].is_secret, f"{resource}.{name} is not marked secret"
    assert snaps["fernet"].configured_values["fernet_key"] == ResourceConfigEnvVarSnap(name=FERNET_KEY_ENV)
    alerts = snaps["alerts"].configured_values
    assert alerts["webhook_url"] == ResourceConfigEnvVarSnap(name="BILLINGO_ALERT_WEBHOOK_URL")
    assert alerts["smtp_password"] == ResourceConfigEnvVarSnap(name="BILLINGO_ALERT_SMTP_PASSWORD")
    assert alerts["smtp_host"] == ResourceConfigEnvVarSnap(name="BILLINGO_ALERT_SMTP_HOST")

    # What the code server sends the webserver (and so GraphQL and the UI) about this location.
    sent = serialize_value(RepositorySnap.from_def(defs.get_repository_def()))
    for secret in (fernet_key, WEBHOOK_URL, SMTP_PASSWORD, "webhook-secret-3f9c"):
        assert secret not in sent


def test_the_resources_read_the_environment_the_channels_and_the_key_came_from(alert_environment):
    fernet_key = alert_environment
    defs = _load_defs()
    with dg.build_resources({"alerts": defs.resources["alerts"], "fernet": defs.resources["fernet"]}) as resources:
        channels = resources.alerts.channels()
        assert channels.problems == ()
        assert channels.webhook.url == WEBHOOK_URL
        smtp = channels.smtp
        assert (smtp.host, smtp.port, smtp.username, smtp.password) == ("smtp.example.test", 2525, "alerts@example.test", SMTP_PASSWORD)
        assert smtp.recipients == ("data-team@example.test",) and smtp.starttls
        assert resources.alerts.webserver_url == "http://dagster.internal:3000"

        api_key = generate_api_key(7)
        token = encrypt_api_key(api_key)
        assert resources.fernet.decrypt(token, "acme") == api_key
        assert resources.fernet.fernet_key == fernet_key


def test_unset_variables_leave_the_channels_off_and_the_key_read_when_needed(monkeypatch):
    for env in (*FIELD_ENVS.values(), FERNET_KEY_ENV):
        monkeypatch.delenv(env, raising=False)
    defs = _load_defs()
    with dg.build_resources({"alerts": defs.resources["alerts"], "fernet": defs.resources["fernet"]}) as resources:
        channels = resources.alerts.channels()
        assert channels.configured == [] and channels.problems == ()
        with pytest.raises(CredentialError, match=FERNET_KEY_ENV):
            resources.fernet.fernet()
        # As the CLI does: the key is read from the environment at the moment a key is decrypted.
        key = generate_fernet_key()
        monkeypatch.setenv(FERNET_KEY_ENV, key)
        api_key = generate_api_key(8)
        assert resources.fernet.decrypt(encrypt_api_key(api_key), "acme") == api_key


def test_a_half_configured_channel_is_reported_as_the_environment_would_report_it(monkeypatch):
    for env in FIELD_ENVS.values():
        monkeypatch.delenv(env, raising=False)
    monkeypatch.setenv("BILLINGO_ALERT_SMTP_HOST", "smtp.example.test")
    defs = _load_defs()
    with dg.build_resources({"alerts": defs.resources["alerts"]}) as resources:
        channels = resources.alerts.channels()
    assert channels.smtp is None
    assert channels.problems == ("BILLINGO_ALERT_SMTP_HOST is set but BILLINGO_ALERT_SMTP_TO is empty: e-mail alerts are off",)
