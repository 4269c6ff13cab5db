"""Anomalies as the lake keeps them: one schema for the live state and the landing.

Spark's executors build this table too (the batch layer re-runs the rules there), so it
takes only the standard library and pyarrow: their Python has neither orjson nor pydantic.
"""

from __future__ import annotations

import json
from typing import Any

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
    """Anomalies as the worker keeps them (times in epoch ms), values as a compact JSON
    string (a handful per anomaly: the encoder's speed does not matter here)."""
    return pa.Table.from_pylist(
        [
            {**a, "values": json.dumps(a["values"], separators=(",", ":"), ensure_ascii=False)}
            for a in anomalies
        ],
        schema=ANOMALY_SCHEMA,
    )
