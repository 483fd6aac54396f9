"""A local Billingo API v3 simulator: spec-conformant data, paging, rate limits and faults.

Used by the test suite, ``make demo`` and benchmarks, since no machine here reaches the real API.
Run it standalone with ``python -m billingo_pipeline.simulator --help``.
"""

from billingo_pipeline.simulator.data import DocumentFactory, generate_documents
from billingo_pipeline.simulator.server import (
    FAULT_KINDS,
    REMOVE,
    BillingoSimulator,
    Fault,
    FaultKind,
    IncomingRequest,
    Organization,
    RequestRecord,
    generate_api_key,
)

__all__ = [
    "FAULT_KINDS",
    "REMOVE",
    "BillingoSimulator",
    "DocumentFactory",
    "Fault",
    "FaultKind",
    "IncomingRequest",
    "Organization",
    "RequestRecord",
    "generate_api_key",
    "generate_documents",
]
