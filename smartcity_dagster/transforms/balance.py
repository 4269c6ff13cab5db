"""Shuffle partitions that each get an equal range of sensors.

A hash shuffle by sensor spreads a hundred sensors over two partitions unevenly (a split of
about 55 to 45 is common), and the larger task finishes alone while the other core idles:
about 4 s of a day's clean step. Sensors are numbered densely (see `clean.sensor_keys`), so
equal ranges of numbers carry about equal rows; each range gets a label that Spark's own
partition hash sends to a partition of its own.
"""

from __future__ import annotations

from functools import cache
from threading import Lock

from pyspark.sql import Column, SparkSession
from pyspark.sql import functions as F

_SEARCH = Lock()
"""The types' threads of `sensor_tables` clean at once: one of them searches, the others
wait for its labels instead of running the same query."""


def _labels(spark: SparkSession, partitions: int) -> tuple[int, ...]:
    with _SEARCH:
        return _searched_labels(spark, partitions)


@cache
def _searched_labels(spark: SparkSession, partitions: int) -> tuple[int, ...]:
    """For each shuffle partition, an int that Spark's hash partitioning sends there: the
    first ints whose partition, by the SQL `hash` (the Murmur3 with seed 42 that hash
    partitioning applies to its keys), is that one. `test_dagster_quality` holds Spark to
    that: every partition gets its range. The candidates grow until every partition has
    one (about `partitions * ln(partitions)` of them: a cluster's 200 partitions take
    over a thousand)."""
    candidates = 8 * partitions
    while True:
        labels = _first_label_per_partition(spark, candidates, partitions)
        if len(labels) == partitions:
            return tuple(labels[partition] for partition in range(partitions))
        candidates *= 2


def _first_label_per_partition(
    spark: SparkSession, candidates: int, partitions: int
) -> dict[int, int]:
    label = F.col("id").cast("int")
    rows = spark.range(candidates).select(
        label.alias("label"), F.pmod(F.hash(label), F.lit(partitions)).alias("partition")
    )
    labels: dict[int, int] = {}
    for row in rows.collect():
        labels.setdefault(row["partition"], row["label"])
    return labels


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
