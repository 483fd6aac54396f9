"""Every list endpoint a sync sweeps, in order: documents first (their cursor is the sync's), then
the entity endpoints. Adding an endpoint is its module and a line here."""

from __future__ import annotations

from .bank_accounts import BANK_ACCOUNTS
from .document_blocks import DOCUMENT_BLOCKS
from .documents import DOCUMENTS
from .entities import EntityEndpoint
from .partners import PARTNERS
from .spendings import SPENDINGS

ENTITY_ENDPOINTS: tuple[EntityEndpoint, ...] = (PARTNERS, SPENDINGS, DOCUMENT_BLOCKS, BANK_ACCOUNTS)
SYNC_ENDPOINTS = (DOCUMENTS, *(endpoint.list_endpoint for endpoint in ENTITY_ENDPOINTS))
