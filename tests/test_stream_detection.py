"""Detection quality: the worker's anomalies against the simulator's planted ground truth."""

from __future__ import annotations

from datetime import datetime

import orjson
import pytest
from confluent_kafka import Consumer

from smartcity.kafka import client_config
from smartcity.settings import Settings
from smartcity_stream.quality import Span
from smartcity_stream.rules import RuleConfig
from tests.detection_support import DetectionRun
from tests.stream_support import isolated, produce_simulation, start_worker

pytestmark = pytest.mark.integration

INTERVAL_MS = 10_000
STEPS = 720
START_MS = 1_795_755_600_000  # 2026-11-27T05:00:00Z: a Friday's morning rush in the city
FLOOR = 0.9


def _ms(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def test_precision_and_recall_per_planted_kind(live_settings: Settings) -> None:
    """The floors of `test_detection_quality.py`, through Kafka and the worker: scored once
    the baselines have warmed up, over the spans the run did not cut short."""
    settings = isolated(live_settings, "dq")
    produced = produce_simulation(
        settings,
        steps=STEPS,
        interval_ms=INTERVAL_MS,
        start_ms=START_MS,
        anomaly_rate_per_hour=1.0,
    )
    worker = start_worker(settings, "--until-idle", "6")
    _, stderr = worker.communicate(timeout=600)
    assert worker.returncode == 0, stderr.decode()[-2000:]

    run = DetectionRun(
        interval_s=INTERVAL_MS / 1000,
        planted=[Span(p.sensor_id, p.kind, p.start_ms, p.end_ms) for p in produced.planted],
        detections=[
            (a["sensor_id"], a["kind"], _ms(a["event_time"])) for a in _anomalies(settings)
        ],
        sensor_days={},
        cut_ms=START_MS + STEPS * INTERVAL_MS,
    )
    quality = run.quality(START_MS + int(RuleConfig().baseline_warmup_s * 1000))
    for kind, q in quality.items():
        print(
            f"{kind:26} planted {q.planted:4} detected {q.detected:4} "
            f"precision {q.precision:.3f} recall {q.recall:.3f}"
        )
    assert set(quality) == {p.kind for p in produced.planted}
    for kind, q in quality.items():
        assert q.precision >= FLOOR, (kind, q)
        assert q.recall >= FLOOR, (kind, q)


def _anomalies(settings: Settings) -> list[dict[str, object]]:
    consumer = Consumer(
        client_config(
            settings,
            **{
                "group.id": "dq-reader",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            },
        )
    )
    consumer.subscribe([settings.topic("anomalies")])
    found: list[dict[str, object]] = []
    idle = 0
    while idle < 6:
        batch = consumer.consume(5000, timeout=1.0)
        idle = 0 if batch else idle + 1
        found += [orjson.loads(m.value()) for m in batch if m.error() is None]
    consumer.close()
    return found
