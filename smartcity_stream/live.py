"""Live state for the API: latest reading per sensor, recent anomalies and windows.

Written to `live/<worker>/` as small Parquet objects, each replaced whole, so the API can
answer `latest` queries from the lake without touching Kafka.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from smartcity.lake import Lake
from smartcity.layout import live_key
from smartcity.settings import SENSOR_TYPES
from smartcity_stream.anomalies import anomaly_table
from smartcity_stream.columns import Readings
from smartcity_stream.landing import landing_schema


@cache
def latest_schema() -> pa.Schema:
    """Every reading field of every type (measures of other types are null)."""
    fields: dict[str, pa.Field] = {}
    for sensor_type in SENSOR_TYPES:
        for field in landing_schema(sensor_type):
            fields.setdefault(field.name, field.with_nullable(True))
    return pa.schema(list(fields.values()))


def latest_per_sensor(readings: Readings) -> list[dict[str, Any]]:
    """Each sensor's reading with the highest seq in a batch (the last of equals, as
    `LiveState.update_latest` keeps it), event time in epoch ms."""
    seq = readings.values("seq")
    order = np.lexsort((np.arange(readings.size), seq, readings.sensor))
    ends = np.flatnonzero(np.diff(readings.sensor[order], append=-1))
    return [
        {**readings.rows[row], "event_time": int(readings.event_ms[row])}
        for row in order[ends].tolist()
    ]


class LiveState:
    """What the worker knows now; a `snapshot` of it is what gets written."""

    def __init__(self, worker_id: str, keep_anomalies: int = 2000) -> None:
        self.worker_id = worker_id
        self.latest: dict[str, dict[str, Any]] = {}
        self.anomalies: deque[dict[str, Any]] = deque(maxlen=keep_anomalies)
        self.windows: dict[str, dict[str, Any]] = {}
        self._dirty = False

    def update_latest(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            current = self.latest.get(row["sensor_id"])
            if current is None or row["seq"] >= current["seq"]:
                self.latest[row["sensor_id"]] = row
        self._dirty = self._dirty or bool(rows)

    def add_anomaly(self, anomaly: dict[str, Any]) -> None:
        self.anomalies.append(anomaly)
        self._dirty = True

    def add_window(self, window_row: dict[str, Any]) -> None:
        self.windows[str(window_row["sensor_id"])] = window_row
        self._dirty = True

    def snapshot(self, status: dict[str, Any]) -> LiveSnapshot:
        """The state as of now, copied, so it can be written while the worker goes on; the
        tables only when something changed (the status always: a heartbeat the API judges
        freshness by)."""
        changed, self._dirty = self._dirty, False
        return LiveSnapshot(
            self.worker_id,
            {**status, "written_at": datetime.now(UTC).isoformat(timespec="milliseconds")},
            list(self.latest.values()) if changed else None,
            list(self.anomalies) if changed else None,
            list(self.windows.values()) if changed else None,
        )

    def changed(self) -> None:
        """Write the tables again with the next snapshot (the last write failed)."""
        self._dirty = True


@dataclass(frozen=True)
class LiveSnapshot:
    """The live state of one moment; `latest` is None when the tables did not change."""

    worker_id: str
    status: dict[str, Any]
    latest: list[dict[str, Any]] | None
    anomalies: list[dict[str, Any]] | None
    windows: list[dict[str, Any]] | None

    def write(self, lake: Lake) -> None:
        if self.latest is not None:
            schema = latest_schema()
            latest = pa.Table.from_pylist(
                [{name: row.get(name) for name in schema.names} for row in self.latest],
                schema=schema,
            )
            lake.write_parquet(live_key(self.worker_id, "latest.parquet"), latest)
        if self.anomalies is not None:
            anomalies = anomaly_table(self.anomalies)
            lake.write_parquet(live_key(self.worker_id, "anomalies.parquet"), anomalies)
        if self.windows:
            windows = pa.Table.from_pylist(self.windows)
            lake.write_parquet(live_key(self.worker_id, "windows.parquet"), windows)
        lake.write_bytes(live_key(self.worker_id, "status.json"), orjson.dumps(self.status))
