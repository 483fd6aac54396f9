"""``GET /document-blocks``: the invoice pads (numbering blocks) documents are issued from
(``billingo_invoices.block_id``). A reference table, read whole every sync."""

from __future__ import annotations

from ..normalize import entity_field as f
from ..warehouse import schema
from ..warehouse.entities import EntityTables
from .entities import EntityEndpoint, entity_mapping

TABLES = EntityTables(schema.billingo_document_blocks_raw, schema.billingo_document_blocks, "block_id")

FIELDS = (
    f("name", "name", "text"),
    f("prefix", "prefix", "text"),
    f("block_type", "type", "text"),
)

RAW_ONLY = {
    "custom_field1": "free-form setting of the block",
    "custom_field2": "free-form setting of the block",
}

DOCUMENT_BLOCKS = EntityEndpoint(
    name="document_blocks",
    entity="document block",
    path="/document-blocks",
    tables=TABLES,
    mapping=entity_mapping(FIELDS, RAW_ONLY, TABLES, entity="document block"),
    description="Document blocks (invoice pads): name, number prefix, type.",
    spec_schema="DocumentBlock",
)
