"""Quality checks of the clean tables: Pandera schemas derived from the contract, and the
counts that prove nothing was lost.

Each check is a pure function returning an `AssetCheckResult`, run inside the asset's step
(the asset declares them as `check_specs`), so a blocking failure stops the partition before
anything downstream reads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

import dagster as dg
import pandas as pd
import pandera.pandas as pa

from smartcity.contract import reading_schema

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


def _branch(sensor_type: str) -> tuple[dict[str, Any], set[str]]:
    schema = reading_schema()
    branch = next(
        b["then"]
        for b in schema["allOf"]
        if b["if"]["properties"]["sensor_type"]["const"] == sensor_type
    )
    return {**schema["properties"], **branch["properties"]}, set(branch["required"])


def _monotonic_meters(frame: pd.DataFrame) -> pd.Series:
    ordered = frame.sort_values(["sensor_id", "event_time", "seq"])
    falling = ordered.groupby("sensor_id")["energy_kwh"].diff() < -1e-9
    return ~falling.reindex(frame.index, fill_value=False)


@cache
def clean_schema(sensor_type: str) -> pa.DataFrameSchema:
    """The contract as a Pandera schema for one type's clean table."""
    properties, required = _branch(sensor_type)
    columns: dict[str, pa.Column] = {
        "sensor_id": pa.Column(str, pa.Check.str_matches(properties["sensor_id"]["pattern"])),
        "sensor_type": pa.Column(str, pa.Check.isin([sensor_type])),
        "event_time": pa.Column("datetime64[ms, UTC]"),
        "seq": pa.Column("int64", pa.Check.ge(0)),
        "district": pa.Column(str),
        "latitude": pa.Column(float, pa.Check.in_range(-90, 90)),
        "longitude": pa.Column(float, pa.Check.in_range(-180, 180)),
    }
    for name, spec in properties.items():
        if name in columns or name in ("schema_version", "sensor_type"):
            continue
        checks = []
        if "minimum" in spec:
            checks.append(pa.Check.ge(spec["minimum"]))
        if "maximum" in spec:
            checks.append(pa.Check.le(spec["maximum"]))
        if "exclusiveMinimum" in spec:
            checks.append(pa.Check.gt(spec["exclusiveMinimum"]))
        if "enum" in spec:
            checks.append(pa.Check.isin(spec["enum"]))
        kind = spec.get("type", "string")
        kind = next(k for k in kind if k != "null") if isinstance(kind, list) else kind
        dtype = {"integer": "int64", "number": float, "string": str}[kind]
        columns[name] = pa.Column(dtype, checks, nullable=name not in required or name in NULLABLE)
    frame_checks = []
    if sensor_type == "energy":
        frame_checks.append(pa.Check(_monotonic_meters, name="energy_kwh never falls"))
    return pa.DataFrameSchema(columns, checks=frame_checks, unique=["sensor_id", "seq"])


def contract_schema(frame: pd.DataFrame, sensor_type: str) -> dg.AssetCheckResult:
    try:
        clean_schema(sensor_type).validate(frame, lazy=True)
    except pa.errors.SchemaErrors as errors:
        cases = errors.failure_cases
        counts = cases.groupby("check").size().sort_values(ascending=False)
        return _result(
            "contract_schema",
            False,
            failures=len(cases),
            failures_by_check={str(k): int(v) for k, v in counts.items()},
            sample=dg.MetadataValue.md(cases.head(SAMPLE).to_markdown(index=False)),
        )
    return _result("contract_schema", True, rows=len(frame))


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


def null_rates(frame: pd.DataFrame) -> dg.AssetCheckResult:
    rates = {
        column: float(frame[column].isna().mean()) if len(frame) else 0.0
        for column in frame.columns
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


def freshness(frame: pd.DataFrame, day: str) -> dg.AssetCheckResult:
    if frame.empty:
        return _result("freshness", False, reason="no readings")
    latest = frame["event_time"].max()
    last_hour = pd.Timestamp(day, tz="UTC") + pd.Timedelta(hours=23)
    return _result("freshness", bool(latest >= last_hour), latest=str(latest))


def matches_landing(raw_rows: int, recorded_rows: int | None) -> dg.AssetCheckResult:
    """Against the worker's progress manifests (None: no manifest knows the date)."""
    if recorded_rows is None:
        return _result("matches_landing", raw_rows > 0, raw_rows=raw_rows, recorded="unknown")
    return _result(
        "matches_landing", raw_rows == recorded_rows, raw_rows=raw_rows, recorded_rows=recorded_rows
    )
