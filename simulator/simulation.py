"""One simulated city stepping through time: registry, models, anomalies, faults, encoding.

A step is one reporting interval: every sensor takes one reading at the same event time.
Readings are computed a block of steps at a time (see `readings`) and handed out step by step. The
step's event time fixes `seq` as the number of intervals since 1970, so `seq` rises by one per
reading, a later run of the same sensors continues above an earlier one, and re-running a
backfill of the same day replays the same readings (same bytes) instead of inventing new ones.
Everything random comes from streams seeded by (seed, sensor type, purpose): the same seed and
start give the same messages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import repeat
from typing import Protocol

import numpy as np

from simulator.anomalies import (
    DEFAULT_RATE_PER_HOUR,
    NO_ANOMALY,
    AnomalyPlan,
    AnomalyPlanner,
    PlantedAnomaly,
)
from simulator.encoding import ENCODERS, Columns, format_event_time
from simulator.faults import INTACT, FaultConfig, FaultInjector, Message
from simulator.patterns import LocalClock
from simulator.readings import EnergyModel, TrafficModel, WeatherModel
from simulator.registry import Registry, WeatherSensors
from smartcity.settings import SENSOR_TYPES

STEP_ORDER = ("weather", "traffic", "energy")  # energy load follows the temperature just made
_MODEL, _ANOMALY, _FAULT, _LIVE = range(4)  # purposes of the random streams


class LiveWeatherSource(Protocol):
    """Replaces some simulated weather readings with observed ones (see `openweather`)."""

    def override(
        self,
        sensors: WeatherSensors,
        columns: Columns,
        eligible: np.ndarray,
        rng: np.random.Generator,
    ) -> None: ...


@dataclass(frozen=True)
class SimulationConfig:
    start_ms: int
    interval_ms: int
    seed: int = 42
    anomaly_rate_per_hour: float = DEFAULT_RATE_PER_HOUR
    faults: FaultConfig = field(default_factory=FaultConfig)

    def __post_init__(self) -> None:
        if self.interval_ms < 1:
            raise ValueError("the reporting interval must be at least 1 ms")

    @property
    def interval_s(self) -> float:
        return self.interval_ms / 1000


@dataclass(frozen=True)
class Batch:
    """The messages of one sensor type at one step, ready for the producer."""

    sensor_type: str
    messages: list[Message]


def block_steps(sensors: int) -> int:
    """Steps computed per block: enough to share numpy's per-call cost, bounded in memory."""
    return max(1, min(64, 16_384 // sensors))


class Simulation:
    def __init__(
        self,
        registry: Registry,
        config: SimulationConfig,
        live_weather: LiveWeatherSource | None = None,
    ) -> None:
        self.registry = registry
        self.config = config
        self._live_weather = live_weather
        interval_s = config.interval_s

        def rng(sensor_type: str, purpose: int) -> np.random.Generator:
            return np.random.default_rng([config.seed, SENSOR_TYPES.index(sensor_type), purpose])

        self._traffic = TrafficModel(registry.traffic, interval_s, rng("traffic", _MODEL))
        self._weather = WeatherModel(
            registry.weather, registry.city, interval_s, rng("weather", _MODEL)
        )
        self._energy = EnergyModel(
            registry.energy, interval_s, config.start_ms, rng("energy", _MODEL)
        )
        self._live_rng = rng("weather", _LIVE)
        self._planners = {
            t: AnomalyPlanner(
                registry.group(t),
                config.anomaly_rate_per_hour,
                config.interval_ms,
                rng(t, _ANOMALY),
            )
            for t in SENSOR_TYPES
        }
        self._injectors = {
            t: FaultInjector(registry.group(t), config.faults, interval_s, rng(t, _FAULT))
            for t in SENSOR_TYPES
        }
        self._block_steps = block_steps(registry.size)
        self._block: dict[str, tuple[Columns, AnomalyPlan]] = {}
        self._row = self._block_steps
        self.step_index = 0

    def time_of(self, step: int) -> int:
        return self.config.start_ms + step * self.config.interval_ms

    def next_step(self) -> list[Batch]:
        """All messages of the next reporting interval, one batch per sensor type."""
        if self._row == self._block_steps:
            self._compute_block()
        step, row, epoch_ms = self.step_index, self._row, self.time_of(self.step_index)
        event_time = format_event_time(epoch_ms)
        seq = epoch_ms // self.config.interval_ms
        batches = []
        for sensor_type in STEP_ORDER:
            block, plan = self._block[sensor_type]
            columns = {name: values[row] for name, values in block.items()}
            group = self.registry.group(sensor_type)
            if sensor_type == "weather" and self._live_weather is not None:
                eligible = plan.kinds[row] == NO_ANOMALY
                self._live_weather.override(group, columns, eligible, self._live_rng)
            values = ENCODERS[sensor_type](
                group.ids, event_time, seq, self.config.interval_s, columns
            )
            injector = self._injectors[sensor_type]
            if injector.enabled:
                messages = injector.apply(step, values, seq)
            else:
                messages = list(zip(group.keys, values, repeat(seq), repeat(INTACT)))
            batches.append(Batch(sensor_type, messages))
        self.step_index += 1
        self._row += 1
        return batches

    def _compute_block(self) -> None:
        """Readings of the next block of steps, anomalies applied, for every sensor type."""
        times = self.time_of(self.step_index) + self.config.interval_ms * np.arange(
            self._block_steps, dtype=np.int64
        )
        clock = LocalClock.at(self.registry.city, times)
        plans = {t: self._planners[t].plan(times) for t in STEP_ORDER}
        weather = self._weather.block(clock, plans["weather"].kinds, plans["weather"].severity)
        blocks = {
            "weather": weather,
            "traffic": self._traffic.block(
                clock, plans["traffic"].kinds, plans["traffic"].severity
            ),
            "energy": self._energy.block(
                clock,
                self._weather.city_temperature_c,
                plans["energy"].kinds,
                plans["energy"].severity,
            ),
        }
        for sensor_type, columns in blocks.items():
            self._planners[sensor_type].hold_stuck(columns, plans[sensor_type])
            self._block[sensor_type] = columns, plans[sensor_type]
        self._planners["traffic"].witness(plans["traffic"], blocks["traffic"]["vehicle_count"])
        self._row = 0

    @property
    def planted(self) -> list[PlantedAnomaly]:
        """Ground truth so far: the closed anomalies of every type (all after `finish`) that
        the readings could show (`AnomalyPlanner.ground_truth`)."""
        return [a for t in STEP_ORDER for a in self._planners[t].ground_truth]

    def finish(self) -> list[Batch]:
        """End of run: release held (late) messages, close the anomalies still under way."""
        end_ms = self.time_of(self.step_index)
        batches = []
        for sensor_type in STEP_ORDER:
            self._planners[sensor_type].close_all(end_ms)
            held = self._injectors[sensor_type].drain(self.step_index - 1)
            batches.append(Batch(sensor_type, held))
        return batches
