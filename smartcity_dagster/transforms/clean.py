"""raw -> clean: deduplicate by (sensor_id, seq), check the contract, join the registry.

Pure functions of Spark DataFrames so tests call them directly. Every rule that rejects a row
is derived from the contract's JSON Schema, so the batch layer judges a row exactly as the
wire format says; rejected rows are kept with their reason, never dropped silently.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa
from pyspark.sql import Column, DataFrame, Observation, SparkSession, Window
from pyspark.sql import functions as F

from smartcity.contract import type_properties
from smartcity_dagster.transforms.balance import range_label

REJECT_REASON = "reject_reason"
REGISTRY_COLUMNS = ("district", "latitude", "longitude")
RANK = "_rank"
SENSOR = "_sensor"
SENSOR_RANGE = "_sensor_range"
UNKNOWN_SENSOR = "_unknown_sensor_id"
SENSOR_STRINGS = ("sensor_id", "sensor_type")
ORDER = ("sensor_id", "seq")
"""The clean table's row order (and its rejects'): a sensor's readings together, in the
order it read them; a key is there once."""
KEPT_ORDER = (SENSOR, "seq")
"""`ORDER` for the kept rows, which carry their sensor's number: it sorts as the id does."""


@dataclass(frozen=True)
class CleanResult:
    """The clean rows of a day, and what Spark observes while they are written.

    `kept` are the clean rows with their sensor's number in place of its strings; the task
    that writes the table sorts them by `KEPT_ORDER` and then makes them `placed` (the
    registry's strings joined back), so the day's rows cross the last exchange and the sort
    as numbers. `counts` (raw rows, duplicates, rejects) is filled by the action that writes
    them; `rejected_rows` is only worth planning and running when it found any.
    """

    kept: DataFrame
    counts: Observation
    placed: Callable[[DataFrame], DataFrame]

    @property
    def clean(self) -> DataFrame:
        """The clean rows as the table holds them, in no particular order."""
        return self.placed(self.kept)


@dataclass(frozen=True)
class Rule:
    """One rule of the contract: the column it reads, why a row breaks it, and the test
    that is true when a row does."""

    column: str
    reason: str
    broken: Column


def contract_rules(sensor_type: str) -> list[Rule]:
    """The contract's rules for one type, in the order the schema gives them."""
    properties, required = type_properties(sensor_type)
    rules: list[Rule] = []
    for name, specs in properties.items():
        if name in ("schema_version", "event_time"):
            continue
        column = F.col(name)
        kinds = next((spec["type"] for spec in specs if "type" in spec), [])
        if name in required and not (isinstance(kinds, list) and "null" in kinds):
            rules.append(Rule(name, f"{name} is missing", column.isNull()))
        if name == "sensor_type":
            rules.append(Rule(name, f"sensor_type is not {sensor_type}", column != sensor_type))
            continue
        for spec in specs:
            rules += _spec_rules(name, spec)
    return rules


def _spec_rules(name: str, spec: dict) -> list[Rule]:
    column, rules = F.col(name), []
    if "minimum" in spec:
        rules.append(Rule(name, f"{name} below {spec['minimum']}", column < spec["minimum"]))
    if "maximum" in spec:
        rules.append(Rule(name, f"{name} above {spec['maximum']}", column > spec["maximum"]))
    if "exclusiveMinimum" in spec:
        bound = spec["exclusiveMinimum"]
        rules.append(Rule(name, f"{name} not above {bound}", column <= bound))
    if "enum" in spec:
        rules.append(Rule(name, f"{name} not one of {spec['enum']}", ~column.isin(spec["enum"])))
    if "pattern" in spec:
        pattern = spec["pattern"]
        rules.append(Rule(name, f"{name} does not match {pattern}", ~column.rlike(pattern)))
    return rules


def first_broken_rule(rules: list[tuple[str, Column]]) -> Column:
    """The first rule a row breaks, or null for a valid row: one CASE with a branch per
    rule (a rule that is null, as comparisons with a missing value are, is not broken)."""
    (reason, broken), *others = rules
    case = F.when(broken, reason)
    for reason, broken in others:
        case = case.when(broken, reason)
    return case


def sensor_keys(spark: SparkSession, registry: pa.Table) -> DataFrame:
    """The registry's places, each sensor numbered in `sensor_id` order (`SENSOR`).

    The day's rows travel through the shuffle, the sort and the windows under this number
    instead of their `sensor_id` and `sensor_type` strings, which every row copy between
    Spark's operators would copy again; the number sorts as the id does, so the output
    order is the same.
    """
    places = registry.select(["sensor_id", *REGISTRY_COLUMNS]).sort_by("sensor_id")
    numbers = pa.array(range(places.num_rows), pa.int32())
    return spark.createDataFrame(places.add_column(0, SENSOR, numbers))


def _numbers_of_type(registry: pa.Table, sensor_type: str) -> tuple[int, int]:
    """The first of the `sensor_keys` numbers of the type's sensors, and how many they
    are (sorted by id, a type's sensors are one run); all of them if the registry does not
    say types."""
    if "sensor_type" not in registry.column_names:
        return 0, registry.num_rows
    types = registry.sort_by("sensor_id").column("sensor_type").to_pylist()
    numbers = [number for number, found in enumerate(types) if found == sensor_type]
    return (numbers[0], len(numbers)) if numbers else (0, registry.num_rows)


def _judged(raw: DataFrame, keys: DataFrame, sensor_type: str) -> DataFrame:
    """`raw` with its sensor's number (null when the registry lacks it) and the first rule
    each row breaks (null for a valid row).

    The rules on `sensor_id` alone (its patterns) are judged once per registry sensor, on
    the broadcast side of the join; only a row of an unknown sensor is matched itself.
    """
    rules = contract_rules(sensor_type)
    flags = {i: f"_breaks_{i}" for i, rule in enumerate(rules) if rule.column == "sensor_id"}
    judged_keys = keys.select(
        "sensor_id", SENSOR, *[rules[i].broken.alias(flag) for i, flag in flags.items()]
    )
    keyed = raw.join(F.broadcast(judged_keys), "sensor_id", "left")
    tests = [
        (rule.reason, F.coalesce(F.col(flags[i]), rule.broken) if i in flags else rule.broken)
        for i, rule in enumerate(rules)
    ]
    tests.append(("unknown sensor", F.col(SENSOR).isNull()))
    return keyed.withColumn(REJECT_REASON, first_broken_rule(tests)).drop(*flags.values())


def _ranked(frame: DataFrame, sensor: list[str]) -> DataFrame:
    first = Window.partitionBy(*sensor, "seq").orderBy("kafka_partition", "kafka_offset")
    return frame.withColumn(RANK, F.row_number().over(first))


def clean(raw: DataFrame, registry: pa.Table, sensor_type: str) -> CleanResult:
    """Deduplicate (the lowest offset wins), then split into clean rows and rejects.

    Rows are judged and numbered by sensor before the one shuffle (by ranges of those
    numbers, see `balance`; besides the exchange to the task that writes the table, see
    `tables.write_partition`, the only exchange of full rows in the batch layer); after it,
    one sort serves the dedup window. The rows keep their number through the exchange to
    the writing task and its sort (`KEPT_ORDER`: integers compare faster than ids that
    share their first eight bytes, which is all of a string's sort prefix); the registry's
    strings are joined there, last (`CleanResult.placed`, a broadcast). The table is
    written in `ORDER`. An unknown sensor keeps its id in
    `UNKNOWN_SENSOR` (null for every known one) so its rows are still deduplicated and
    counted. Rejects are rare, so instead of caching the judged day for a second output,
    `rejected_rows` recomputes them when the first pass saw any.
    """
    spark = raw.sparkSession
    keys = sensor_keys(spark, registry)
    judged = _judged(raw, keys, sensor_type)
    label, partitions = range_label(spark, F.col(SENSOR), *_numbers_of_type(registry, sensor_type))
    sensor = [SENSOR, SENSOR_RANGE, UNKNOWN_SENSOR]
    numbered = judged.select(
        label.alias(SENSOR_RANGE),
        SENSOR,
        F.when(F.col(SENSOR).isNull(), F.col("sensor_id")).alias(UNKNOWN_SENSOR),
        *[name for name in raw.columns if name not in SENSOR_STRINGS],
        REJECT_REASON,
    )
    counts = Observation("clean_counts")
    first_copy, valid = F.col(RANK) == 1, F.col(REJECT_REASON).isNull()
    ranked = _ranked(numbered.repartition(partitions, SENSOR_RANGE), sensor).observe(
        counts,
        F.count(F.lit(1)).alias("rows"),
        F.count_if(~first_copy).alias("duplicates"),
        F.count_if(first_copy & ~valid).alias("rejects"),
    )
    kept = ranked.where(first_copy & valid).select(
        SENSOR, *[name for name in raw.columns if name not in SENSOR_STRINGS]
    )

    def placed(rows: DataFrame) -> DataFrame:
        # A broadcast join keeps the order of the rows it streams: the writing task's sort.
        return rows.join(F.broadcast(keys), SENSOR).select(
            *[
                F.lit(sensor_type).alias(name) if name == "sensor_type" else name
                for name in raw.columns
            ],
            *REGISTRY_COLUMNS,
        )

    return CleanResult(kept, counts, placed)


def rejected_rows(raw: DataFrame, registry: pa.Table, sensor_type: str) -> DataFrame:
    """The first copies of the keys whose first copy breaks a rule, with the rule: from the
    raw copies of those keys (a small semi-join), judged and deduplicated as `clean` does."""
    keys = sensor_keys(raw.sparkSession, registry)
    judged = _judged(raw, keys, sensor_type)
    broken = judged.where(F.col(REJECT_REASON).isNotNull()).select("sensor_id", "seq").distinct()
    copies = _judged(raw.join(broken, ["sensor_id", "seq"], "left_semi"), keys, sensor_type)
    return (
        _ranked(copies, ["sensor_id"])
        .where((F.col(RANK) == 1) & F.col(REJECT_REASON).isNotNull())
        .select(*raw.columns, REJECT_REASON)
    )


def no_rejected_rows(raw: DataFrame) -> DataFrame:
    """An empty rejects table (a day without any), planned without the rules."""
    return raw.limit(0).select(*raw.columns, F.lit(None).cast("string").alias(REJECT_REASON))
