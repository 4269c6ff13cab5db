"""landing -> raw: a day's micro-batch files compacted into one table.

Large landing files (the worker wrote big segments: a catch-up, a backfill) are already
what a table's row groups should be, so their row groups are copied as they are, in Kafka
partition and offset order, without decoding a value; a day of small segments (the live
trickle) is rewritten by Spark into large row groups instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow.parquet as pq
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from smartcity.lake import Lake
from smartcity.layout import landing_dir, landing_offsets
from smartcity_dagster.spark import spark_url
from smartcity_dagster.tables import TableWrite, copy_partition, write_partition
from smartcity_stream.landing import landing_schema

COPY_MIN_ROWS = 32_768
"""Mean rows per landing file from which its row groups are kept as they are: groups of
this size are many 4,096-row batches of the vectorised reader and compress as well as
larger ones; smaller files are rewritten."""


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


def copies_as_is(lake: Lake, files: list[LandedFile]) -> bool:
    """Whether the files' row groups can be the table's: large enough and of one Parquet
    schema (row groups can only be concatenated into a file of one schema; the footers are
    read with pyarrow, no JVM call per file)."""
    if not files:
        return False
    mean_rows = sum(f.last - f.first + 1 for f in files) / len(files)
    if mean_rows < COPY_MIN_ROWS:
        return False
    schemas = []
    for landed in files:
        with lake.filesystem.open_input_file(lake.path(landed.key)) as source:
            schemas.append(pq.ParquetFile(source).schema)
    return all(schema.equals(schemas[0]) for schema in schemas)


def compact(spark: Any, lake: Lake, sensor_type: str, day: str, asset: str) -> TableWrite:
    """Write the day's raw table: large landing files copied row group by row group in
    offset order; otherwise Spark sorts each task's share by `(kafka_partition,
    kafka_offset)` and writes it, without a shuffle (a global sort would move every row once
    more only to order a table nobody reads in offset order: `clean` deduplicates by key and
    the offsets stay in the rows)."""
    files = landed_files(lake, sensor_type, day)
    if copies_as_is(lake, files):
        return copy_partition(spark, lake, [f.key for f in files], asset, day)
    landing = read_landing(spark, lake, sensor_type, files)
    return write_partition(
        landing.sortWithinPartitions("kafka_partition", "kafka_offset"), lake, asset, day
    )


def partition_ranges(spark: Any, lake: Lake, raw: TableWrite) -> dict[str, dict[str, int]]:
    """Per Kafka partition: first and last offset and rows (the asset's metadata).

    From the footer's statistics when every row group holds one Kafka partition (always so
    for copied landing files); otherwise one aggregate over the table's two columns."""
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
