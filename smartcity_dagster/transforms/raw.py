"""landing -> raw: a day's micro-batch files compacted into one table."""

from __future__ import annotations

from typing import Any

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from smartcity.lake import Lake
from smartcity.layout import landing_dir
from smartcity_dagster.spark import spark_url
from smartcity_stream.landing import landing_schema


def landed_files(lake: Lake, sensor_type: str, day: str) -> list[str]:
    return [
        info.path
        for info in lake.list_files(landing_dir(sensor_type, day))
        if info.path.endswith(".parquet")
    ]


def read_landing(spark: Any, lake: Lake, sensor_type: str, day: str) -> DataFrame:
    """The day's landed rows (every hour folder), with the landing schema even when empty."""
    schema = landing_schema(sensor_type)
    files = landed_files(lake, sensor_type, day)
    if not files:
        return spark.createDataFrame(schema.empty_table())
    paths = [spark_url(lake, path.removeprefix(lake.root + "/")) for path in files]
    return spark.read.parquet(*paths).select(*schema.names)


def compact(landing: DataFrame) -> DataFrame:
    """Offset order within each task's share of the day, without a shuffle: a global sort
    would move every row once more only to order a table nobody reads in offset order
    (`clean` deduplicates by key; the offsets stay in the rows)."""
    return landing.sortWithinPartitions("kafka_partition", "kafka_offset")


def partition_ranges(raw: DataFrame) -> dict[str, dict[str, int]]:
    """Per Kafka partition: first and last offset and rows (the asset's metadata)."""
    rows = (
        raw.groupBy("kafka_partition")
        .agg(
            F.min("kafka_offset").alias("first_offset"),
            F.max("kafka_offset").alias("last_offset"),
            F.count(F.lit(1)).alias("rows"),
        )
        .collect()
    )
    return {
        f"p{row['kafka_partition']}": {
            "first_offset": row["first_offset"],
            "last_offset": row["last_offset"],
            "rows": row["rows"],
        }
        for row in sorted(rows, key=lambda r: r["kafka_partition"])
    }
