"""raw -> clean: deduplicate by (sensor_id, seq), check the contract, join the registry.

Pure functions of Spark DataFrames so tests call them directly. Every rule that rejects a row
is derived from the contract's JSON Schema, so the batch layer judges a row exactly as the
wire format says; rejected rows are kept with their reason, never dropped silently.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import reduce

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from smartcity.contract import reading_schema

REJECT_REASON = "reject_reason"
REGISTRY_COLUMNS = ("district", "latitude", "longitude")


@dataclass(frozen=True)
class CleanResult:
    clean: DataFrame
    rejects: DataFrame
    duplicates: int


def contract_rules(sensor_type: str) -> list[tuple[str, Column]]:
    """(reason, column that is true when a row breaks it) for each rule of the contract."""
    schema = reading_schema()
    branch = next(
        b["then"]
        for b in schema["allOf"]
        if b["if"]["properties"]["sensor_type"]["const"] == sensor_type
    )
    properties = {**schema["properties"], **branch["properties"]}
    required = set(schema["required"]) | set(branch["required"])
    rules: list[tuple[str, Column]] = []
    for name, spec in properties.items():
        if name in ("schema_version", "event_time"):
            continue
        column = F.col(name)
        kinds = spec.get("type", [])
        nullable = isinstance(kinds, list) and "null" in kinds
        if name in required and not nullable:
            rules.append((f"{name} is missing", column.isNull()))
        if "minimum" in spec:
            rules.append((f"{name} below {spec['minimum']}", column < spec["minimum"]))
        if "maximum" in spec:
            rules.append((f"{name} above {spec['maximum']}", column > spec["maximum"]))
        if "exclusiveMinimum" in spec:
            bound = spec["exclusiveMinimum"]
            rules.append((f"{name} not above {bound}", column <= bound))
        if "enum" in spec and name != "sensor_type":
            rules.append((f"{name} not one of {spec['enum']}", ~column.isin(spec["enum"])))
        if "pattern" in spec:
            rules.append(
                (f"{name} does not match {spec['pattern']}", ~column.rlike(spec["pattern"]))
            )
    return rules


def first_broken_rule(rules: list[tuple[str, Column]]) -> Column:
    """The first rule a row breaks, or null for a valid row."""
    return reduce(
        lambda otherwise, rule: F.when(F.coalesce(rule[1], F.lit(False)), rule[0]).otherwise(
            otherwise
        ),
        reversed(rules),
        F.lit(None).cast("string"),
    )


def clean(raw: DataFrame, registry: DataFrame, sensor_type: str) -> CleanResult:
    """Deduplicate (the lowest offset wins), then split into clean rows and rejects."""
    first = Window.partitionBy("sensor_id", "seq").orderBy("kafka_partition", "kafka_offset")
    ranked = raw.withColumn("_rank", F.row_number().over(first))
    unique = ranked.where(F.col("_rank") == 1).drop("_rank")
    places = F.broadcast(registry.select("sensor_id", *REGISTRY_COLUMNS))
    joined = unique.join(places, "sensor_id", "left")
    rules = [*contract_rules(sensor_type), ("unknown sensor", F.col("district").isNull())]
    judged = joined.withColumn(REJECT_REASON, first_broken_rule(rules)).cache()
    clean_rows = judged.where(F.col(REJECT_REASON).isNull()).drop(REJECT_REASON)
    rejects = judged.where(F.col(REJECT_REASON).isNotNull()).drop(*REGISTRY_COLUMNS)
    duplicates = ranked.where(F.col("_rank") > 1).count()
    return CleanResult(clean_rows.orderBy("sensor_id", "seq"), rejects, duplicates)
