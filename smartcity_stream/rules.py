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

from smartcity_stream.baselines import Level, Recent, Seasonal
from smartcity_stream.columns import Readings


@dataclass(frozen=True, kw_only=True)
class RuleConfig:
    """Thresholds of every rule, every time constant in seconds of event time: the same
    configuration holds for a sensor that reports every second and one every ten minutes.

    A plain frozen dataclass, not a pydantic model: Spark's executors build these rules for
    the batch layer, and their Python has numpy, pandas and pyarrow but not this project's
    other dependencies. A rules file is validated when it is read, by
    `smartcity_stream.rule_file.load_rules`, where pydantic is at hand.
    """

    # What a validator (pydantic's TypeAdapter) reads: a key that is no threshold is a typo.
    __pydantic_config__: ClassVar[dict[str, str]] = {"extra": "forbid"}

    # Episodes: findings of one kind closer than the gap are one anomaly, reported once.
    episode_gap_s: float = 300.0
    episode_gap_intervals: float = 2.5  # and never less than this many reporting intervals
    default_interval_s: float = 60.0  # a sensor that neither states its interval nor has
    # reported before
    # Baselines: what a sensor's flow, speed, power and temperature usually are by now
    # (`smartcity_stream.baselines.Level`): smoothed over `baseline_tau_s`, residuals beyond
    # `baseline_clip` scales learnt as that many, no verdict before `baseline_warmup_s`.
    baseline_tau_s: float = 1800.0
    baseline_clip: float = 2.0
    baseline_min_scale: float = 0.02  # the clip never narrower than 2 % of the level
    baseline_warmup_s: float = 1800.0
    # Once a week has taught it, flow, speed and power are judged against the same hour of
    # the week instead (`smartcity_stream.baselines.Seasonal`): the latest week weighs this.
    seasonal_week_weight: float = 0.3
    # Severe congestion: slow, congested and far slower than this road usually is by now
    # (a jam that builds over the rush hour is this road's rhythm, a sudden one is not).
    severe_congestion_speed_kmh: float = 25.0
    severe_congestion_levels: tuple[str, ...] = ("severe",)
    severe_congestion_speed_share: float = 0.4
    # High volume: the recent flow above the road's capacity and well above its usual flow.
    flow_recent_s: float = 300.0  # memory of the recent flow
    high_volume_capacity_factor: float = 1.3
    high_volume_level_factor: float = 2.0
    # Speed: vehicles recently passing far above the limit (or an absolute bound).
    speed_recent_s: float = 120.0  # memory of the recent vehicles and their mean speed
    speed_high_kmh: float = 120.0
    speed_limit_factor: float = 1.5
    speed_min_vehicles: float = 3.0  # the mean speed of fewer vehicles is one driver's
    # Weather: the plausible range, and a rate of change no weather has.
    temperature_min_c: float = -25.0
    temperature_max_c: float = 42.0
    humidity_min_pct: float = 1.0
    temperature_jump_c: float = 8.0  # change beyond this ...
    temperature_jump_c_per_h: float = 6.0  # ... plus this much per hour between the readings
    # Energy: power above this multiple of the feeder's usual power by now.
    energy_spike_factor: float = 2.0
    voltage_tolerance_pct: float = 10.0
    # Flat line (QARTOD's flat-line test): every measure repeated for this long.
    stuck_for_s: float = 600.0
    stuck_min_readings: int = 3  # a value seen twice can be chance, three times is not
    # Robust z-score of the temperature against its level: deviation / scale (a mean
    # absolute deviation, about 0.8 standard deviations), the scale at least
    # `zscore_min_scale_c` (a steady night would make a tenth of a degree an outlier).
    zscore_threshold: float = 8.0
    zscore_min_scale_c: float = 0.5

    def __post_init__(self) -> None:
        for name in ("baseline_tau_s", "flow_recent_s", "speed_recent_s", "default_interval_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be above 0")

    def episode_gap_ms(self, interval_s: float) -> float:
        return max(self.episode_gap_s, self.episode_gap_intervals * interval_s) * 1000


MEASURES = {
    "traffic": ("vehicle_count", "average_speed_kmh", "occupancy_pct"),
    "weather": ("temperature_c", "humidity_pct", "pressure_hpa", "wind_speed_ms"),
    "energy": ("power_kw", "voltage_v", "current_a"),
}
DETECTORS = {
    "traffic": ("severe_congestion", "high_volume", "speed_anomaly", "stuck_sensor"),
    "weather": (
        "temperature_out_of_range",
        "temperature_jump",
        "humidity_out_of_range",
        "stuck_sensor",
        "zscore_outlier",
    ),
    "energy": ("energy_spike", "voltage_out_of_tolerance", "stuck_sensor"),
}
"""The kinds each sensor type can raise, in the order a reading lists them."""


@dataclass
class SensorMemory:
    """What a sensor's earlier batches leave for the next one (plain values: a checkpoint)."""

    previous: np.ndarray | None = None  # measures of the last reading (NaN: no value)
    last_ms: int = 0
    interval_s: float = 0.0
    same_count: int = 0
    same_since_ms: int = 0
    levels: dict[str, Level] = field(default_factory=dict)
    seasons: dict[str, Seasonal] = field(default_factory=dict)
    recent: Recent | None = None
    speeding: tuple[float, float] = (0.0, 0.0)  # vehicles of the run too fast, their speed sum
    last_hit_ms: dict[str, int] = field(default_factory=dict)

    def level(self, name: str, tau_s: float, clip: float) -> Level:
        found = self.levels.get(name)
        if found is None:
            found = self.levels[name] = Level(tau_s, clip)
        return found

    def to_state(self) -> dict[str, Any]:
        """Plain JSON values (NaN as None): what a checkpoint keeps of the sensor."""
        return {
            "previous": None if self.previous is None else _plain(self.previous.tolist()),
            "last_ms": self.last_ms,
            "interval_s": self.interval_s,
            "same": [self.same_count, self.same_since_ms],
            "levels": {name: _plain_fields(level) for name, level in self.levels.items()},
            "seasons": {name: season.to_state() for name, season in self.seasons.items()},
            "recent": None if self.recent is None else _plain_fields(self.recent),
            "speeding": list(self.speeding),
            "last_hit_ms": self.last_hit_ms,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> SensorMemory:
        previous = state["previous"]
        return cls(
            previous=None if previous is None else np.array(_floats(previous)),
            last_ms=state["last_ms"],
            interval_s=state["interval_s"],
            same_count=state["same"][0],
            same_since_ms=state["same"][1],
            levels={name: Level(**_number_fields(f)) for name, f in state["levels"].items()},
            seasons={name: Seasonal.from_state(f) for name, f in state["seasons"].items()},
            recent=None if state["recent"] is None else Recent(**state["recent"]),
            speeding=(state["speeding"][0], state["speeding"][1]),
            last_hit_ms=dict(state["last_hit_ms"]),
        )


def _plain(values: list[Any]) -> list[Any]:
    """NaN as None: JSON has no NaN."""
    return [None if isinstance(v, float) and v != v else v for v in values]


def _floats(values: list[Any]) -> list[Any]:
    return [math.nan if v is None else v for v in values]


def _plain_fields(baseline: Level | Recent) -> dict[str, Any]:
    return dict(zip(vars(baseline), _plain(list(vars(baseline).values())), strict=True))


def _number_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    return dict(zip(fields, _floats(list(fields.values())), strict=True))


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
    memories: list[SensorMemory]
    values: np.ndarray
    previous: np.ndarray
    has_previous: np.ndarray
    previous_ms: np.ndarray
    interval_s: np.ndarray
    found: list[tuple[int, int, Finding]]

    def add(self, kind: str, row: int, severity: str, values: dict[str, Any]) -> None:
        rank = DETECTORS[self.readings.sensor_type].index(kind)
        self.found.append((row, rank, Finding(kind, severity, values)))


class RuleEngine:
    """Apply the rules to batches of readings; returns each new anomaly episode once."""

    def __init__(self, config: RuleConfig, sensors: Mapping[str, Mapping[str, Any]]) -> None:
        self.config = config
        self.sensors = sensors
        self._memory: dict[str, SensorMemory] = {}

    def export(self, sensor_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The memory of these sensors as JSON values (those never seen are left out): a
        checkpoint of what a partition's sensors have taught the rules."""
        return {s: self._memory[s].to_state() for s in sensor_ids if s in self._memory}

    def restore(self, states: Mapping[str, Mapping[str, Any]]) -> None:
        """Take back sensors' memories from `export`: baselines, runs and open episodes
        go on as if the worker had never stopped."""
        for sensor_id, state in states.items():
            self._memory[sensor_id] = SensorMemory.from_state(state)

    def known_sensors(self) -> list[str]:
        return list(self._memory)

    def forget(self, sensor_ids: Iterable[str]) -> None:
        """Drop these sensors' memories (their partition went to another worker)."""
        for sensor_id in sensor_ids:
            self._memory.pop(sensor_id, None)

    def evaluate(self, reading: Mapping[str, Any], event_ms: int) -> list[Finding]:
        """One reading, as a batch of one."""
        readings = Readings.from_rows(reading["sensor_type"], [dict(reading)], [event_ms])
        return [finding for _, finding in self.evaluate_batch(readings)]

    def evaluate_batch(self, readings: Readings) -> list[tuple[int, Finding]]:
        """(row, finding) of every new episode, in row order and, per row, rule order.

        The rules judge readings against what their sensor did before (baselines in event
        time), not against the window they joined: the window is the worker's to report."""
        sensor_type = readings.sensor_type
        measures = MEASURES[sensor_type]
        memories = [self._memory.setdefault(s, SensorMemory()) for s in readings.sensor_ids]
        values = np.column_stack([readings.numbers(name) for name in measures])
        missing = np.full(len(measures), np.nan)
        before = np.array([m.previous if m.previous is not None else missing for m in memories])
        known = np.array([m.previous is not None for m in memories])
        groups = readings.groups
        event_ms = readings.event_ms
        previous_ms = groups.previous(event_ms, np.array([m.last_ms for m in memories]))
        has_previous = groups.previous(np.ones(readings.size, dtype=bool), known)
        batch = _Batch(
            readings,
            memories,
            values,
            groups.previous(values, before.reshape(len(memories), len(measures))),
            has_previous,
            previous_ms,
            self._intervals(readings, memories, has_previous, event_ms - previous_ms),
            [],
        )
        getattr(self, f"_{sensor_type}")(batch)
        self._stuck(batch)
        for memory, row in zip(memories, groups.last_rows().tolist(), strict=True):
            memory.previous = values[row].copy()
            memory.last_ms = int(event_ms[row])
            memory.interval_s = float(batch.interval_s[row])
        batch.found.sort(key=lambda item: (item[0], item[1]))
        sensor = readings.sensor
        return [
            (row, finding)
            for row, _, finding in batch.found
            if self._new_episode(
                memories[sensor[row]], finding, int(event_ms[row]), float(batch.interval_s[row])
            )
        ]

    def _intervals(
        self,
        readings: Readings,
        memories: list[SensorMemory],
        has_previous: np.ndarray,
        gap_ms: np.ndarray,
    ) -> np.ndarray:
        """Per row, its sensor's reporting interval: as the reading states it, else the gap
        since the sensor's previous reading, else what the sensor last had (or the default)."""
        carried = np.array(
            [m.interval_s or self.config.default_interval_s for m in memories], dtype=np.float64
        )[readings.sensor]
        declared = readings.numbers("interval_s")
        with np.errstate(invalid="ignore"):
            gap_s = np.where(has_previous & (gap_ms > 0), gap_ms / 1000, carried)
            return np.where(declared > 0, declared, gap_s)

    def _new_episode(
        self, memory: SensorMemory, finding: Finding, event_ms: int, interval_s: float
    ) -> bool:
        last = memory.last_hit_ms.get(finding.kind)
        memory.last_hit_ms[finding.kind] = event_ms
        return last is None or event_ms - last > self.config.episode_gap_ms(interval_s)

    def _per_sensor(self, readings: Readings, key: str, default: float) -> np.ndarray:
        """A registry attribute of each row's sensor (`default` where the registry has none)."""
        known = [self.sensors.get(s, {}).get(key) or default for s in readings.sensor_ids]
        return np.array(known, dtype=np.float64)[readings.sensor]

    def _baseline(
        self,
        batch: _Batch,
        name: str,
        values: np.ndarray,
        tau_s: float | None = None,
        weekly: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per row, what the sensor's `name` usually is, its scale and the age in seconds
        of that knowledge, as they stood before the row (`smartcity_stream.baselines`):
        with `weekly`, the expectation for that hour of the week once a week has taught it
        (a road's Monday 08:00), else the robust level of the last `baseline_tau_s`. With
        `tau_s`, a plain smoother of that memory instead, as it stands after the row."""
        c = self.config
        groups = batch.readings.groups
        rows, per_sensor = groups.lists(values)
        _, times = groups.lists(batch.readings.event_ms)
        plain = tau_s is not None
        tau, clip = (tau_s, 0.0) if plain else (c.baseline_tau_s, c.baseline_clip)
        found: list[list[float]] = [[], [], [], []]
        for memory, sensor_values, sensor_times in zip(
            batch.memories, per_sensor, times, strict=True
        ):
            learnt = memory.level(name, tau, clip).learn(
                sensor_times, sensor_values, c.baseline_min_scale, after=plain
            )
            if weekly:
                season = memory.seasons.setdefault(name, Seasonal(c.seasonal_week_weight))
                found[3] += season.learn(sensor_times, sensor_values)
            for into, part in zip(found[:3], learnt, strict=True):
                into += part
        result = np.full((4, batch.readings.size), np.nan)
        result[:, rows] = found if weekly else [*found[:3], [math.nan] * len(rows)]
        usual, scale, age, expected = result
        known = ~np.isnan(expected)
        return np.where(known, expected, usual), scale, np.where(known, np.inf, age)

    def _recent_speed(self, batch: _Batch) -> np.ndarray:
        """Per row, after it: the mean speed of the vehicles of the last `speed_recent_s`
        (time-decayed), however the readings split them."""
        readings, tau = batch.readings, self.config.speed_recent_s
        groups = readings.groups
        rows, counts = groups.lists(readings.numbers("vehicle_count"))
        _, speeds = groups.lists(readings.numbers("average_speed_kmh"))
        _, times = groups.lists(readings.event_ms)
        means: list[float] = []
        for memory, sensor_times, sensor_counts, sensor_speeds in zip(
            batch.memories, times, counts, speeds, strict=True
        ):
            recent = memory.recent = memory.recent or Recent(tau)
            means += recent.learn(sensor_times, sensor_counts, sensor_speeds)
        result = np.empty(readings.size)
        result[rows] = means
        return result

    def _traffic(self, batch: _Batch) -> None:
        c = self.config
        readings = batch.readings
        flow = readings.numbers("vehicle_count") * 3600 / batch.interval_s
        speed = self._recent_speed(batch)
        usual_speed, _, speed_age = self._baseline(batch, "speed", speed, weekly=True)
        level = readings.values("congestion_level")
        with np.errstate(invalid="ignore"):
            severe = (
                np.isin(level, c.severe_congestion_levels)
                & (speed < c.severe_congestion_speed_kmh)
                & (speed_age >= c.baseline_warmup_s)
                & (speed < c.severe_congestion_speed_share * usual_speed)
            )
        for row in np.flatnonzero(severe).tolist():
            row_speed = float(speed[row])
            ratio = c.severe_congestion_speed_kmh / max(row_speed, 1.0)
            values = {
                "congestion_level": level[row],
                "recent_mean_speed_kmh": round(row_speed, 1),
                "usual_speed_kmh": round(float(usual_speed[row]), 1),
            }
            batch.add("severe_congestion", row, _severity(ratio), values)
        self._high_volume(batch, flow)
        limit = self._per_sensor(readings, "speed_limit_kmh", c.speed_high_kmh)
        too_fast = np.minimum(c.speed_high_kmh, c.speed_limit_factor * limit)
        witnesses, fast_speed = self._speeding(batch, too_fast)
        for row in np.flatnonzero(witnesses >= c.speed_min_vehicles).tolist():
            row_speed, threshold = float(fast_speed[row]), float(too_fast[row])
            values = {
                "mean_speed_kmh": round(row_speed, 1),
                "vehicles": int(witnesses[row]),
                "threshold_kmh": threshold,
            }
            batch.add("speed_anomaly", row, _severity(row_speed / threshold), values)

    def _speeding(self, batch: _Batch, too_fast: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per row: the vehicles of the sensor's current run of readings whose mean speed is
        above `too_fast` (readings without a vehicle neither extend nor end it), and their
        mean speed. A run, not a window: a few vehicles a night apart still make one, while
        one reading at a normal speed ends it."""
        readings = batch.readings
        groups = readings.groups
        rows, counts = groups.lists(readings.numbers("vehicle_count"))
        _, speeds = groups.lists(readings.numbers("average_speed_kmh"))
        _, limits = groups.lists(too_fast)
        witnesses: list[float] = []
        means: list[float] = []
        for memory, sensor_counts, sensor_speeds, sensor_limits in zip(
            batch.memories, counts, speeds, limits, strict=True
        ):
            vehicles, total = memory.speeding
            readings_of_sensor = zip(sensor_counts, sensor_speeds, sensor_limits, strict=True)
            for count, speed, limit in readings_of_sensor:
                if count > 0 and speed == speed:
                    if speed > limit:
                        vehicles, total = vehicles + count, total + count * speed
                    else:
                        vehicles, total = 0.0, 0.0
                witnesses.append(vehicles)
                means.append(total / vehicles if vehicles else 0.0)
            memory.speeding = (vehicles, total)
        result = np.empty((2, readings.size))
        result[:, rows] = [witnesses, means]
        return result[0], result[1]

    def _high_volume(self, batch: _Batch, flow: np.ndarray) -> None:
        """The recent flow (minutes, not one noisy interval) against the road's capacity and
        against what it usually carries by now: a road at capacity every rush hour is not
        an anomaly, a surge beyond it is. The usual flow learns from the recent flow, not
        from single readings: a few vehicles per reading are mostly none, and a robust level
        of those would be their median."""
        c = self.config
        recent, _, recent_age = self._baseline(batch, "recent_flow", flow, c.flow_recent_s)
        usual, _, usual_age = self._baseline(batch, "flow", recent, weekly=True)
        capacity = self._per_sensor(batch.readings, "capacity_vph", 0.0)
        limit = np.maximum(
            c.high_volume_capacity_factor * capacity, c.high_volume_level_factor * usual
        )
        with np.errstate(invalid="ignore"):
            high = (
                (recent_age + batch.interval_s >= c.flow_recent_s)
                & (usual_age >= c.baseline_warmup_s)
                & (recent > limit)
            )
        for row in np.flatnonzero(high).tolist():
            row_flow, row_limit = float(recent[row]), float(limit[row])
            values = {
                "recent_flow_vph": round(row_flow),
                "usual_flow_vph": round(float(usual[row])),
                "threshold_vph": round(row_limit),
            }
            batch.add("high_volume", row, _severity(row_flow / row_limit), values)

    def _weather(self, batch: _Batch) -> None:
        c = self.config
        readings = batch.readings
        rows = readings.rows
        temperature = readings.numbers("temperature_c")
        outside = ~((c.temperature_min_c <= temperature) & (temperature <= c.temperature_max_c))
        span = c.temperature_max_c - c.temperature_min_c
        for row in np.flatnonzero(outside).tolist():
            value = rows[row]["temperature_c"]
            beyond = max(c.temperature_min_c - value, value - c.temperature_max_c)
            severity = _severity(1 + 10 * beyond / span)
            batch.add("temperature_out_of_range", row, severity, {"temperature_c": value})
        previous = batch.previous[:, MEASURES["weather"].index("temperature_c")]
        hours = (readings.event_ms - batch.previous_ms) / 3_600_000
        allowed = c.temperature_jump_c + c.temperature_jump_c_per_h * np.abs(hours)
        with np.errstate(invalid="ignore"):
            jumped = batch.has_previous & (np.abs(temperature - previous) > allowed)
        for row in np.flatnonzero(jumped).tolist():
            values = {
                "temperature_c": rows[row]["temperature_c"],
                "previous_c": float(previous[row]),
            }
            batch.add("temperature_jump", row, "warning", values)
        dry = readings.numbers("humidity_pct") < c.humidity_min_pct
        for row in np.flatnonzero(dry).tolist():
            values = {"humidity_pct": rows[row]["humidity_pct"]}
            batch.add("humidity_out_of_range", row, "warning", values)
        self._zscore(batch, temperature)

    def _zscore(self, batch: _Batch, temperature: np.ndarray) -> None:
        """The temperature against its own level: a robust z-score."""
        c = self.config
        usual, scale, age = self._baseline(batch, "temperature", temperature)
        with np.errstate(invalid="ignore", divide="ignore"):
            score = (temperature - usual) / np.maximum(scale, c.zscore_min_scale_c)
            outlier = (age >= c.baseline_warmup_s) & (np.abs(score) > c.zscore_threshold)
        for row in np.flatnonzero(outlier).tolist():
            values = {
                "measure": "temperature_c",
                "value": batch.readings.rows[row]["temperature_c"],
                "zscore": round(float(score[row]), 2),
            }
            severity = _severity(abs(float(score[row])) / c.zscore_threshold)
            batch.add("zscore_outlier", row, severity, values)

    def _energy(self, batch: _Batch) -> None:
        c = self.config
        readings = batch.readings
        power = readings.numbers("power_kw")
        usual, _, age = self._baseline(batch, "power", power, weekly=True)
        with np.errstate(invalid="ignore"):
            spike = (age >= c.baseline_warmup_s) & (
                power > c.energy_spike_factor * np.maximum(usual, 1e-3)
            )
        for row in np.flatnonzero(spike).tolist():
            reference = max(float(usual[row]), 1e-3)
            value = readings.rows[row]["power_kw"]
            values = {"power_kw": value, "baseline_kw": round(reference, 3)}
            ratio = value / reference / c.energy_spike_factor
            batch.add("energy_spike", row, _severity(ratio), values)
        nominal = self._per_sensor(readings, "nominal_voltage_v", 230.0)
        deviation = np.abs(readings.numbers("voltage_v") - nominal) / nominal * 100
        for row in np.flatnonzero(deviation > c.voltage_tolerance_pct).tolist():
            values = {
                "voltage_v": readings.rows[row]["voltage_v"],
                "nominal_v": float(nominal[row]),
            }
            severity = _severity(float(deviation[row]) / c.voltage_tolerance_pct)
            batch.add("voltage_out_of_tolerance", row, severity, values)

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
            batch.add("stuck_sensor", row, "warning", finding_values)
        for memory, row in zip(batch.memories, groups.last_rows().tolist(), strict=True):
            memory.same_count, memory.same_since_ms = int(same_count[row]), int(same_since[row])
