"""Anomalies as the lake keeps them: one schema for the live state and the landing."""

from __future__ import annotations

from typing import Any

import orjson
import pyarrow as pa

ANOMALY_SCHEMA = pa.schema(
    [
        ("anomaly_id", pa.string()),
        ("sensor_id", pa.string()),
        ("sensor_type", pa.string()),
        ("kind", pa.string()),
        ("severity", pa.string()),
        ("event_time", pa.timestamp("ms", tz="UTC")),
        ("window_start", pa.timestamp("ms", tz="UTC")),
        ("window_end", pa.timestamp("ms", tz="UTC")),
        ("detected_at", pa.timestamp("ms", tz="UTC")),
        ("values", pa.string()),
    ]
)


def anomaly_table(anomalies: list[dict[str, Any]]) -> pa.Table:
    """Anomalies as the worker keeps them (times in epoch ms), values as a JSON string."""
    return pa.Table.from_pylist(
        [{**a, "values": orjson.dumps(a["values"]).decode()} for a in anomalies],
        schema=ANOMALY_SCHEMA,
    )
