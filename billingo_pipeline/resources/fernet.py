"""The Fernet key(s) that encrypt the companies' API keys, as a resource the UI lists (value hidden)."""

from __future__ import annotations

import dagster as dg
from cryptography.fernet import MultiFernet
from pydantic import Field

from ..credentials import decrypt_api_key, load_fernet
from ..settings import FERNET_KEY_ENV


class FernetKeyResource(dg.ConfigurableResource):
    """Decrypts the stored API keys when a sync calls Billingo.

    ``fernet_key`` unset: ``BILLINGO_FERNET_KEY`` is read from the environment at the moment a key is
    decrypted, as the CLI does; the code location sets it from ``dg.EnvVar``.
    """

    fernet_key: str | None = Field(
        default=None,
        description=f"Fernet key(s), comma-separated, the first one encrypts ({FERNET_KEY_ENV})",
        json_schema_extra={"dagster__is_secret": True},
    )

    def fernet(self) -> MultiFernet:
        return load_fernet({FERNET_KEY_ENV: self.fernet_key} if self.fernet_key else None)

    def decrypt(self, token: str, company_slug: str) -> str:
        """A company's stored key in clear (a company without one fails before any key is read)."""
        return decrypt_api_key(token, company_slug, self.fernet() if token and self.fernet_key else None)
