"""Real-time anomaly rules: every threshold in one configurable place, one detector per kind.

Rules look at each valid reading together with its sensor's open window as it stood right
after the reading and a little per-sensor memory (previous values, a baseline, a running
z-score), so an anomaly is reported within the batch that carries its first reading rather
than when a window closes. A condition that holds over many readings is one anomaly (an
episode), reported once.

A batch is judged at once: threshold rules as numpy expressions over its columns, the
previous reading of a sensor by a shift within the sensor's rows, runs of identical readings
by a running index. Only the running baselines (recent flow, energy baseline, z-score)
step through a sensor's readings one by one, as plain floats.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from smartcity_stream.columns import Readings
from smartcity_stream.windows import Window, WindowView


@dataclass(frozen=True, kw_only=True)
class RuleConfig:
    """Thresholds of every rule.

    A plain frozen dataclass, not a pydantic model: Spark's executors build these rules for
    the batch layer, and their Python has numpy, pandas and pyarrow but not this project's
    other dependencies. A rules file is validated when it is read, by
    `smartcity_stream.rule_file.load_rules`, where pydantic is at hand.
    """

    # What a validator (pydantic's TypeAdapter) reads: a key that is no threshold is a typo.
    __pydantic_config__: ClassVar[dict[str, str]] = {"extra": "forbid"}

    severe_congestion_speed_kmh: float = 25.0  # window mean speed below
    severe_congestion_levels: tuple[str, ...] = ("high", "severe")
    # and window mean occupancy above (rush hour on a small road is not)
    severe_congestion_occupancy_pct: float = 50.0
    # recent flow above this multiple of the road's capacity (rush hour peaks at about 1.2)
    high_volume_capacity_factor: float = 1.3
    flow_recent_s: float = 120.0  # time constant of the recent flow
    speed_low_kmh: float = 15.0
    speed_high_kmh: float = 120.0
    speed_limit_factor: float = 1.5  # mean speed above this times the limit
    speed_min_vehicles: int = 3  # speeds of fewer vehicles are noise
    speed_low_max_occupancy_pct: float = 15.0  # slow is odd only on a free road
    temperature_min_c: float = -25.0
    temperature_max_c: float = 42.0
    humidity_min_pct: float = 1.0
    temperature_jump_c: float = 8.0  # change between consecutive readings
    energy_spike_factor: float = 2.0  # power above this times the baseline
    energy_baseline_alpha: float = 0.01  # in (0, 1]
    energy_baseline_warmup: int = 30
    voltage_tolerance_pct: float = 10.0
    stuck_for_s: float = 600.0  # identical readings for this long
    stuck_min_readings: int = 5  # and at least this many of them
    zscore_threshold: float = 6.0
    zscore_alpha: float = 0.01  # in (0, 1]
    zscore_warmup: int = 120
    episode_gap_s: float = 120.0  # a quieter gap than this ends an anomaly

    def __post_init__(self) -> None:
        for name in ("energy_baseline_alpha", "zscore_alpha"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"{name} must be above 0 and at most 1")


MAIN_MEASURE = {"traffic": "vehicle_count", "weather": "temperature_c", "energy": "power_kw"}
MEASURES = {
    "traffic": ("vehicle_count", "average_speed_kmh", "occupancy_pct"),
    "weather": ("temperature_c", "humidity_pct", "pressure_hpa", "wind_speed_ms"),
    "energy": ("power_kw", "voltage_v", "current_a"),
}


@dataclass
class Running:
    """An exponentially weighted mean and variance: a baseline that follows the day."""

    alpha: float
    mean: float = 0.0
    variance: float = 0.0
    count: int = 0

    def learn(
        self, values: Iterable[float], reject_above: float | None = None, warmup: int = 0
    ) -> tuple[list[float], list[float], list[int]]:
        """Take `values` in turn; returns per value its z-score against the state before
        it and the mean after it, and the positions of the values rejected: with
        `reject_above`, a value above that multiple of the mean (once `warmup` values are
        learnt) is an outlier and not learnt, so a spike does not raise its own baseline.

        A plain running mean until 1/count falls below alpha: no bias towards the start.
        One tight loop over plain floats, state in locals.
        """
        alpha, mean, variance, count = self.alpha, self.mean, self.variance, self.count
        scores: list[float] = []
        means: list[float] = []
        rejected: list[int] = []
        for position, value in enumerate(values):
            spread = math.sqrt(variance)
            scores.append((value - mean) / spread if spread > 1e-9 else 0.0)
            if (
                reject_above is not None
                and count >= warmup
                and value > reject_above * max(mean, 1e-3)
            ):
                rejected.append(position)
                means.append(mean)
                continue
            count += 1
            rate = max(alpha, 1 / count)
            delta = value - mean
            mean += rate * delta
            variance = (1 - rate) * (variance + rate * delta * delta)
            means.append(mean)
        self.mean, self.variance, self.count = mean, variance, count
        return scores, means, rejected


@dataclass
class SensorMemory:
    """What a sensor's earlier batches leave for the next one."""

    previous: np.ndarray | None = None  # measures of the last reading (NaN: no value)
    same_count: int = 0
    same_since_ms: int = 0
    baseline: Running | None = None
    stats: Running | None = None
    last_hit_ms: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Finding:
    """A rule's verdict on one reading, before episode de-duplication."""

    kind: str
    severity: str
    values: dict[str, Any]


def _severity(ratio: float) -> str:
    return "critical" if ratio >= 1.5 else "warning"


@dataclass(frozen=True)
class _Batch:
    """One batch as the rules see it; `found` collects (row, rule rank, finding)."""

    readings: Readings
    window: WindowView
    memories: list[SensorMemory]
    values: np.ndarray
    previous: np.ndarray
    has_previous: np.ndarray
    found: list[tuple[int, int, Finding]]

    def add(self, rank: int, row: int, finding: Finding) -> None:
        self.found.append((row, rank, finding))


STUCK_RANK, ZSCORE_RANK = 3, 4  # after a type's own rules (ranks 0-2), as a reading lists them


class RuleEngine:
    """Apply the rules to batches of readings; returns each new anomaly episode once."""

    def __init__(self, config: RuleConfig, sensors: Mapping[str, Mapping[str, Any]]) -> None:
        self.config = config
        self.sensors = sensors
        self._memory: dict[str, SensorMemory] = {}

    def evaluate(
        self, reading: Mapping[str, Any], event_ms: int, window: Window | None
    ) -> list[Finding]:
        """One reading and the window it joined (None: late), as a batch of one."""
        readings = Readings.from_rows(reading["sensor_type"], [dict(reading)], [event_ms])
        view = WindowView.of(window, event_ms, MEASURES[reading["sensor_type"]])
        return [finding for _, finding in self.evaluate_batch(readings, view)]

    def evaluate_batch(self, readings: Readings, window: WindowView) -> list[tuple[int, Finding]]:
        """(row, finding) of every new episode, in row order and, per row, rule order."""
        sensor_type = readings.sensor_type
        measures = MEASURES[sensor_type]
        memories = [self._memory.setdefault(s, SensorMemory()) for s in readings.sensor_ids]
        values = np.column_stack([readings.numbers(name) for name in measures])
        missing = np.full(len(measures), np.nan)
        before = np.array([m.previous if m.previous is not None else missing for m in memories])
        known = np.array([m.previous is not None for m in memories])
        groups = readings.groups
        batch = _Batch(
            readings,
            window,
            memories,
            values,
            groups.previous(values, before.reshape(len(memories), len(measures))),
            groups.previous(np.ones(readings.size, dtype=bool), known),
            [],
        )
        getattr(self, f"_{sensor_type}")(batch)
        self._stuck(batch)
        self._zscore(batch)
        for memory, row in zip(memories, groups.last_rows().tolist(), strict=True):
            memory.previous = values[row].copy()
        batch.found.sort(key=lambda item: (item[0], item[1]))
        event_ms = readings.event_ms
        sensor = readings.sensor
        return [
            (row, finding)
            for row, _, finding in batch.found
            if self._new_episode(memories[sensor[row]], finding, int(event_ms[row]))
        ]

    def _new_episode(self, memory: SensorMemory, finding: Finding, event_ms: int) -> bool:
        last = memory.last_hit_ms.get(finding.kind)
        memory.last_hit_ms[finding.kind] = event_ms
        return last is None or event_ms - last > self.config.episode_gap_s * 1000

    def _per_sensor(self, readings: Readings, key: str, default: float) -> np.ndarray:
        """A registry attribute of each row's sensor (`default` where the registry has none)."""
        known = [self.sensors.get(s, {}).get(key) or default for s in readings.sensor_ids]
        return np.array(known, dtype=np.float64)[readings.sensor]

    def _traffic(self, batch: _Batch) -> None:
        c = self.config
        readings, window = batch.readings, batch.window
        level = readings.values("congestion_level")
        mean_speed = np.where(
            window.joined,
            window.mean("average_speed_kmh"),
            readings.numbers("average_speed_kmh"),
        )
        occupancy = np.where(
            window.joined, window.mean("occupancy_pct"), readings.numbers("occupancy_pct")
        )
        with np.errstate(invalid="ignore"):
            slow = mean_speed < c.severe_congestion_speed_kmh
        severe = (
            np.isin(level, c.severe_congestion_levels)
            & slow
            & (np.nan_to_num(occupancy, nan=0.0) >= c.severe_congestion_occupancy_pct)
        )
        for row in np.flatnonzero(severe).tolist():
            speed = float(mean_speed[row])
            ratio = c.severe_congestion_speed_kmh / max(speed, 1.0)
            values = {"congestion_level": level[row], "window_mean_speed_kmh": speed}
            batch.add(0, row, Finding("severe_congestion", _severity(ratio), values))
        self._high_volume(batch, flowing=~slow)
        limit = self._per_sensor(readings, "speed_limit_kmh", c.speed_high_kmh)
        too_fast = np.minimum(c.speed_high_kmh, c.speed_limit_factor * limit)
        vehicles = np.where(
            window.joined, window.total("vehicle_count"), readings.numbers("vehicle_count")
        )
        with np.errstate(invalid="ignore"):
            odd = (mean_speed > too_fast) | ((mean_speed < c.speed_low_kmh) & (level == "low"))
        for row in np.flatnonzero(odd & (vehicles >= c.speed_min_vehicles)).tolist():
            speed, threshold = float(mean_speed[row]), float(too_fast[row])
            ratio = speed / threshold if speed > threshold else c.speed_low_kmh / max(speed, 1.0)
            values = {"window_mean_speed_kmh": speed, "threshold_kmh": round(threshold, 1)}
            batch.add(2, row, Finding("speed_anomaly", _severity(ratio), values))

    def _high_volume(self, batch: _Batch, flowing: np.ndarray) -> None:
        """Recent flow (an average over minutes, not one noisy interval) against capacity;
        learnt from the readings of a flowing road only."""
        c = self.config
        readings = batch.readings
        count = readings.numbers("vehicle_count")
        interval = readings.numbers("interval_s")
        interval = np.where(np.isnan(interval) | (interval == 0), 1.0, interval)
        rows, per_sensor = readings.groups.lists(count, where=flowing)
        means: list[float] = []
        learnt: list[int] = []
        first_interval = interval[rows].tolist()
        for memory, counts in zip(batch.memories, per_sensor, strict=True):
            if not counts:
                continue
            alpha = 1 - math.exp(-first_interval[len(means)] / c.flow_recent_s)
            recent = memory.baseline = memory.baseline or Running(alpha)
            learnt += range(recent.count + 1, recent.count + 1 + len(counts))
            means += recent.learn(counts)[1]
        intervals = interval[rows]
        flow = np.array(means, dtype=np.float64) * 3600 / intervals
        limit = c.high_volume_capacity_factor * self._per_sensor(readings, "capacity_vph", 0.0)
        high = (
            (np.array(learnt, dtype=np.int64) * intervals >= c.flow_recent_s)
            & (limit[rows] > 0)
            & (flow > limit[rows])
        )
        for at in np.flatnonzero(high).tolist():
            row_flow, row_limit = float(flow[at]), float(limit[rows[at]])
            values = {"recent_flow_vph": round(row_flow), "threshold_vph": round(row_limit)}
            finding = Finding("high_volume", _severity(row_flow / row_limit), values)
            batch.add(1, int(rows[at]), finding)

    def _weather(self, batch: _Batch) -> None:
        c = self.config
        rows = batch.readings.rows
        temperature = batch.readings.numbers("temperature_c")
        outside = ~((c.temperature_min_c <= temperature) & (temperature <= c.temperature_max_c))
        span = c.temperature_max_c - c.temperature_min_c
        for row in np.flatnonzero(outside).tolist():
            value = rows[row]["temperature_c"]
            beyond = max(c.temperature_min_c - value, value - c.temperature_max_c)
            severity = _severity(1 + 10 * beyond / span)
            batch.add(
                0, row, Finding("temperature_out_of_range", severity, {"temperature_c": value})
            )
        previous = batch.previous[:, MEASURES["weather"].index("temperature_c")]
        with np.errstate(invalid="ignore"):
            jumped = batch.has_previous & (np.abs(temperature - previous) > c.temperature_jump_c)
        for row in np.flatnonzero(jumped).tolist():
            values = {
                "temperature_c": rows[row]["temperature_c"],
                "previous_c": float(previous[row]),
            }
            batch.add(1, row, Finding("temperature_jump", "warning", values))
        dry = batch.readings.numbers("humidity_pct") < c.humidity_min_pct
        for row in np.flatnonzero(dry).tolist():
            values = {"humidity_pct": rows[row]["humidity_pct"]}
            batch.add(2, row, Finding("humidity_out_of_range", "warning", values))

    def _energy(self, batch: _Batch) -> None:
        c = self.config
        readings = batch.readings
        rows, per_sensor = readings.groups.lists(readings.numbers("power_kw"))
        done = 0
        for memory, powers in zip(batch.memories, per_sensor, strict=True):
            baseline = memory.baseline = memory.baseline or Running(c.energy_baseline_alpha)
            _, means, spikes = baseline.learn(
                powers, c.energy_spike_factor, c.energy_baseline_warmup
            )
            for at in spikes:
                row, reference = int(rows[done + at]), max(means[at], 1e-3)
                power = readings.rows[row]["power_kw"]
                values = {"power_kw": power, "baseline_kw": round(means[at], 3)}
                ratio = power / reference / c.energy_spike_factor
                batch.add(0, row, Finding("energy_spike", _severity(ratio), values))
            done += len(powers)
        nominal = self._per_sensor(readings, "nominal_voltage_v", 230.0)
        deviation = np.abs(readings.numbers("voltage_v") - nominal) / nominal * 100
        for row in np.flatnonzero(deviation > c.voltage_tolerance_pct).tolist():
            values = {
                "voltage_v": readings.rows[row]["voltage_v"],
                "nominal_v": float(nominal[row]),
            }
            severity = _severity(float(deviation[row]) / c.voltage_tolerance_pct)
            batch.add(1, row, Finding("voltage_out_of_tolerance", severity, values))

    def _stuck(self, batch: _Batch) -> None:
        """Runs of identical readings per sensor, carried over from the previous batch."""
        c = self.config
        readings, groups = batch.readings, batch.readings.groups
        values, previous = batch.values, batch.previous
        same = batch.has_previous & np.all(
            (values == previous) | (np.isnan(values) & np.isnan(previous)), axis=1
        )
        event_ms = readings.event_ms
        ordered_same = same[groups.order]
        anchor = ~ordered_same | groups.first
        position = np.arange(readings.size)
        last_anchor = np.maximum.accumulate(np.where(anchor, position, 0))
        carried = np.array([m.same_count for m in batch.memories], dtype=np.int64)
        carried_since = np.array([m.same_since_ms for m in batch.memories], dtype=np.int64)
        rows_in_order = groups.order
        sensor_in_order = groups.sorted_sensor
        anchor_count = np.where(ordered_same, carried[sensor_in_order] + 1, 0)
        anchor_since = np.where(
            ordered_same, carried_since[sensor_in_order], event_ms[rows_in_order]
        )
        count_in_order = anchor_count[last_anchor] + position - last_anchor
        since_in_order = anchor_since[last_anchor]
        same_count = np.empty_like(count_in_order)
        same_count[rows_in_order] = count_in_order
        same_since = np.empty_like(since_in_order)
        same_since[rows_in_order] = since_in_order
        stuck_ms = event_ms - same_since
        nonzero = np.any(np.nan_to_num(values, nan=0.0) != 0, axis=1)
        stuck = (
            (same_count + 1 >= c.stuck_min_readings) & (stuck_ms >= c.stuck_for_s * 1000) & nonzero
        )
        fields = MEASURES[readings.sensor_type]
        for row in np.flatnonzero(stuck).tolist():
            reading = readings.rows[row]
            values_by_name = {name: reading[name] for name in fields}
            finding_values = {
                "value": values_by_name,
                "readings": int(same_count[row]) + 1,
                "for_s": int(stuck_ms[row]) / 1000,
            }
            batch.add(STUCK_RANK, row, Finding("stuck_sensor", "warning", finding_values))
        for memory, row in zip(batch.memories, groups.last_rows().tolist(), strict=True):
            memory.same_count, memory.same_since_ms = int(same_count[row]), int(same_since[row])

    def _zscore(self, batch: _Batch) -> None:
        """Each reading's main measure against the sensor's running mean and variance
        before it."""
        c = self.config
        readings = batch.readings
        measure = MAIN_MEASURE[readings.sensor_type]
        rows, per_sensor = readings.groups.lists(readings.numbers(measure))
        done = 0
        for memory, values in zip(batch.memories, per_sensor, strict=True):
            stats = memory.stats = memory.stats or Running(c.zscore_alpha)
            learnt_before = stats.count
            scores = stats.learn(values)[0]
            for at, score in enumerate(scores):
                if learnt_before + at + 1 > c.zscore_warmup and abs(score) > c.zscore_threshold:
                    row = int(rows[done + at])
                    found = {
                        "measure": measure,
                        "value": readings.rows[row][measure],
                        "zscore": round(score, 2),
                    }
                    severity = _severity(abs(score) / c.zscore_threshold)
                    batch.add(ZSCORE_RANK, row, Finding("zscore_outlier", severity, found))
            done += len(values)
