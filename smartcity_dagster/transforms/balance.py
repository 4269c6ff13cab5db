"""Shuffle partitions that each get an equal range of sensors.

A hash shuffle by sensor spreads a hundred sensors over two partitions unevenly (a split of
about 55 to 45 is common), and the larger task finishes alone while the other core idles:
about 4 s of a day's clean step. Sensors are numbered densely (see `clean.sensor_keys`), so
equal ranges of numbers carry about equal rows; each range gets a label that Spark's own
partition hash sends to a partition of its own.
"""

from __future__ import annotations

from functools import cache

from pyspark.sql import Column, SparkSession
from pyspark.sql import functions as F

CANDIDATES_PER_PARTITION = 64


@cache
def _labels(spark: SparkSession, partitions: int) -> tuple[int, ...]:
    """For each shuffle partition, an int that Spark's hash partitioning sends there."""
    candidates = spark.range(CANDIDATES_PER_PARTITION * partitions).select(
        F.col("id").cast("int").alias("label")
    )
    found = (
        candidates.groupBy(F.pmod(F.hash("label"), F.lit(partitions)).alias("partition"))
        .agg(F.min("label").alias("label"))
        .collect()
    )
    labels = {row["partition"]: row["label"] for row in found}
    if len(labels) < partitions:
        raise RuntimeError(f"no label hashes into {partitions - len(labels)} of the partitions")
    return tuple(labels[partition] for partition in range(partitions))


def range_label(spark: SparkSession, number: Column, first: int, count: int) -> tuple[Column, int]:
    """A label for each row by its sensor number, to shuffle by, and the number of
    partitions it spreads over: the numbers `first` to `first + count - 1` (the table's own
    sensors) in equal ranges; a number outside them goes with the nearest range, a null
    number gets a null label."""
    partitions = int(spark.conf.get("spark.sql.shuffle.partitions"))
    labels = F.array(*[F.lit(label) for label in _labels(spark, partitions)])
    share = F.floor((number - first) * partitions / max(count, 1))
    position = F.least(F.greatest(share, F.lit(0)), F.lit(partitions - 1)) + 1
    return F.element_at(labels, position.cast("int")), partitions
