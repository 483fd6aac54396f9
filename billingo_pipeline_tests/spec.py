"""The published Billingo API v3 OpenAPI spec as a test oracle (openapi-core).

``validate_response`` checks what the simulator answers; ``validate_request`` checks what our
client sends. The spec's server (``https://api.billingo.hu/v3``) is replaced by
``http://127.0.0.1:{port}/v3`` so that a simulator on any port matches.

Validation is stricter than the spec's defaults in one way: properties the spec does not define
are rejected (``additional_properties_default_policy="forbid"``), so a misspelt field name fails.

The spec file comes from ``$BILLINGO_OPENAPI_SPEC`` or ``<repo>/../shared/billingo-api-v3/openapi.yaml``.
A missing spec is an error, not a skip: without it the simulator's conformance is unchecked.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import requests
import yaml
from openapi_core import Config, OpenAPI
from openapi_core.contrib.requests import RequestsOpenAPIRequest, RequestsOpenAPIResponse

SPEC_ENV_VAR = "BILLINGO_OPENAPI_SPEC"
REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SPEC_PATH = REPO_ROOT.parent / "shared" / "billingo-api-v3" / "openapi.yaml"
LOCAL_SERVER = {
    "url": "http://127.0.0.1:{port}/v3",
    "description": "Billingo simulator",
    "variables": {"port": {"default": "8765"}},
}


def spec_path() -> Path:
    path = Path(os.environ.get(SPEC_ENV_VAR) or DEFAULT_SPEC_PATH)
    if not path.is_file():
        raise FileNotFoundError(
            f"Billingo OpenAPI spec not found at {path}. Set {SPEC_ENV_VAR} to the path of the published "
            f"Billingo API v3 openapi.yaml (3.0.14)."
        )
    return path


@functools.lru_cache(maxsize=1)
def spec_dict() -> dict[str, Any]:
    """The parsed spec (servers rewritten). Treat as read-only: it is shared between callers."""
    with spec_path().open(encoding="utf-8") as handle:
        spec = yaml.load(handle, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    spec["servers"] = [LOCAL_SERVER]
    return spec


@functools.lru_cache(maxsize=1)
def openapi() -> OpenAPI:
    """The validated spec as an openapi-core app (parsing and checking takes about half a second)."""
    return OpenAPI.from_dict(spec_dict(), config=Config(additional_properties_default_policy="forbid"))


def schema(name: str) -> dict[str, Any]:
    """``components.schemas[name]``, e.g. ``schema("PaymentStatus")["enum"]``."""
    return spec_dict()["components"]["schemas"][name]


def validate_response(response: requests.Response) -> None:
    """Raise an openapi-core validation error unless ``response`` (status, headers, body) is what
    the spec defines for its request's operation."""
    openapi().validate_response(RequestsOpenAPIRequest(response.request), RequestsOpenAPIResponse(response))


def validate_request(
    method: str,
    url: str,
    headers: Mapping[str, str] | None = None,
    query: Mapping[str, Any] | None = None,
) -> None:
    """Raise an openapi-core validation error unless the request (path, query, ``X-API-KEY``) is
    valid for the spec."""
    prepared = requests.Request(method, url, headers=dict(headers or {}), params=dict(query or {})).prepare()
    openapi().validate_request(RequestsOpenAPIRequest(prepared))
