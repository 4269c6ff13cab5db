"""Check results kept in the lake beside the tables, so the API serves them without Dagster."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import dagster as dg
import orjson

from smartcity.lake import Lake
from smartcity.layout import quality_key


def _plain(value: Any) -> Any:
    return getattr(value, "value", value)


def record_checks(lake: Lake, asset: str, day: str, results: list[dg.AssetCheckResult]) -> None:
    blocking = {r.check_name: r.metadata.get("blocking") for r in results}
    record = {
        "asset": asset,
        "partition": day,
        "materialized_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "checks": [
            {
                "name": result.check_name,
                "passed": result.passed,
                "severity": result.severity.value,
                "blocking": bool(_plain(blocking[result.check_name])),
                "metadata": {k: _plain(v) for k, v in result.metadata.items()},
            }
            for result in results
        ],
    }
    lake.write_bytes(quality_key(asset, day), orjson.dumps(record, default=str))
