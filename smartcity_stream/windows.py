"""Tumbling event-time windows per sensor, closed by a watermark with allowed lateness.

Each source (a topic-partition) has its own watermark: the largest event time it has carried
minus the allowed lateness. A sensor's readings always come from one partition (the key is
the sensor id), so its windows close by that partition's watermark, and a partition that is
behind never makes another one's events look late. A window closes when its end is at or
before the watermark; an event for a closed window is late: it is still landed (the batch
layer sees it) but no longer changes the window.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class MeasureStats:
    """Count, min, mean and max of one measure, updated one value at a time."""

    count: int = 0
    total: float = 0.0
    low: float = math.inf
    high: float = -math.inf

    def add(self, value: float) -> None:
        self.count += 1
        self.total += value
        self.low = min(self.low, value)
        self.high = max(self.high, value)

    @property
    def mean(self) -> float | None:
        return self.total / self.count if self.count else None


@dataclass
class Window:
    sensor_id: str
    sensor_type: str
    start_ms: int
    end_ms: int
    count: int = 0
    measures: dict[str, MeasureStats] = field(default_factory=dict)

    def add(self, values: dict[str, float | None]) -> None:
        self.count += 1
        for name, value in values.items():
            if value is not None:
                self.measures.setdefault(name, MeasureStats()).add(value)

    def mean(self, measure: str) -> float | None:
        stats = self.measures.get(measure)
        return stats.mean if stats else None

    def as_row(self) -> dict[str, object]:
        row: dict[str, object] = {
            "sensor_id": self.sensor_id,
            "sensor_type": self.sensor_type,
            "window_start_ms": self.start_ms,
            "window_end_ms": self.end_ms,
            "count": self.count,
        }
        for name, stats in self.measures.items():
            row[f"{name}_min"] = stats.low
            row[f"{name}_mean"] = stats.mean
            row[f"{name}_max"] = stats.high
        return row


NO_EVENT_MS = -(2**62)


class TumblingWindows:
    """Open windows per sensor; `add` returns the window an event joined, or None if late."""

    def __init__(self, size_s: float = 60.0, allowed_lateness_s: float = 30.0) -> None:
        self.size_ms = int(size_s * 1000)
        self.lateness_ms = int(allowed_lateness_s * 1000)
        self._max_event_ms: dict[object, int] = {}
        self._open: dict[tuple[str, int], tuple[object, Window]] = {}
        self.late_events = 0

    def watermark_ms(self, source: object) -> int:
        return self._max_event_ms.get(source, NO_EVENT_MS) - self.lateness_ms

    def add(
        self,
        source: object,
        sensor_id: str,
        sensor_type: str,
        event_ms: int,
        values: dict[str, float | None],
    ) -> Window | None:
        start = event_ms - event_ms % self.size_ms
        if start + self.size_ms <= self.watermark_ms(source):
            self.late_events += 1
            return None
        self._max_event_ms[source] = max(self._max_event_ms.get(source, NO_EVENT_MS), event_ms)
        entry = self._open.get((sensor_id, start))
        if entry is None:
            entry = (source, Window(sensor_id, sensor_type, start, start + self.size_ms))
            self._open[(sensor_id, start)] = entry
        entry[1].add(values)
        return entry[1]

    def close_ready(self) -> list[Window]:
        """Remove and return the windows whose end is at or before their source's watermark."""
        ready = [
            key
            for key, (source, window) in self._open.items()
            if window.end_ms <= self.watermark_ms(source)
        ]
        return [self._open.pop(key)[1] for key in ready]

    @property
    def open_count(self) -> int:
        return len(self._open)
