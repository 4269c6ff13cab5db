"""Tumbling event-time windows per sensor, closed by a watermark with allowed lateness.

Each source (a topic-partition) has its own watermark: the largest event time it has carried
minus the allowed lateness (each event time only as far as the caller lets it move the
watermark: the worker caps a fast clock's at its broker timestamp). A sensor's readings
always come from one partition (the key is the sensor id), so its windows close by that
partition's watermark, and a partition that is behind never makes another one's events
look late. A window closes when its end is at or before the watermark; an event for a
closed window is late: it is still landed (the batch layer sees it) but no longer changes
the window.

A batch joins its windows at once (`TumblingWindows.add_batch`): lateness from a running maximum
of event times, the (sensor, window) groups with numpy, and each window's running sums
taken reading by reading in the batch's order, so every reading sees its window as it
stood right after it (what the rules compare against), to the bit what adding one reading
at a time gives.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from smartcity_stream.columns import Readings


@dataclass
class MeasureStats:
    """Count, sum, min and max of one measure's values in a window (min and max of the
    type the readings carry)."""

    count: int = 0
    total: float = 0.0
    low: float = math.inf
    high: float = -math.inf

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


@dataclass(frozen=True)
class WindowView:
    """Each reading of a batch in its window: `joined` is False for a late reading (no
    window); the sums are the window's as of that reading, that reading included."""

    measures: tuple[str, ...]
    joined: np.ndarray
    start_ms: np.ndarray
    end_ms: np.ndarray
    totals: np.ndarray
    counts: np.ndarray

    def total(self, measure: str) -> np.ndarray:
        """The window's sum of `measure` so far (0 with no value yet); NaN for a late reading."""
        return self.totals[:, self.measures.index(measure)]

    def mean(self, measure: str) -> np.ndarray:
        """The window's mean of `measure` so far; NaN for a late reading or no value yet."""
        column = self.measures.index(measure)
        counts = self.counts[:, column]
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(counts > 0, self.totals[:, column] / counts, np.nan)


class TumblingWindows:
    """Open windows per sensor; `add_batch` places a batch of one source in them."""

    def __init__(self, size_s: float = 60.0, allowed_lateness_s: float = 30.0) -> None:
        self.size_ms = int(size_s * 1000)
        self.lateness_ms = int(allowed_lateness_s * 1000)
        self._max_event_ms: dict[object, int] = {}
        self._open: dict[tuple[str, int], tuple[object, Window]] = {}
        # Per source, its open windows as a heap of (end, order opened, key): closing looks
        # at the windows that are ready, not at every open one.
        self._ends: dict[object, list[tuple[int, int, tuple[str, int]]]] = {}
        self._opened = 0
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
        """One event: the window it joined, or None if late (a batch of one)."""
        reading = {"sensor_id": sensor_id, **values}
        readings = Readings.from_rows(sensor_type, [reading], [event_ms])
        view = self.add_batch(source, readings, tuple(values))
        return self._open[(sensor_id, int(view.start_ms[0]))][1] if view.joined[0] else None

    def add_batch(
        self,
        source: object,
        readings: Readings,
        measures: tuple[str, ...],
        advance_ms: np.ndarray | None = None,
    ) -> WindowView:
        """Add a batch's readings (offset order) to their windows; late ones join none.

        A reading is late when its window ended at or before the watermark as it stood just
        before the reading: the largest earlier event time of the source minus the lateness.
        `advance_ms` is, per reading, how far it may move the watermark (by default its event
        time; the worker caps it by the broker timestamp: `smartcity_stream.clock_guard`).
        """
        joined, start = self.place(source, readings, advance_ms)
        values = np.column_stack([readings.numbers(name) for name in measures])
        rows = np.flatnonzero(joined)
        totals = np.full(values.shape, np.nan)
        counts = np.zeros(values.shape, dtype=np.int64)
        if len(rows):
            windows, group = self._windows_of(source, readings, start, rows)
            exact = [int if readings.is_integer(name) else float for name in measures]
            totals[rows], counts[rows] = _running_sums(
                windows, group, values[rows], measures, exact
            )
        return WindowView(measures, joined, start, start + self.size_ms, totals, counts)

    def place(
        self, source: object, readings: Readings, advance_ms: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per reading, whether it joins a window and that window's start, moving the
        watermark as `add_batch` does but adding to no window: a finding of the batch
        layer's re-run of the rules reports its window and nothing of the window's sums."""
        event = readings.event_ms
        start = event - event % self.size_ms
        before = self._max_event_ms.get(source, NO_EVENT_MS)
        seen = np.full(readings.size, before, dtype=np.int64)
        if readings.size:
            running = np.maximum.accumulate(event if advance_ms is None else advance_ms)
            np.maximum(seen[1:], running[:-1], out=seen[1:])
            self._max_event_ms[source] = max(before, int(running[-1]))
        joined = start + self.size_ms > seen - self.lateness_ms
        self.late_events += int(readings.size - joined.sum())
        return joined, start

    def _windows_of(
        self, source: object, readings: Readings, start: np.ndarray, rows: np.ndarray
    ) -> tuple[list[Window], np.ndarray]:
        """The open window of each (sensor, start) among `rows` (opened when new, in the
        order of their first reading), and per row the index of its window in that list."""
        first = int(start[rows].min())
        slot = (start[rows] - first) // self.size_ms
        slots = int(slot.max()) + 1
        keys, first_row, group = np.unique(
            readings.sensor[rows] * slots + slot, return_index=True, return_inverse=True
        )
        by_first_row = np.argsort(first_row)  # open new windows in the order readings come
        renumber = np.empty_like(by_first_row)
        renumber[by_first_row] = np.arange(len(keys))
        group = renumber[group]
        windows = []
        for key in keys[by_first_row].tolist():
            sensor, index = divmod(key, slots)
            sensor_id = readings.sensor_ids[sensor]
            window_start = first + index * self.size_ms
            key = (sensor_id, window_start)
            entry = self._open.get(key)
            if entry is None:
                window = Window(
                    sensor_id, readings.sensor_type, window_start, window_start + self.size_ms
                )
                entry = self._open[key] = (source, window)
                self._opened += 1
                heapq.heappush(
                    self._ends.setdefault(source, []), (window.end_ms, self._opened, key)
                )
            windows.append(entry[1])
        return windows, group

    def close_ready(self) -> list[Window]:
        """Remove and return the windows whose end is at or before their source's watermark,
        in the order they opened."""
        ready = []
        for source, ends in self._ends.items():
            watermark = self.watermark_ms(source)
            while ends and ends[0][0] <= watermark:
                ready.append(heapq.heappop(ends))
        ready.sort(key=lambda end: end[1])
        return [self._open.pop(key)[1] for _, _, key in ready]

    @property
    def open_count(self) -> int:
        return len(self._open)

    def export(self, source: object) -> dict[str, Any]:
        """A source's watermark and open windows as JSON values: a checkpoint."""
        return {
            "max_event_ms": self._max_event_ms.get(source),
            "windows": [
                {
                    "sensor_id": w.sensor_id,
                    "sensor_type": w.sensor_type,
                    "start_ms": w.start_ms,
                    "count": w.count,
                    "measures": {
                        name: [m.count, m.total, m.low, m.high] for name, m in w.measures.items()
                    },
                }
                for _, _, key in sorted(self._ends.get(source, []), key=lambda end: end[1])
                for w in [self._open[key][1]]
            ],
        }

    def restore(self, source: object, state: Mapping[str, Any]) -> None:
        """Take back a source's watermark and open windows from `export`."""
        self.forget(source)
        if state["max_event_ms"] is not None:
            self._max_event_ms[source] = state["max_event_ms"]
        for saved in state["windows"]:
            start = saved["start_ms"]
            window = Window(
                saved["sensor_id"],
                saved["sensor_type"],
                start,
                start + self.size_ms,
                saved["count"],
            )
            window.measures = {
                name: MeasureStats(*stats) for name, stats in saved["measures"].items()
            }
            key = (window.sensor_id, start)
            self._open[key] = (source, window)
            self._opened += 1
            heapq.heappush(self._ends.setdefault(source, []), (window.end_ms, self._opened, key))

    def forget(self, source: object) -> None:
        """Drop a source's watermark and open windows (its partition went elsewhere)."""
        self._max_event_ms.pop(source, None)
        for _, _, key in self._ends.pop(source, []):
            self._open.pop(key, None)


def _running_sums(
    windows: list[Window],
    group: np.ndarray,
    values: np.ndarray,
    measures: tuple[str, ...],
    exact: list[type],
) -> tuple[np.ndarray, np.ndarray]:
    """Add rows (offset order, NaN: no value) to their windows; returns per row each
    measure's window sum and count right after that row. `exact` converts a measure's
    min and max back to the type the readings carry (a vehicle count stays an integer).

    Sums run one row at a time in offset order, the k-th rows of all windows together, so
    floating-point totals are exactly those of adding the readings one by one.
    """
    present = ~np.isnan(values)
    addend = np.where(present, values, 0.0)
    by_window = np.argsort(group, kind="stable")
    firsts = np.searchsorted(group[by_window], np.arange(len(windows)))
    rank = np.empty(len(group), dtype=np.int64)  # a row's place among its window's rows
    rank[by_window] = np.arange(len(group)) - firsts[group[by_window]]
    by_rank = np.argsort(rank, kind="stable")
    rank_bounds = np.searchsorted(rank[by_rank], np.arange(int(rank.max()) + 2))
    total = np.array(
        [[w.measures[m].total if m in w.measures else 0.0 for m in measures] for w in windows]
    )
    count = np.array(
        [[w.measures[m].count if m in w.measures else 0 for m in measures] for w in windows],
        dtype=np.int64,
    )
    row_total = np.empty(values.shape)
    row_count = np.empty(values.shape, dtype=np.int64)
    for low, high in zip(rank_bounds[:-1].tolist(), rank_bounds[1:].tolist(), strict=True):
        at = by_rank[low:high]
        window = group[at]
        total[window] += addend[at]
        count[window] += present[at]
        row_total[at] = total[window]
        row_count[at] = count[window]
    grouped = values[by_window]
    first_seen = np.minimum.reduceat(
        np.where(present[by_window], rank[by_window][:, None], len(group)), firsts, axis=0
    )
    _store(
        windows,
        measures,
        exact,
        sizes=np.diff(np.append(firsts, len(group))).tolist(),
        first_seen=first_seen.tolist(),
        count=count.tolist(),
        total=total.tolist(),
        low=np.fmin.reduceat(grouped, firsts, axis=0).tolist(),
        high=np.fmax.reduceat(grouped, firsts, axis=0).tolist(),
    )
    return row_total, row_count


def _store(
    windows: list[Window],
    measures: tuple[str, ...],
    exact: list[type],
    *,
    sizes: list[int],
    first_seen: list[list[int]],
    count: list[list[int]],
    total: list[list[float]],
    low: list[list[float]],
    high: list[list[float]],
) -> None:
    """Each window's new count, sums, min and max (per window, per measure). A measure's
    stats appear in the window in the order its first value came, as one reading at a time
    adds them (the column order of a window's row)."""
    columns = range(len(measures))
    for window, size, seen, counts, totals, lows, highs in zip(
        windows, sizes, first_seen, count, total, low, high, strict=True
    ):
        window.count += size
        for column in sorted(columns, key=seen.__getitem__):
            if seen[column] >= size:
                continue  # no value of this measure in the batch
            stats = window.measures.setdefault(measures[column], MeasureStats())
            stats.count, stats.total = counts[column], totals[column]
            as_read = exact[column]
            stats.low = min(stats.low, as_read(lows[column]))
            stats.high = max(stats.high, as_read(highs[column]))
