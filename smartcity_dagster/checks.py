"""Quality checks of the clean tables: Pandera schemas derived from the contract, and the
counts that prove nothing was lost.

Each check is a pure function returning an `AssetCheckResult`, run inside the asset's step
(the asset declares them as `check_specs`), so a blocking failure stops the partition before
anything downstream reads it.

`contract_schema` runs Pandera on every row of the written file: its pandas backend, on
the file streamed a batch at a time into frames over Arrow memory (`transforms/profile.py`),
in the step's own process. Measured against Pandera's PySpark backend on the same day
(docs/batch.md), this was the faster of the two, and it alone reports the failing rows. The
checks across rows (a `(sensor_id, seq)` key once, a meter never falling) are Pandera
checks too, on each row and the key of the row before it, which the batches carry across
their boundaries. The other checks read the footer's statistics (`table_profile`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any

import dagster as dg
import pandas as pd
import pandera.pandas as pa
import pyarrow

from smartcity.contract import type_properties
from smartcity.lake import Lake
from smartcity_dagster.tables import TableWrite
from smartcity_dagster.transforms.profile import BATCH_ROWS, METER, PREVIOUS, row_batches

BLOCKING = ("contract_schema", "no_loss", "matches_landing")
NULL_RATE_LIMIT = 0.05
DUPLICATE_SHARE_LIMIT = 0.05
NULLABLE = {"average_speed_kmh", "interval_s"}
SAMPLE = 10
"""Failing rows (or cells) kept per check for the metadata, over all batches."""
FALL_TOLERANCE_KWH = 1e-9
UNIQUE_KEY = "unique (sensor_id, seq)"
METER_RISES = "energy_kwh never falls"


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
"""The contract's JSON types as the columns `row_batches` yields them."""


@cache
def clean_schema(sensor_type: str) -> pa.DataFrameSchema:
    """The contract's rules for one type's clean table as a Pandera schema: per column its
    type, nullability, ranges, enums and id patterns, and across rows a key once and, for
    meters, a reading never below the one before."""
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
    checks = [pa.Check(_key_changes, name=UNIQUE_KEY, ignore_na=False)]
    if METER in columns:
        checks.append(pa.Check(_meter_holds, name=METER_RISES, ignore_na=False))
    return pa.DataFrameSchema(columns, checks=checks)


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


def _same_sensor(frame: pd.DataFrame) -> pd.Series:
    return frame["sensor_id"].eq(frame[PREVIOUS + "sensor_id"])


def _key_changes(frame: pd.DataFrame) -> pd.Series:
    """Rows come in key order with the key before them (`row_batches`), so a key seen
    twice is a row equal to the one before. Pandera's own `unique` sees one batch only."""
    repeated = _same_sensor(frame) & frame["seq"].eq(frame[PREVIOUS + "seq"])
    return ~repeated.fillna(False)


def _meter_holds(frame: pd.DataFrame) -> pd.Series:
    """In `seq` order, the reading order the contract defines."""
    fall = frame[PREVIOUS + METER] - frame[METER] > FALL_TOLERANCE_KWH
    return ~(_same_sensor(frame) & fall).fillna(False)


def _utc(value: Any) -> Any:
    return value.astimezone(UTC) if isinstance(value, datetime) else value


def _failing(
    schema: pa.DataFrameSchema, frame: pd.DataFrame, whole_columns: bool
) -> pd.DataFrame | None:
    """One line per failing cell (a column's check) or failing row (a check across rows,
    which Pandera lists once per column of the row), with its check. A failure of a whole
    column (missing, of another type) has no row, and is the same in every batch of a file:
    kept only if `whole_columns`."""
    try:
        schema.validate(frame, lazy=True)
    except pa.errors.SchemaErrors as errors:
        cases = errors.failure_cases
    else:
        return None
    if not whole_columns:
        cases = cases[cases["index"].notna()]
        if cases.empty:
            return None
    across = cases["check"].isin([UNIQUE_KEY, METER_RISES])
    lines = cases.assign(
        column=cases["column"].where(~across, ""),
        failure_case=cases["failure_case"].where(~across, ""),
    )
    return lines.drop_duplicates(["check", "column", "index"])[
        ["check", "column", "failure_case", "index"]
    ]


def _with_rows(lines: pd.DataFrame, frame: pd.DataFrame) -> pd.DataFrame:
    """The failing lines beside their rows (none for a failure of the whole column)."""
    rows = frame.reindex(pd.to_numeric(lines["index"], errors="coerce"))
    return pd.concat([lines.reset_index(drop=True), rows.reset_index(drop=True)], axis=1)


def contract_schema(
    write: TableWrite, lake: Lake, sensor_type: str, batch_rows: int = BATCH_ROWS
) -> dg.AssetCheckResult:
    """Pandera on every row of the written file `write`, a batch at a time: failures
    counted per check over all batches, and up to `SAMPLE` failing rows kept per check (their
    positions in the file in `sample_rows`, the rows themselves in `sample`)."""
    schema = clean_schema(sensor_type)
    failures: Counter[str] = Counter()
    samples: list[pd.DataFrame] = []
    rows = batches = 0
    for frame in row_batches(write, lake, sensor_type, batch_rows):
        lines = _failing(schema, frame, whole_columns=not batches)
        rows, batches = rows + len(frame), batches + 1
        if lines is None:
            continue
        room = lines.groupby("check").cumcount() + lines["check"].map(failures) < SAMPLE
        failures.update(lines["check"].value_counts().to_dict())
        samples.append(_with_rows(lines[room], frame))
    if not failures:
        return _result("contract_schema", True, rows=rows, batches=batches)
    sample = pd.concat(samples).sort_values(["check", "index"], kind="stable")
    return _result(
        "contract_schema",
        False,
        rows=rows,
        failures=sum(failures.values()),
        failures_by_check={str(check): count for check, count in failures.items()},
        sample_rows={
            str(check): [int(i) for i in lines["index"].dropna()]
            for check, lines in sample.groupby("check")
        },
        sample=dg.MetadataValue.md(sample.to_markdown(index=False)),
    )


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
