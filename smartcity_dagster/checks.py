"""Quality checks of the clean tables: Pandera schemas derived from the contract, and the
counts that prove nothing was lost.

Each check is a pure function returning an `AssetCheckResult`, run inside the asset's step
(the asset declares them as `check_specs`), so a blocking failure stops the partition before
anything downstream reads it.

`contract_schema` judges every row of the written file where the file is: the Pandera
schema (`clean_schema`) says what holds, and each of its checks becomes a Spark expression
that the executors evaluate over the staged file (`_spark_test`), so the driver collects a
count per check and, when a check fails, at most `SAMPLE` failing rows per check; no row
passes through it otherwise, and no executor needs Pandera. Whether a column is there and
of its type is read from the file's schema (its footer). The checks across rows (a
`(sensor_id, seq)` key once, a meter never falling) compare each row with the one before it
in its sensor's `seq` order, a window over the key columns only. The other checks read the
footer's statistics (`table_profile`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache, reduce
from typing import Any

import dagster as dg
import pandas as pd
import pandera.pandas as pa
import pyarrow
from pandera.engines import pandas_engine
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from smartcity.contract import type_properties
from smartcity.lake import Lake
from smartcity_dagster.spark import spark_url
from smartcity_dagster.tables import TableWrite

BLOCKING = ("contract_schema", "no_loss", "matches_landing")
NULL_RATE_LIMIT = 0.05
DUPLICATE_SHARE_LIMIT = 0.05
NULLABLE = {"average_speed_kmh", "interval_s"}
SAMPLE = 10
"""Failing rows (or cells) kept per check for the metadata."""
FALL_TOLERANCE_KWH = 1e-9
UNIQUE_KEY = "unique (sensor_id, seq)"
METER_RISES = "energy_kwh never falls"
METER = "energy_kwh"
ROW = "_row"
"""A row's position in the file (Spark's `_metadata.row_index` of the Parquet source)."""


@dataclass(frozen=True)
class CheckDef:
    name: str
    blocking: bool
    description: str


CLEAN_CHECKS = (
    CheckDef(
        "contract_schema",
        True,
        "Pandera: types and ranges of the contract, unique "
        "(sensor_id, seq), energy meters never fall.",
    ),
    CheckDef("no_loss", True, "raw rows = clean rows + rejects + duplicates removed."),
    CheckDef("null_rates", False, "Null share of every measure below 5%."),
    CheckDef("duplicate_share", False, "Duplicates removed are below 5% of raw rows."),
    CheckDef("freshness", False, "The partition has readings in its last hour."),
)
RAW_CHECKS = (
    CheckDef("matches_landing", True, "raw rows = rows the stream worker recorded as landed."),
    CheckDef(
        "has_readings",
        False,
        "The sensor type has readings on the date; a type without any gets an empty partition.",
    ),
)


def specs(
    asset: str, checks: tuple[CheckDef, ...], partitions_def: dg.PartitionsDefinition | None = None
) -> list[dg.AssetCheckSpec]:
    return [
        dg.AssetCheckSpec(
            c.name,
            asset=asset,
            blocking=c.blocking,
            description=c.description,
            partitions_def=partitions_def,
        )
        for c in checks
    ]


def _result(name: str, passed: bool, **metadata: Any) -> dg.AssetCheckResult:
    blocking = name in BLOCKING
    severity = dg.AssetCheckSeverity.ERROR if blocking else dg.AssetCheckSeverity.WARN
    return dg.AssetCheckResult(
        check_name=name,
        passed=passed,
        severity=severity,
        metadata={"blocking": blocking, **metadata},
    )


STRING = pd.ArrowDtype(pyarrow.string())
DTYPES = {
    "integer": pd.ArrowDtype(pyarrow.int64()),
    "number": pd.ArrowDtype(pyarrow.float64()),
    "string": STRING,
}
"""The contract's JSON types as pandas reads the columns of a Parquet file with Arrow's
types (`pd.ArrowDtype`): what the file's schema is held to."""


@cache
def clean_schema(sensor_type: str) -> pa.DataFrameSchema:
    """The contract's rules for one type's clean table as a Pandera schema: per column its
    type, nullability, ranges, enums and id patterns (the checks across rows, which compare
    a row with another, are `_across_tests`)."""
    properties, required = type_properties(sensor_type)
    id_patterns = [s["pattern"] for s in properties["sensor_id"] if "pattern" in s]
    number = DTYPES["number"]
    columns: dict[str, pa.Column] = {
        "sensor_id": pa.Column(STRING, [pa.Check.str_matches(p) for p in id_patterns]),
        "sensor_type": pa.Column(STRING, pa.Check.isin([sensor_type])),
        "event_time": pa.Column(pd.ArrowDtype(pyarrow.timestamp("ms", "UTC"))),
        "seq": pa.Column(DTYPES["integer"], pa.Check.ge(0)),
        "district": pa.Column(STRING),
        "latitude": pa.Column(number, pa.Check.in_range(-90, 90)),
        "longitude": pa.Column(number, pa.Check.in_range(-180, 180)),
    }
    for name, specs in properties.items():
        if name in columns or name in ("schema_version", "sensor_type"):
            continue
        kind = next((s["type"] for s in specs if "type" in s), "string")
        kind = next(k for k in kind if k != "null") if isinstance(kind, list) else kind
        columns[name] = pa.Column(
            DTYPES[kind],
            [check for spec in specs for check in _spec_checks(spec)],
            nullable=name not in required or name in NULLABLE,
        )
    return pa.DataFrameSchema(columns)


def _spec_checks(spec: dict[str, Any]) -> list[pa.Check]:
    checks = []
    if "minimum" in spec:
        checks.append(pa.Check.ge(spec["minimum"]))
    if "maximum" in spec:
        checks.append(pa.Check.le(spec["maximum"]))
    if "exclusiveMinimum" in spec:
        checks.append(pa.Check.gt(spec["exclusiveMinimum"]))
    if "enum" in spec:
        checks.append(pa.Check.isin(spec["enum"]))
    return checks


def _spark_test(check: pa.Check, value: Column) -> Column:
    """The Spark expression that is true where Pandera's built-in `check` fails a value.
    Pandera ignores missing values in these checks, and so does this (a comparison with a
    null is null, taken as passing)."""
    stats = check.statistics
    if check.name == "greater_than_or_equal_to":
        holds = value >= stats["min_value"]
    elif check.name == "greater_than":
        holds = value > stats["min_value"]
    elif check.name == "less_than_or_equal_to":
        holds = value <= stats["max_value"]
    elif check.name == "less_than":
        holds = value < stats["max_value"]
    elif check.name == "in_range":
        low, high = stats["min_value"], stats["max_value"]
        holds = (value >= low if stats["include_min"] else value > low) & (
            value <= high if stats["include_max"] else value < high
        )
    elif check.name == "isin":
        holds = value.isin(list(stats["allowed_values"]))
    elif check.name == "str_matches":
        # Pandera matches at the start of the string, as Python's `re.match` does.
        holds = value.rlike(f"^(?:{stats['pattern']})")
    else:
        raise ValueError(f"check {check.error}: no Spark expression for it in _spark_test")
    return F.coalesce(~holds, F.lit(False))


@dataclass(frozen=True)
class RowTest:
    """One check on the rows: its name as Pandera reports it, the column it judges ("" for
    a check across rows) and the expression true where a row fails it."""

    check: str
    column: str
    fails: Column


def _column_tests(
    schema: pa.DataFrameSchema, fields: dict[str, pyarrow.Field]
) -> tuple[Counter[str], list[RowTest]]:
    """The failures of whole columns (missing, or of another type: one each, as Pandera
    counts them) read from the file's schema, and the tests of each present column's cells."""
    whole: Counter[str] = Counter()
    tests = []
    for name, column in schema.columns.items():
        if name not in fields:
            whole["column_in_dataframe"] += 1
            continue
        if not column.dtype.check(pandas_engine.Engine.dtype(pd.ArrowDtype(fields[name].type))):
            whole[f"dtype('{column.dtype}')"] += 1
        value = F.col(name)
        if not column.nullable:
            tests.append(RowTest("not_nullable", name, value.isNull()))
        tests += [RowTest(c.error or c.name, name, _spark_test(c, value)) for c in column.checks]
    return whole, tests


def _across_tests(sensor_type: str, fields: dict[str, pyarrow.Field]) -> list[RowTest]:
    """A key seen twice, and a meter below the reading before it, found by comparing each
    row with the one before in its sensor's `(seq, position)` order (Pandera's own
    `unique` would see one frame only)."""
    if not {"sensor_id", "seq"} <= fields.keys():
        return []
    before = Window.partitionBy("sensor_id").orderBy("seq", ROW)
    known = F.col("sensor_id").isNotNull()
    tests = [
        RowTest(
            UNIQUE_KEY,
            "",
            known & F.coalesce(F.lag("seq").over(before) == F.col("seq"), F.lit(False)),
        )
    ]
    if sensor_type == "energy" and METER in fields:
        fall = F.lag(METER).over(before) - F.col(METER) > FALL_TOLERANCE_KWH
        tests.append(RowTest(METER_RISES, "", known & F.coalesce(fall, F.lit(False))))
    return tests


def _flagged(rows: DataFrame, tests: list[RowTest], keys: list[str]) -> list[DataFrame]:
    """The file's rows as their position and a flag per test (`_t<i>`: the row fails test
    `i` of `tests`): one frame for the cell tests, evaluated on the scan (no exchange), and
    one for the tests across rows, whose window moves the key columns alone."""
    cells = [i for i, test in enumerate(tests) if test.column]
    across = [i for i, test in enumerate(tests) if not test.column]
    frames = []
    if cells:
        frames.append(rows.select(ROW, *[tests[i].fails.alias(f"_t{i}") for i in cells]))
    if across:
        keyed = rows.select(ROW, *keys)
        frames.append(keyed.select(ROW, *[tests[i].fails.alias(f"_t{i}") for i in across]))
    return frames


def _tested(frame: DataFrame) -> list[int]:
    return [int(name.removeprefix("_t")) for name in frame.columns if name != ROW]


def contract_schema(
    spark: SparkSession, lake: Lake, write: TableWrite, sensor_type: str
) -> dg.AssetCheckResult:
    """The Pandera schema's checks on every row of the written file `write`, evaluated by
    the executors: failures counted per check, and up to `SAMPLE` failing rows kept per
    check (their positions in the file in `sample_rows`, the rows themselves in `sample`).
    The driver collects a row of counts per job, and the sample only when a check failed."""
    fields = {field.name: field for field in write.schema}
    failures, tests = _column_tests(clean_schema(sensor_type), fields)
    tests += _across_tests(sensor_type, fields)
    url = spark_url(lake, write.key)
    rows = spark.read.parquet(url).select("*", F.col("_metadata.row_index").alias(ROW))
    keys = [name for name in ("sensor_id", "seq", METER) if name in fields]
    frames = _flagged(rows, tests, keys) if write.rows else []
    for frame in frames:
        counts = frame.agg(*[F.count_if(F.col(name)).alias(name) for name in frame.columns[1:]])
        for i, count in zip(_tested(frame), counts.first() or (), strict=True):
            failures[tests[i].check] += count
    failures = +failures
    if not failures:
        return _result("contract_schema", True, rows=write.rows)
    sample = _sample(rows, frames, tests)
    return _result(
        "contract_schema",
        False,
        rows=write.rows,
        failures=sum(failures.values()),
        failures_by_check={str(check): count for check, count in failures.items()},
        sample_rows={
            str(check): [int(i) for i in lines["index"]] for check, lines in sample.groupby("check")
        },
        sample=dg.MetadataValue.md(sample.to_markdown(index=False)),
    )


def _sample(rows: DataFrame, frames: list[DataFrame], tests: list[RowTest]) -> pd.DataFrame:
    """The first `SAMPLE` failing lines of each check in file order (a line: a failing
    cell, or a failing row of a check across rows), beside their rows. Spark limits each
    check's lines per task before the exchange (a window's group limit), so the driver gets
    at most `SAMPLE` per check, then reads those rows alone."""
    names = F.array(*[F.lit(test.check) for test in tests])
    per_frame = [
        frame.select(
            ROW,
            F.explode(
                F.filter(
                    F.array(*[F.when(F.col(f"_t{i}"), F.lit(i)) for i in _tested(frame)]),
                    lambda i: i.isNotNull(),
                )
            ).alias("test"),
        )
        for frame in frames
    ]
    if not per_frame:
        return _lines([])
    lines = (
        reduce(DataFrame.unionAll, per_frame)
        .withColumn("check", F.element_at(names, F.col("test") + 1))
        .withColumn("n", F.row_number().over(Window.partitionBy("check").orderBy(ROW, "test")))
        .where(F.col("n") <= SAMPLE)
        .select(ROW, "test")
        .toArrow()
        .to_pylist()
    )
    positions = sorted({line[ROW] for line in lines})
    failing = rows.where(F.col(ROW).isin(positions)).toArrow().to_pylist()
    by_position = {row.pop(ROW): row for row in failing}
    return _lines(
        [
            {
                "check": tests[line["test"]].check,
                "column": tests[line["test"]].column,
                "failure_case": by_position[line[ROW]].get(tests[line["test"]].column, ""),
                "index": line[ROW],
                **by_position[line[ROW]],
            }
            for line in lines
        ]
    )


def _lines(lines: list[dict[str, Any]]) -> pd.DataFrame:
    """Failing lines (check, column, failure case, position in the file, the row), by check
    and position; none when only whole columns failed."""
    frame = (
        pd.DataFrame(lines, columns=["check", "column", "failure_case", "index"])
        if not lines
        else pd.DataFrame(lines)
    )
    return frame.sort_values(["check", "index"], kind="stable")


def no_loss(
    raw_rows: int, clean_rows: int, reject_rows: int, duplicates: int
) -> dg.AssetCheckResult:
    accounted = clean_rows + reject_rows + duplicates
    return _result(
        "no_loss",
        raw_rows == accounted,
        raw_rows=raw_rows,
        clean_rows=clean_rows,
        reject_rows=reject_rows,
        duplicates=duplicates,
        unaccounted=raw_rows - accounted,
    )


def null_rates(profile: dict[str, Any], columns: list[str]) -> dg.AssetCheckResult:
    rows = profile["rows"]
    rates = {
        column: profile[f"nulls:{column}"] / rows if rows else 0.0
        for column in columns
        if column not in NULLABLE
    }
    worst = max(rates.values(), default=0.0)
    return _result(
        "null_rates",
        worst <= NULL_RATE_LIMIT,
        worst=worst,
        rates={k: round(v, 5) for k, v in rates.items() if v},
    )


def duplicate_share(raw_rows: int, duplicates: int) -> dg.AssetCheckResult:
    share = duplicates / raw_rows if raw_rows else 0.0
    return _result(
        "duplicate_share", share <= DUPLICATE_SHARE_LIMIT, share=share, duplicates=duplicates
    )


def _utc(value: Any) -> Any:
    return value.astimezone(UTC) if isinstance(value, datetime) else value


def freshness(profile: dict[str, Any], day: str) -> dg.AssetCheckResult:
    if not profile["rows"]:
        return _result("freshness", False, reason="no readings")
    latest = pd.Timestamp(_utc(profile["max:event_time"]))
    last_hour = pd.Timestamp(day, tz="UTC") + pd.Timedelta(hours=23)
    return _result("freshness", bool(latest >= last_hour), latest=str(latest))


def matches_landing(raw_rows: int, recorded_rows: int | None) -> dg.AssetCheckResult:
    """Against the worker's progress manifests (None: no manifest knows the date, so there
    is nothing to contradict; `has_readings` says when the date has no readings at all)."""
    if recorded_rows is None:
        return _result("matches_landing", True, raw_rows=raw_rows, recorded="unknown")
    return _result(
        "matches_landing", raw_rows == recorded_rows, raw_rows=raw_rows, recorded_rows=recorded_rows
    )


def has_readings(raw_rows: int, sensor_type: str, day: str) -> dg.AssetCheckResult:
    """A city may lack a sensor type, or a type may be silent for a day: not an error."""
    if raw_rows:
        return _result("has_readings", True, rows=raw_rows)
    return _result("has_readings", False, rows=0, reason=f"no {sensor_type} readings on {day}")
