"""Check results kept in the lake: beside the published tables, so the API serves them
without Dagster, and beside each rejected version, so it can be told why it was refused."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import dagster as dg
import orjson

from smartcity.lake import Lake
from smartcity.layout import quality_key, rejected_checks_key


def _plain(value: Any) -> Any:
    return getattr(value, "value", value)


def check_record(asset: str, day: str, results: list[dg.AssetCheckResult]) -> dict[str, Any]:
    blocking = {r.check_name: r.metadata.get("blocking") for r in results}
    return {
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


def record_checks(lake: Lake, asset: str, day: str, results: list[dg.AssetCheckResult]) -> None:
    """The results of the published version of a partition (what the API's /quality serves)."""
    record = check_record(asset, day, results)
    lake.write_bytes(quality_key(asset, day), orjson.dumps(record, default=str))


def record_rejection(
    lake: Lake, asset: str, day: str, version: str, results: list[dg.AssetCheckResult]
) -> None:
    """The results that kept `version` from being published, beside the rejected file."""
    record = {**check_record(asset, day, results), "rejected_version": version}
    lake.write_bytes(rejected_checks_key(asset, day, version), orjson.dumps(record, default=str))
