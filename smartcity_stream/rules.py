"""Real-time anomaly rules: every threshold in one configurable place, one detector per kind.

Rules look at each valid reading together with its sensor's open window and a little
per-sensor memory (previous values, a baseline, a running z-score), so an anomaly is
reported within the batch that carries its first reading rather than when a window closes.
A condition that holds over many readings is one anomaly (an episode), reported once.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field

from smartcity_stream.windows import Window


class RuleConfig(BaseModel):
    """Thresholds of every rule; load overrides from a JSON file with `RuleConfig.load`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    severe_congestion_speed_kmh: float = Field(25.0, description="window mean speed below")
    severe_congestion_levels: tuple[str, ...] = ("high", "severe")
    severe_congestion_occupancy_pct: float = Field(
        50.0, description="and window mean occupancy above (rush hour on a small road is not)"
    )
    high_volume_capacity_factor: float = Field(
        1.3,
        description="recent flow above this multiple of the road's capacity "
        "(rush hour peaks at about 1.2)",
    )
    flow_recent_s: float = Field(120.0, description="time constant of the recent flow")
    speed_low_kmh: float = 15.0
    speed_high_kmh: float = 120.0
    speed_limit_factor: float = Field(1.5, description="mean speed above this times the limit")
    speed_min_vehicles: int = Field(3, description="speeds of fewer vehicles are noise")
    speed_low_max_occupancy_pct: float = Field(
        15.0, description="slow is odd only on a free road: occupancy below this"
    )
    temperature_min_c: float = -25.0
    temperature_max_c: float = 42.0
    humidity_min_pct: float = 1.0
    temperature_jump_c: float = Field(8.0, description="change between consecutive readings")
    energy_spike_factor: float = Field(2.0, description="power above this times the baseline")
    energy_baseline_alpha: float = Field(0.01, gt=0, le=1)
    energy_baseline_warmup: int = 30
    voltage_tolerance_pct: float = 10.0
    stuck_for_s: float = Field(600.0, description="identical readings for this long")
    stuck_min_readings: int = Field(5, description="and at least this many of them")
    zscore_threshold: float = 6.0
    zscore_alpha: float = Field(0.01, gt=0, le=1)
    zscore_warmup: int = 120
    episode_gap_s: float = Field(120.0, description="a quieter gap than this ends an anomaly")

    @classmethod
    def load(cls, path: Path | None) -> RuleConfig:
        return cls.model_validate(orjson.loads(path.read_bytes())) if path else cls()


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

    def zscore(self, value: float) -> float:
        spread = math.sqrt(self.variance)
        return (value - self.mean) / spread if spread > 1e-9 else 0.0

    def update(self, value: float) -> None:
        """A plain running mean until 1/count falls below alpha: no bias towards the start."""
        self.count += 1
        alpha = max(self.alpha, 1 / self.count)
        delta = value - self.mean
        self.mean += alpha * delta
        self.variance = (1 - alpha) * (self.variance + alpha * delta * delta)


@dataclass
class SensorMemory:
    previous: dict[str, Any] | None = None
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


class RuleEngine:
    """Apply the rules to readings; returns each new anomaly episode once."""

    def __init__(self, config: RuleConfig, sensors: Mapping[str, Mapping[str, Any]]) -> None:
        self.config = config
        self.sensors = sensors
        self._memory: dict[str, SensorMemory] = {}

    def evaluate(
        self, reading: Mapping[str, Any], event_ms: int, window: Window | None
    ) -> list[Finding]:
        sensor_type = reading["sensor_type"]
        memory = self._memory.setdefault(reading["sensor_id"], SensorMemory())
        findings = [
            *getattr(self, f"_{sensor_type}")(reading, event_ms, window, memory),
            *self._stuck(reading, event_ms, memory),
            *self._zscore(reading, memory),
        ]
        memory.previous = dict(reading)
        return [finding for finding in findings if self._new_episode(memory, finding, event_ms)]

    def _new_episode(self, memory: SensorMemory, finding: Finding, event_ms: int) -> bool:
        last = memory.last_hit_ms.get(finding.kind)
        memory.last_hit_ms[finding.kind] = event_ms
        return last is None or event_ms - last > self.config.episode_gap_s * 1000

    def _traffic(
        self,
        reading: Mapping[str, Any],
        event_ms: int,
        window: Window | None,
        memory: SensorMemory,
    ) -> list[Finding]:
        c = self.config
        found = []
        sensor = self.sensors.get(reading["sensor_id"], {})
        count = reading["vehicle_count"]
        speed = reading["average_speed_kmh"]
        level = reading["congestion_level"]
        mean_speed = window.mean("average_speed_kmh") if window else speed
        occupancy = window.mean("occupancy_pct") if window else reading["occupancy_pct"]
        if (
            level in c.severe_congestion_levels
            and mean_speed is not None
            and mean_speed < c.severe_congestion_speed_kmh
            and (occupancy or 0.0) >= c.severe_congestion_occupancy_pct
        ):
            ratio = c.severe_congestion_speed_kmh / max(mean_speed, 1.0)
            values = {"congestion_level": level, "window_mean_speed_kmh": mean_speed}
            found.append(Finding("severe_congestion", _severity(ratio), values))
        jammed = mean_speed is not None and mean_speed < c.severe_congestion_speed_kmh
        if not jammed:
            found += self._high_volume(reading, memory, sensor)
        limit = sensor.get("speed_limit_kmh") or c.speed_high_kmh
        too_fast = min(c.speed_high_kmh, c.speed_limit_factor * limit)
        vehicles = window.measures["vehicle_count"].total if window else count
        if (
            mean_speed is not None
            and vehicles >= c.speed_min_vehicles
            and (mean_speed > too_fast or (mean_speed < c.speed_low_kmh and level == "low"))
        ):
            ratio = (
                mean_speed / too_fast
                if mean_speed > too_fast
                else c.speed_low_kmh / max(mean_speed, 1.0)
            )
            values = {"window_mean_speed_kmh": mean_speed, "threshold_kmh": round(too_fast, 1)}
            found.append(Finding("speed_anomaly", _severity(ratio), values))
        return found

    def _high_volume(
        self, reading: Mapping[str, Any], memory: SensorMemory, sensor: Mapping[str, Any]
    ) -> list[Finding]:
        """Recent flow (an average over minutes, not one noisy interval) against capacity."""
        c = self.config
        capacity = sensor.get("capacity_vph")
        interval_s = reading.get("interval_s") or 1.0
        recent = memory.baseline or Running(1 - math.exp(-interval_s / c.flow_recent_s))
        memory.baseline = recent
        recent.update(reading["vehicle_count"])
        flow = recent.mean * 3600 / interval_s
        warming_up = recent.count * interval_s < c.flow_recent_s
        if warming_up or not capacity or flow <= c.high_volume_capacity_factor * capacity:
            return []
        limit = c.high_volume_capacity_factor * capacity
        values = {"recent_flow_vph": round(flow), "threshold_vph": round(limit)}
        return [Finding("high_volume", _severity(flow / limit), values)]

    def _weather(
        self,
        reading: Mapping[str, Any],
        event_ms: int,
        window: Window | None,
        memory: SensorMemory,
    ) -> list[Finding]:
        c = self.config
        found = []
        temperature = reading["temperature_c"]
        if not c.temperature_min_c <= temperature <= c.temperature_max_c:
            span = c.temperature_max_c - c.temperature_min_c
            beyond = max(c.temperature_min_c - temperature, temperature - c.temperature_max_c)
            found.append(
                Finding(
                    "temperature_out_of_range",
                    _severity(1 + 10 * beyond / span),
                    {"temperature_c": temperature},
                )
            )
        previous = memory.previous
        if (
            previous is not None
            and abs(temperature - previous["temperature_c"]) > c.temperature_jump_c
        ):
            found.append(
                Finding(
                    "temperature_jump",
                    "warning",
                    {"temperature_c": temperature, "previous_c": previous["temperature_c"]},
                )
            )
        if reading["humidity_pct"] < c.humidity_min_pct:
            found.append(
                Finding(
                    "humidity_out_of_range", "warning", {"humidity_pct": reading["humidity_pct"]}
                )
            )
        return found

    def _energy(
        self,
        reading: Mapping[str, Any],
        event_ms: int,
        window: Window | None,
        memory: SensorMemory,
    ) -> list[Finding]:
        c = self.config
        found = []
        power = reading["power_kw"]
        baseline = memory.baseline or Running(c.energy_baseline_alpha)
        memory.baseline = baseline
        spiking = (
            baseline.count >= c.energy_baseline_warmup
            and power > c.energy_spike_factor * max(baseline.mean, 1e-3)
        )
        if spiking:
            ratio = power / max(baseline.mean, 1e-3) / c.energy_spike_factor
            found.append(
                Finding(
                    "energy_spike",
                    _severity(ratio),
                    {"power_kw": power, "baseline_kw": round(baseline.mean, 3)},
                )
            )
        else:
            baseline.update(power)
        nominal = self.sensors.get(reading["sensor_id"], {}).get("nominal_voltage_v") or 230.0
        deviation = abs(reading["voltage_v"] - nominal) / nominal * 100
        if deviation > c.voltage_tolerance_pct:
            found.append(
                Finding(
                    "voltage_out_of_tolerance",
                    _severity(deviation / c.voltage_tolerance_pct),
                    {"voltage_v": reading["voltage_v"], "nominal_v": nominal},
                )
            )
        return found

    def _stuck(
        self, reading: Mapping[str, Any], event_ms: int, memory: SensorMemory
    ) -> list[Finding]:
        fields = MEASURES[reading["sensor_type"]]
        values = tuple(reading[name] for name in fields)
        previous = memory.previous
        if previous is not None and values == tuple(previous[name] for name in fields):
            memory.same_count += 1
        else:
            memory.same_count, memory.same_since_ms = 0, event_ms
        stuck_ms = event_ms - memory.same_since_ms
        if (
            memory.same_count + 1 >= self.config.stuck_min_readings
            and stuck_ms >= self.config.stuck_for_s * 1000
            and any(values)
        ):
            values_by_name = dict(zip(fields, values, strict=True))
            return [
                Finding(
                    "stuck_sensor",
                    "warning",
                    {
                        "value": values_by_name,
                        "readings": memory.same_count + 1,
                        "for_s": stuck_ms / 1000,
                    },
                )
            ]
        return []

    def _zscore(self, reading: Mapping[str, Any], memory: SensorMemory) -> list[Finding]:
        value = reading[MAIN_MEASURE[reading["sensor_type"]]]
        stats = memory.stats or Running(self.config.zscore_alpha)
        memory.stats = stats
        score = stats.zscore(value)
        stats.update(value)
        if stats.count > self.config.zscore_warmup and abs(score) > self.config.zscore_threshold:
            return [
                Finding(
                    "zscore_outlier",
                    _severity(abs(score) / self.config.zscore_threshold),
                    {
                        "measure": MAIN_MEASURE[reading["sensor_type"]],
                        "value": value,
                        "zscore": round(score, 2),
                    },
                )
            ]
        return []
