"""Test helpers shared by the stream tests: produce simulated readings, read the landing."""

from __future__ import annotations

import os
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.dataset as ds
from confluent_kafka import Consumer, Message, Producer

from simulator.faults import FAULT_KINDS, INTACT, FaultConfig
from simulator.registry import build_registry
from simulator.simulation import Simulation, SimulationConfig
from smartcity.kafka import client_config
from smartcity.lake import Lake
from smartcity.layout import LANDING
from smartcity.registry import import_registry
from smartcity.settings import SENSOR_TYPES, Settings

SMARTCITY = str(Path(__file__).resolve().parents[1] / ".venv" / "bin" / "smartcity")
INVALID_CODES = {FAULT_KINDS.index(kind) + 1 for kind in FAULT_KINDS[:5]}


@dataclass
class Produced:
    """What the broker acknowledged, split the way the worker should split it."""

    readings: set[tuple[str, int]] = field(default_factory=set)
    invalid: list[bytes] = field(default_factory=list)
    faults: Counter[str] = field(default_factory=Counter)
    planted: list = field(default_factory=list)


def produce_simulation(
    settings: Settings,
    steps: int,
    interval_ms: int,
    faults: str = "",
    start_ms: int = 1795737600000,
    anomaly_rate_per_hour: float = 0.05,
) -> Produced:
    config = SimulationConfig(
        start_ms=start_ms,
        interval_ms=interval_ms,
        faults=FaultConfig.parse(faults),
        anomaly_rate_per_hour=anomaly_rate_per_hour,
    )
    registry = build_registry()
    import_registry(Lake.from_settings(settings), registry.table())  # as `simulate` does
    simulation = Simulation(registry, config)
    producer = Producer(client_config(settings, **{"enable.idempotence": True, "linger.ms": 20}))
    produced = Produced()
    errors: list[str] = []

    def send(sensor_type: str, messages: list) -> None:
        for key, value, seq, code in messages:

            def delivered(
                error: object, _message: object, key=key, value=value, seq=seq, code=code
            ) -> None:
                if error is not None:
                    errors.append(str(error))
                elif code in INVALID_CODES:
                    produced.invalid.append(value)
                else:
                    produced.readings.add((key.decode(), seq))
                if code != INTACT:
                    produced.faults[FAULT_KINDS[code - 1]] += 1

            topic = settings.reading_topic(sensor_type)
            while True:
                try:
                    producer.produce(topic, key=key, value=value, on_delivery=delivered)
                    break
                except BufferError:  # the local queue is full: wait for deliveries
                    producer.poll(0.1)
        producer.poll(0)

    for _ in range(steps):
        for batch in simulation.next_step():
            send(batch.sensor_type, batch.messages)
    for batch in simulation.finish():
        send(batch.sensor_type, batch.messages)
    assert producer.flush(60) == 0
    assert errors == []
    produced.planted = simulation.planted
    return produced


def worker_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMARTCITY_")}
    env.update(
        SMARTCITY_KAFKA_BOOTSTRAP=settings.kafka_bootstrap,
        SMARTCITY_TOPIC_PREFIX=settings.topic_prefix,
        SMARTCITY_LAKE_URI=settings.lake_uri,
        SMARTCITY_RUNTIME_DIR=str(settings.runtime_dir),
    )
    if settings.s3_endpoint:
        env.update(
            SMARTCITY_S3_ENDPOINT=settings.s3_endpoint,
            SMARTCITY_S3_ACCESS_KEY=settings.s3_access_key.get_secret_value(),
            SMARTCITY_S3_SECRET_KEY=settings.s3_secret_key.get_secret_value(),
        )
    return env


def start_worker(settings: Settings, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [SMARTCITY, "stream", "--metrics-port", "0", *args],
        env=worker_env(settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def landed(lake: Lake, sensor_type: str | None = None):
    """Every landed row (of one type, or all) as a pyarrow table."""
    types = [sensor_type] if sensor_type else list(SENSOR_TYPES)
    files = [
        info.path
        for t in types
        for info in lake.list_files(f"{LANDING}/{t}")
        if info.path.endswith(".parquet")
    ]
    tables = [
        ds.dataset(files_of_type, filesystem=lake.filesystem, format="parquet").to_table(
            columns=["sensor_id", "sensor_type", "seq", "kafka_partition", "kafka_offset"]
        )
        for files_of_type in _by_type(files)
    ]
    return files, tables


def _by_type(files: list[str]) -> list[list[str]]:
    groups: dict[str, list[str]] = {}
    for path in files:
        groups.setdefault(path.split(f"{LANDING}/")[1].split("/")[0], []).append(path)
    return list(groups.values())


def isolated(settings: Settings, name: str) -> Settings:
    """`settings` with a topic prefix and lake of their own for one test, topics created."""
    from smartcity.topics import create_topics

    own = settings.model_copy(
        update={
            "topic_prefix": f"{settings.topic_prefix}{name}.",
            "lake_uri": f"{settings.lake_uri}-{name}",
        }
    )
    create_topics(own)
    return own


def consume_all(settings: Settings, topic: str, group_id: str, idle_s: int = 5) -> list[Message]:
    """Every message of `topic` from the start, until it has been quiet for `idle_s`."""
    consumer = Consumer(
        client_config(
            settings,
            **{"group.id": group_id, "auto.offset.reset": "earliest", "enable.auto.commit": False},
        )
    )
    consumer.subscribe([topic])
    found: list[Message] = []
    idle = 0
    while idle < idle_s:
        batch = consumer.consume(5000, timeout=1.0)
        idle = 0 if batch else idle + 1
        found += [message for message in batch if message.error() is None]
    consumer.close()
    return found
