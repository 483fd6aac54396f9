"""One partition per company (tenant), keyed by the company slug."""

import dagster as dg

COMPANY_PARTITIONS_NAME = "billingo_companies"

company_partitions = dg.DynamicPartitionsDefinition(name=COMPANY_PARTITIONS_NAME)

# Dagster's run tags naming the partitions a run covers: one partition, or a range (the daily
# schedule's chunks, backfills).
PARTITION_TAG = "dagster/partition"
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
