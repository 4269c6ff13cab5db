"""landing -> raw: a day's micro-batch files compacted into one table.

The executors read the day's landing files (small segments of the live trickle or big
ones of a catch-up, of one Parquet schema or several) and one task writes them as the
table, in Kafka partition and offset order: large row groups, whatever the segments were.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from smartcity.lake import Lake
from smartcity.layout import landing_dir, landing_offsets
from smartcity_dagster.spark import spark_url
from smartcity_dagster.tables import TableWrite, write_partition
from smartcity_stream.landing import landing_schema

ORDER = ("kafka_partition", "kafka_offset")


@dataclass(frozen=True, order=True)
class LandedFile:
    """One landing file; its name says its Kafka partition and offset range."""

    partition: int
    first: int
    last: int
    key: str


def landed_files(lake: Lake, sensor_type: str, day: str) -> list[LandedFile]:
    """The day's landing files (every hour folder) in Kafka partition and offset order."""
    files = []
    for info in lake.list_files(landing_dir(sensor_type, day)):
        offsets = landing_offsets(info.path)
        if offsets is not None:
            files.append(LandedFile(*offsets, info.path.removeprefix(lake.root + "/")))
    return sorted(files)


def read_landing(spark: Any, lake: Lake, sensor_type: str, files: list[LandedFile]) -> DataFrame:
    """The landed rows of `files`, with the landing schema even when there are none."""
    schema = landing_schema(sensor_type)
    if not files:
        return spark.createDataFrame(schema.empty_table())
    return spark.read.parquet(*(spark_url(lake, f.key) for f in files)).select(*schema.names)


def compact(spark: Any, lake: Lake, sensor_type: str, day: str, asset: str) -> TableWrite:
    """Write the day's raw table in `(kafka_partition, kafka_offset)` order: one task reads
    the files, sorts their rows (offsets are unique per Kafka partition, so a re-run writes
    the same file) and writes them; an exchange would only copy the rows once more."""
    landing = read_landing(spark, lake, sensor_type, landed_files(lake, sensor_type, day))
    return write_partition(landing, lake, asset, day, ORDER, exchange=False)


def partition_ranges(spark: Any, lake: Lake, raw: TableWrite) -> dict[str, dict[str, int]]:
    """Per Kafka partition: first and last offset and rows (the asset's metadata).

    From the footer's statistics when every row group holds one Kafka partition (a day of
    one partition, or row groups that happen to end where one does); otherwise one
    aggregate over the table's two columns on the executors, of which the driver collects
    a row per Kafka partition."""
    ranges = _footer_ranges(raw)
    if ranges is None:
        rows = (
            spark.read.parquet(spark_url(lake, raw.key))
            .groupBy("kafka_partition")
            .agg(
                F.min("kafka_offset").alias("first_offset"),
                F.max("kafka_offset").alias("last_offset"),
                F.count(F.lit(1)).alias("rows"),
            )
            .collect()
        )
        ranges = {row["kafka_partition"]: row.asDict() for row in rows}
    return {
        f"p{partition}": {
            "first_offset": ranges[partition]["first_offset"],
            "last_offset": ranges[partition]["last_offset"],
            "rows": ranges[partition]["rows"],
        }
        for partition in sorted(ranges)
    }


def _footer_ranges(raw: TableWrite) -> dict[int, dict[str, int]] | None:
    footer, ranges = raw.footer, {}
    columns = {footer.schema.column(i).path: i for i in range(footer.num_columns)}
    for index in range(footer.num_row_groups):
        group = footer.row_group(index)
        partition = group.column(columns["kafka_partition"]).statistics
        offsets = group.column(columns["kafka_offset"]).statistics
        if not (partition and offsets and partition.has_min_max and offsets.has_min_max):
            return None
        if partition.min != partition.max:
            return None
        known = ranges.setdefault(
            partition.min, {"first_offset": offsets.min, "last_offset": offsets.max, "rows": 0}
        )
        known["first_offset"] = min(known["first_offset"], offsets.min)
        known["last_offset"] = max(known["last_offset"], offsets.max)
        known["rows"] += group.num_rows
    return ranges
