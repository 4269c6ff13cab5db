"""Detection quality without a broker: the simulator's readings through the worker's own
windows and rules, in batches as the worker sees them, scored against the planted truth.

The stream tests run the same code through Kafka at one interval; this runs it at many
intervals, seeds and days in seconds, which is what a detector must hold at.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace

import orjson

from simulator.registry import build_registry, registry_table
from simulator.simulation import Simulation, SimulationConfig
from smartcity.contract import ReadingDecoder
from smartcity.registry import sensors_by_id
from smartcity_stream.columns import Readings
from smartcity_stream.landing import rows_to_table
from smartcity_stream.quality import KindQuality, Span, detection_quality
from smartcity_stream.rules import DETECTORS, MEASURES, RuleConfig, RuleEngine
from smartcity_stream.windows import TumblingWindows

BATCH_STEPS = 8
"""Steps per batch: a few thousand readings, what the worker's consume window holds."""


@dataclass
class DetectionRun:
    """What one simulated span produced: planted truth, detections, and sensor-days."""

    interval_s: float
    planted: list[Span]
    detections: list[tuple[str, str, int]]
    sensor_days: dict[str, float]
    cut_ms: int = 0  # the end of the run: a span still going then was cut short

    def quality(self, scored_from_ms: int = 0) -> dict[str, KindQuality]:
        """Scored from `scored_from_ms` on, since baselines give no verdict while they warm
        up: precision over the detections from then on (against every planted span), recall
        over the spans planted from then on and ended before the run (found by any detection)."""
        tolerance_ms = int(self.interval_s * 1000)
        later = [d for d in self.detections if d[2] >= scored_from_ms]
        precise = detection_quality(self.planted, later, tolerance_ms)
        planted_later = [
            span
            for span in self.planted
            if span.start_ms >= scored_from_ms and span.end_ms < self.cut_ms
        ]
        found = detection_quality(planted_later, self.detections, tolerance_ms)
        return {
            kind: replace(
                q, detected=precise[kind].detected, true_positives=precise[kind].true_positives
            )
            for kind, q in found.items()
        }

    def alarms_per_100_sensor_days(self) -> dict[str, float]:
        """Per detector: its detections per 100 sensor-days of the types it judges."""
        counts = Counter(kind for _, kind, _ in self.detections)
        days: Counter[str] = Counter()
        for sensor_type, kinds in DETECTORS.items():
            for kind in kinds:
                days[kind] += self.sensor_days[sensor_type]
        return {kind: 100 * counts[kind] / days[kind] for kind in sorted(days)}


def simulate_detection(
    interval_s: float,
    hours: float,
    start_ms: int,
    seed: int = 42,
    anomaly_rate_per_hour: float = 0.2,
    config: RuleConfig | None = None,
    restart_at_step: int | None = None,
) -> DetectionRun:
    """Run the default city for `hours` from `start_ms` and detect as the worker does.

    With `restart_at_step`, the rules and windows are checkpointed there (through JSON, as
    the lake keeps them) and a fresh engine and windows restored from it go on."""
    registry = build_registry()
    sensors = sensors_by_id(registry_table(registry))
    interval_ms = int(interval_s * 1000)
    simulation = Simulation(
        registry,
        SimulationConfig(
            start_ms=start_ms,
            interval_ms=interval_ms,
            seed=seed,
            anomaly_rate_per_hour=anomaly_rate_per_hour,
        ),
    )
    engine = RuleEngine(config or RuleConfig(), sensors)
    windows = TumblingWindows()
    decoder = ReadingDecoder()
    steps = int(hours * 3600 / interval_s)
    pending: dict[str, list[dict[str, object]]] = {t: [] for t in MEASURES}
    run = DetectionRun(interval_s, [], [], {})

    def detect(sensor_type: str) -> None:
        rows = pending[sensor_type]
        if not rows:
            return
        readings = Readings.from_table(sensor_type, rows_to_table(sensor_type, rows), rows)
        windows.add_batch(sensor_type, readings, MEASURES[sensor_type])
        for row, finding in engine.evaluate_batch(readings):
            run.detections.append(
                (str(rows[row]["sensor_id"]), finding.kind, int(readings.event_ms[row]))
            )
        windows.close_ready()
        pending[sensor_type] = []

    for step in range(steps):
        if step == restart_at_step:
            for sensor_type in MEASURES:
                detect(sensor_type)
            engine, windows = _restarted(engine, windows, config or RuleConfig(), sensors)
        for batch in simulation.next_step():
            pending[batch.sensor_type] += [
                decoder.decode(value) for _, value, _, _ in batch.messages
            ]
        if step % BATCH_STEPS == BATCH_STEPS - 1:
            for sensor_type in MEASURES:
                detect(sensor_type)
    for sensor_type in MEASURES:
        detect(sensor_type)
    simulation.finish()
    days = steps * interval_s / 86400
    run.sensor_days = {t: registry.group(t).size * days for t in MEASURES}
    end_ms = simulation.time_of(steps)
    run.planted = [Span(p.sensor_id, p.kind, p.start_ms, p.end_ms) for p in simulation.planted]
    run.cut_ms = end_ms
    return run


def _restarted(
    engine: RuleEngine,
    windows: TumblingWindows,
    config: RuleConfig,
    sensors: dict[str, dict[str, object]],
) -> tuple[RuleEngine, TumblingWindows]:
    """A new engine and windows from a JSON checkpoint of the old ones."""
    saved = orjson.loads(
        orjson.dumps(
            {
                "rules": engine.export(engine.known_sensors()),
                "windows": {t: windows.export(t) for t in MEASURES},
            },
            option=orjson.OPT_SERIALIZE_NUMPY,
        )
    )
    restored, reopened = RuleEngine(config, sensors), TumblingWindows()
    restored.restore(saved["rules"])
    for sensor_type, state in saved["windows"].items():
        reopened.restore(sensor_type, state)
    return restored, reopened
