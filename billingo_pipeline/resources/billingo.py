"""The Billingo resource: per-company clients with the key decrypted only when a sync calls."""

from __future__ import annotations

import logging
from collections.abc import Callable

import dagster as dg
from pydantic import Field

from ..billingo_client import MAX_PER_PAGE, BillingoClient
from ..rate_limit import DEFAULT_REQUESTS_PER_MINUTE, StoppableBudget, limiter_for_key
from ..settings import DEFAULT_API_BASE_URL
from ..warehouse.companies import Company
from .fernet import FernetKeyResource


class BillingoResource(dg.ConfigurableResource):
    """Talks to Billingo API v3 for one company at a time.

    API keys are stored Fernet-encrypted per company in the warehouse and decrypted by the
    ``fernet`` resource (``FernetKeyResource``) only when a client is made; the key is never part
    of this resource's config.
    """

    base_url: str = Field(default=DEFAULT_API_BASE_URL, description="Billingo API v3 base URL")
    page_size: int = Field(default=MAX_PER_PAGE, ge=1, le=MAX_PER_PAGE, description="documents per page (max 100)")
    connect_timeout_seconds: float = Field(default=5.0, gt=0)
    read_timeout_seconds: float = Field(default=60.0, gt=0)
    max_retries: int = Field(default=3, ge=0, description="retries of a GET on 429, 5xx or a broken connection")
    backoff_seconds: float = Field(default=1.0, ge=0, description="first retry delay; doubles each retry")
    max_backoff_seconds: float = Field(default=60.0, ge=0)
    requests_per_minute: int = Field(
        default=DEFAULT_REQUESTS_PER_MINUTE,
        ge=1,
        description="request budget per API key, shared by every company and sync of that key in the process "
                    "(Billingo's X-RateLimit-* headers take precedence when they make sense)",
    )
    max_concurrent_companies: int = Field(
        default=4, ge=1, le=64, description="companies synced at the same time inside one run (a range run)"
    )

    def client_for(
        self,
        company: Company,
        logger: logging.Logger | logging.LoggerAdapter | None = None,
        *,
        should_stop: Callable[[], bool] | None = None,
        fernet: FernetKeyResource | None = None,
    ) -> BillingoClient:
        """A client for the company's key, under that key's shared request budget. ``should_stop``
        (a run being interrupted) makes its next request raise ``rate_limit.SyncStopRequested``.
        ``fernet`` decrypts the company's key (unset: ``BILLINGO_FERNET_KEY`` read now)."""
        api_key = (fernet or FernetKeyResource()).decrypt(company.api_key_encrypted or "", company.slug)
        limiter = limiter_for_key(api_key, self.requests_per_minute)
        return BillingoClient(
            self.base_url,
            api_key,
            company=company.slug,
            page_size=self.page_size,
            connect_timeout=self.connect_timeout_seconds,
            read_timeout=self.read_timeout_seconds,
            max_retries=self.max_retries,
            backoff_seconds=self.backoff_seconds,
            max_backoff_seconds=self.max_backoff_seconds,
            logger=logger,
            rate_limiter=StoppableBudget(limiter, should_stop) if should_stop is not None else limiter,
        )
