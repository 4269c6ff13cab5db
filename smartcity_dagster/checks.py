"""Quality checks of the clean tables: Pandera schemas derived from the contract, and the
counts that prove nothing was lost.

Each check is a pure function returning an `AssetCheckResult`, run inside the asset's step
(the asset declares them as `check_specs`), so a blocking failure stops the partition before
anything downstream reads it.

A day's clean table has up to tens of millions of rows, far too many for pandas; the checks
read a profile of it (`transforms/profile.py`: the written file's footer statistics, the
distinct values of its string columns, sequence counts observed while it was written). The
Pandera schema's column checks (type, range, enum, pattern, nullability) hold for every row exactly
when they hold for a witness frame made of each column's extremes and distinct values (and
a null where the column has one), so Pandera validates that frame; the two checks across
rows (a `(sensor_id, seq)` key once, meters never falling) are Spark's counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any

import dagster as dg
import pandas as pd
import pandera.pandas as pa
import pyarrow

from smartcity.contract import type_properties

BLOCKING = ("contract_schema", "no_loss", "matches_landing")
NULL_RATE_LIMIT = 0.05
DUPLICATE_SHARE_LIMIT = 0.05
NULLABLE = {"average_speed_kmh", "interval_s"}
SAMPLE = 10


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
)


def specs(asset: str, checks: tuple[CheckDef, ...]) -> list[dg.AssetCheckSpec]:
    return [
        dg.AssetCheckSpec(c.name, asset=asset, blocking=c.blocking, description=c.description)
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


SEQUENCE_CHECKS = {
    "duplicate_keys": "unique (sensor_id, seq)",
    "meter_falls": "energy_kwh never falls",
}


@cache
def clean_schema(sensor_type: str) -> pa.DataFrameSchema:
    """The contract's column rules as a Pandera schema for one type's clean table."""
    properties, required = type_properties(sensor_type)
    id_patterns = [s["pattern"] for s in properties["sensor_id"] if "pattern" in s]
    columns: dict[str, pa.Column] = {
        "sensor_id": pa.Column(str, [pa.Check.str_matches(p) for p in id_patterns]),
        "sensor_type": pa.Column(str, pa.Check.isin([sensor_type])),
        "event_time": pa.Column("datetime64[ms, UTC]"),
        "seq": pa.Column("int64", pa.Check.ge(0)),
        "district": pa.Column(str),
        "latitude": pa.Column(float, pa.Check.in_range(-90, 90)),
        "longitude": pa.Column(float, pa.Check.in_range(-180, 180)),
    }
    for name, specs in properties.items():
        if name in columns or name in ("schema_version", "sensor_type"):
            continue
        checks = []
        for spec in specs:
            if "minimum" in spec:
                checks.append(pa.Check.ge(spec["minimum"]))
            if "maximum" in spec:
                checks.append(pa.Check.le(spec["maximum"]))
            if "exclusiveMinimum" in spec:
                checks.append(pa.Check.gt(spec["exclusiveMinimum"]))
            if "enum" in spec:
                checks.append(pa.Check.isin(spec["enum"]))
        kind = next((s["type"] for s in specs if "type" in s), "string")
        kind = next(k for k in kind if k != "null") if isinstance(kind, list) else kind
        dtype = {"integer": "int64", "number": float, "string": str}[kind]
        columns[name] = pa.Column(dtype, checks, nullable=name not in required or name in NULLABLE)
    return pa.DataFrameSchema(columns)


def witness(profile: dict[str, Any], schema: pyarrow.Schema) -> pd.DataFrame:
    """Every column's extremes (numbers, times) or distinct values (strings), and a null if
    it has one, padded with its first value to one length: the rows a column check can fail
    on.

    PySpark hands timestamps over as naive local times; they are made UTC here."""
    if not profile["rows"]:
        return schema.empty_table().to_pandas()
    values: dict[str, list[Any]] = {}
    for name in schema.names:
        found = [
            profile.get(f"min:{name}"),
            profile.get(f"max:{name}"),
            *profile.get(f"values:{name}", []),
        ]
        found = [_utc(v) for v in found if v is not None]
        values[name] = found + [None] * (profile[f"nulls:{name}"] > 0)
    length = max(len(v) for v in values.values())
    padded = {name: v + [v[0]] * (length - len(v)) for name, v in values.items()}
    return pyarrow.table(padded, schema=schema).to_pandas()


def _utc(value: Any) -> Any:
    return value.astimezone(UTC) if isinstance(value, datetime) else value


def _pandera_failures(frame: pd.DataFrame, sensor_type: str) -> pd.DataFrame:
    try:
        clean_schema(sensor_type).validate(frame, lazy=True)
    except pa.errors.SchemaErrors as errors:
        return errors.failure_cases
    return pd.DataFrame()


def contract_schema(
    profile: dict[str, Any], schema: pyarrow.Schema, sensor_type: str
) -> dg.AssetCheckResult:
    """Pandera on the witness of the table, and the sequence counts Spark observed."""
    cases = _pandera_failures(witness(profile, schema), sensor_type)
    failures = (
        {str(k): int(v) for k, v in cases.groupby("check").size().items()} if len(cases) else {}
    )
    samples = {}
    for metric, check in SEQUENCE_CHECKS.items():
        if profile.get(metric):
            failures[check] = int(profile[metric])
            samples[check] = str(profile[f"sample:{metric}"])
    if not failures:
        return _result("contract_schema", True, rows=profile["rows"], witness_rows=len(cases))
    metadata: dict[str, Any] = {
        "failures": sum(failures.values()),
        "failures_by_check": failures,
        "sequence_samples": samples,
    }
    if len(cases):
        metadata["sample"] = dg.MetadataValue.md(cases.head(SAMPLE).to_markdown(index=False))
    return _result("contract_schema", False, **metadata)


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
    """Against the worker's progress manifests (None: no manifest knows the date)."""
    if recorded_rows is None:
        return _result("matches_landing", raw_rows > 0, raw_rows=raw_rows, recorded="unknown")
    return _result(
        "matches_landing", raw_rows == recorded_rows, raw_rows=raw_rows, recorded_rows=recorded_rows
    )
