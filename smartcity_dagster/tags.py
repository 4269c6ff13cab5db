"""Run tags the batch layer writes and reads: which date (or range) a run builds, and which
content and attempt of a date the stream-progress sensor requested it for.

A module of plain names, so the CLI can tag a run and the sensors read the tags without
either importing the other.
"""

PARTITION_TAG = "dagster/partition"
RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"
FINGERPRINT_TAG = "smartcity/fingerprint"
ATTEMPT_TAG = "smartcity/attempt"
