"""Planted anomalies: the ground truth that detection quality is measured against.

The kind names are the vocabulary the stream worker's detectors report with, so they live
here once (`AnomalyKind`, `ANOMALY_KINDS`). The planner decides per time step which sensors
start an anomaly (a Poisson process in event time at `rate_per_hour` per sensor), tells the
reading models which kind is active with a per-anomaly severity in [0, 1), freezes the
readings of stuck sensors, and records every planted anomaly with its half-open event-time
span [start, end).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from enum import StrEnum

import numpy as np
import orjson

from simulator.encoding import format_event_time
from simulator.registry import SensorGroup


class AnomalyKind(StrEnum):
    SEVERE_CONGESTION = "severe_congestion"
    HIGH_VOLUME = "high_volume"
    SPEED_ANOMALY = "speed_anomaly"
    STUCK_SENSOR = "stuck_sensor"
    ENERGY_SPIKE = "energy_spike"
    TEMPERATURE_OUT_OF_RANGE = "temperature_out_of_range"


ANOMALY_KINDS: tuple[str, ...] = tuple(kind.value for kind in AnomalyKind)
NO_ANOMALY = 0
"""Per-sensor kind codes: 0 is none, `code(kind)` = position in `ANOMALY_KINDS` + 1."""


def code(kind: AnomalyKind) -> int:
    return ANOMALY_KINDS.index(kind.value) + 1


KINDS_BY_TYPE: dict[str, tuple[AnomalyKind, ...]] = {
    "traffic": (
        AnomalyKind.SEVERE_CONGESTION,
        AnomalyKind.HIGH_VOLUME,
        AnomalyKind.SPEED_ANOMALY,
        AnomalyKind.STUCK_SENSOR,
    ),
    "weather": (AnomalyKind.TEMPERATURE_OUT_OF_RANGE, AnomalyKind.STUCK_SENSOR),
    "energy": (AnomalyKind.ENERGY_SPIKE, AnomalyKind.STUCK_SENSOR),
}

DURATION_S: dict[AnomalyKind, tuple[float, float]] = {
    AnomalyKind.SEVERE_CONGESTION: (600, 2400),
    AnomalyKind.HIGH_VOLUME: (600, 1800),
    AnomalyKind.SPEED_ANOMALY: (120, 600),
    AnomalyKind.STUCK_SENSOR: (900, 3600),
    AnomalyKind.ENERGY_SPIKE: (60, 300),
    AnomalyKind.TEMPERATURE_OUT_OF_RANGE: (600, 1800),
}
"""How long each kind lasts in event time (uniform between the bounds, at least
`MIN_READINGS` readings)."""

MIN_READINGS: dict[AnomalyKind, int] = {AnomalyKind.STUCK_SENSOR: 3}
"""A flat line is a repetition: a value reported twice in a row can be chance, three times in
a row is not, so a stuck sensor repeats at least three readings whatever the interval."""

MIN_WITNESSES: dict[tuple[str, AnomalyKind], int] = {
    ("traffic", AnomalyKind.SPEED_ANOMALY): 3,
    ("traffic", AnomalyKind.STUCK_SENSOR): 1,
}
"""Kinds only passing vehicles can show, and how many must pass while one lasts for it to be
ground truth. A speed is the mean of the vehicles that passed, and the mean of one or two is
one driver's choice (a night-time speed fault on an empty road shows nothing); a loop stuck
on an empty road's reading reports what an empty road reports."""

QUIET_AFTER_S = 1800
"""A sensor's next anomaly starts at least this long after its last one ended: two faults
closer than that are one episode to any detector (and to an operator)."""

DEFAULT_RATE_PER_HOUR = 0.05
"""Expected anomaly starts per sensor per hour of event time: ~250 a day in the default city."""


@dataclass(frozen=True)
class PlantedAnomaly:
    """One ground-truth record: `sensor_id` showed `kind` in the readings of [start, end)."""

    sensor_id: str
    sensor_type: str
    kind: str
    start_ms: int
    end_ms: int
    interval_ms: int

    def to_json(self) -> bytes:
        """One JSON line of the ground-truth file: times as on the wire, and the reading count."""
        return orjson.dumps(
            {
                "sensor_id": self.sensor_id,
                "sensor_type": self.sensor_type,
                "kind": self.kind,
                "start": format_event_time(self.start_ms),
                "end": format_event_time(self.end_ms),
                "readings": (self.end_ms - self.start_ms) // self.interval_ms,
            }
        )


@dataclass(frozen=True)
class AnomalyPlan:
    """Per step and sensor of a block: active kind code, severity, and where stuck begins."""

    kinds: np.ndarray
    severity: np.ndarray
    stuck_starts: np.ndarray
    start_ms: np.ndarray


class AnomalyPlanner:
    """Anomaly state of all sensors of one type, planned a block of time steps at a time."""

    def __init__(
        self,
        group: SensorGroup,
        rate_per_hour: float,
        interval_ms: int,
        rng: np.random.Generator,
    ) -> None:
        self._group = group
        self._interval_ms = interval_ms
        self._rng = rng
        self._mean_gap_ms = 3_600_000 / rate_per_hour if rate_per_hour > 0 else math.inf
        self._kind_codes = np.array([code(k) for k in KINDS_BY_TYPE[group.sensor_type]])
        self._durations = np.array([DURATION_S[k] for k in KINDS_BY_TYPE[group.sensor_type]])
        self._min_readings = np.array(
            [MIN_READINGS.get(k, 1) for k in KINDS_BY_TYPE[group.sensor_type]]
        )
        self._kinds = np.zeros(group.size, dtype=np.int64)
        self._severity = np.zeros(group.size)
        self._start_ms = np.zeros(group.size, dtype=np.int64)
        self._end_ms = np.zeros(group.size, dtype=np.int64)
        self._next_start_ms = np.full(group.size, math.inf)
        self._next_event_ms = -math.inf  # nothing scheduled yet: look at the first step
        self._frozen: dict[str, np.ndarray] = {}
        self._witnesses: dict[tuple[str, int], int] = {}
        self.planted: list[PlantedAnomaly] = []
        """The anomalies closed so far (all of them after `close_all`); `ground_truth` is
        those of them the readings could show."""

    def plan(self, times_ms: np.ndarray) -> AnomalyPlan:
        """Advance through the steps at `times_ms`; what is active at each of them."""
        shape = (len(times_ms), self._group.size)
        plan = AnomalyPlan(
            np.zeros(shape, np.int64),
            np.zeros(shape),
            np.zeros(shape, bool),
            np.zeros(shape, np.int64),
        )
        active = bool((self._kinds != NO_ANOMALY).any())  # carried over from the last block
        for row, epoch_ms in enumerate(times_ms.tolist()):
            if epoch_ms >= self._next_event_ms:
                active = self._advance(epoch_ms, plan.stuck_starts[row])
            if active:
                plan.kinds[row] = self._kinds
                plan.severity[row] = self._severity
                plan.start_ms[row] = self._start_ms
        return plan

    def _advance(self, epoch_ms: int, stuck_starts: np.ndarray) -> bool:
        """Close what ended before this step, start what is due; whether any is active.

        Starts are a Poisson process per sensor (exponential gaps after the last anomaly), so
        most steps only compare one number: nothing is due.
        """
        if self._next_event_ms == -math.inf:  # first step: schedule every sensor
            self._next_start_ms[:] = epoch_ms + self._gaps(self._group.size)
        ended = np.flatnonzero((self._kinds != NO_ANOMALY) & (self._end_ms <= epoch_ms))
        self._close(ended, self._end_ms[ended])
        quiet_ms = QUIET_AFTER_S * 1000
        self._next_start_ms[ended] = self._end_ms[ended] + quiet_ms + self._gaps(ended.size)
        starting = np.flatnonzero((self._kinds == NO_ANOMALY) & (self._next_start_ms <= epoch_ms))
        if starting.size:
            self._start(starting, epoch_ms)
            stuck_starts[starting] = self._kinds[starting] == code(AnomalyKind.STUCK_SENSOR)
        active = self._kinds != NO_ANOMALY
        self._next_event_ms = float(
            np.min(np.where(active, self._end_ms, self._next_start_ms), initial=math.inf)
        )
        return bool(active.any())

    def _gaps(self, size: int) -> np.ndarray:
        if math.isinf(self._mean_gap_ms):
            return np.full(size, math.inf)
        return self._rng.exponential(self._mean_gap_ms, size)

    def _start(self, sensors: np.ndarray, epoch_ms: int) -> None:
        choice = self._rng.integers(0, len(self._kind_codes), sensors.size)
        low, high = self._durations[choice, 0], self._durations[choice, 1]
        duration_ms = (low + (high - low) * self._rng.random(sensors.size)) * 1000
        readings = np.maximum(
            self._min_readings[choice], np.round(duration_ms / self._interval_ms)
        ).astype(np.int64)
        self._kinds[sensors] = self._kind_codes[choice]
        self._severity[sensors] = self._rng.random(sensors.size)
        self._start_ms[sensors] = epoch_ms
        self._end_ms[sensors] = epoch_ms + readings * self._interval_ms

    def _close(self, sensors: np.ndarray, end_ms: np.ndarray) -> None:
        self.planted += [
            PlantedAnomaly(
                sensor_id=self._group.ids[sensor],
                sensor_type=self._group.sensor_type,
                kind=ANOMALY_KINDS[self._kinds[sensor] - 1],
                start_ms=int(self._start_ms[sensor]),
                end_ms=end,
                interval_ms=self._interval_ms,
            )
            for sensor, end in zip(sensors.tolist(), end_ms.tolist(), strict=True)
        ]
        self._kinds[sensors] = NO_ANOMALY

    def hold_stuck(self, columns: dict[str, np.ndarray], plan: AnomalyPlan) -> None:
        """Stuck sensors repeat the values of their first stuck reading, column by column.

        Within a block the source row of each stuck cell is the last stuck start above it (a
        forward fill of start rows); a stuck run that began in an earlier block repeats the
        values carried over in `_frozen`.
        """
        stuck = plan.kinds == code(AnomalyKind.STUCK_SENSOR)
        if not stuck.any():
            return
        rows = np.arange(len(stuck))[:, None]
        source = np.maximum.accumulate(np.where(plan.stuck_starts, rows, -1), axis=0)
        cells = np.nonzero(stuck)
        in_block = source[cells] >= 0
        carried = cells[1][~in_block]
        for name, values in columns.items():
            frozen = self._frozen.setdefault(name, np.zeros(values.shape[1], values.dtype))
            fill = values[source[cells][in_block], cells[1][in_block]]
            values[cells[0][~in_block], carried] = frozen[carried]
            values[cells[0][in_block], cells[1][in_block]] = fill
            frozen[stuck[-1]] = values[-1, stuck[-1]]

    def witness(self, plan: AnomalyPlan, vehicles: np.ndarray) -> None:
        """Count the vehicles reported while each `MIN_WITNESSES` kind was active."""
        for sensor_type, kind in MIN_WITNESSES:
            if sensor_type != self._group.sensor_type:
                continue
            steps, sensors = np.nonzero(plan.kinds == code(kind))
            starts, passed = plan.start_ms[steps, sensors].tolist(), vehicles[steps, sensors]
            for sensor, start, count in zip(sensors.tolist(), starts, passed.tolist(), strict=True):
                key = (self._group.ids[sensor], start)
                self._witnesses[key] = self._witnesses.get(key, 0) + int(count)

    @property
    def ground_truth(self) -> list[PlantedAnomaly]:
        """The closed anomalies that enough vehicles witnessed, where a kind needs them."""
        return [
            p
            for p in self.planted
            if self._witnesses.get((p.sensor_id, p.start_ms), 0)
            >= MIN_WITNESSES.get((p.sensor_type, AnomalyKind(p.kind)), 0)
        ]

    def close_all(self, end_ms: int) -> None:
        """At the end of a run: close everything, truncated at `end_ms` (exclusive)."""
        active = np.flatnonzero(self._kinds != NO_ANOMALY)
        self._close(active, np.minimum(self._end_ms[active], end_ms))
        self.planted = [
            replace(p, end_ms=min(p.end_ms, end_ms)) for p in self.planted if p.start_ms < end_ms
        ]
