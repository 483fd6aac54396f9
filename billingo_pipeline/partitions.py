"""One partition per company (tenant), keyed by the company slug."""

import dagster as dg

COMPANY_PARTITIONS_NAME = "billingo_companies"

company_partitions = dg.DynamicPartitionsDefinition(name=COMPANY_PARTITIONS_NAME)
