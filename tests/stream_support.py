"""Test helpers shared by the stream tests: produce simulated readings, read the landing."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.dataset as ds
from confluent_kafka import Consumer, Message, Producer, TopicPartition

from simulator.faults import FAULT_KINDS, INTACT, FaultConfig
from simulator.registry import build_registry
from simulator.simulation import Simulation, SimulationConfig
from smartcity.contract import ContractError, ReadingDecoder
from smartcity.ingest import produce
from smartcity.kafka import client_config
from smartcity.lake import Lake
from smartcity.layout import LANDING, live_key
from smartcity.registry import import_registry, sensors_by_id
from smartcity.settings import SENSOR_TYPES, Settings
from smartcity_stream.progress import OwnerMark

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
    pauses: Mapping[int, Callable[[], None]] | None = None,
) -> Produced:
    """The simulation's messages sent step after step; `pauses[step]` runs before that
    step is sent, once everything before it is acknowledged."""
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

    for step in range(steps):
        if pauses and step in pauses:
            assert producer.flush(60) == 0
            pauses[step]()
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
        SMARTCITY_EVENT_TIME_BEHIND_S=str(settings.event_time_behind_s),
    )
    if settings.s3_endpoint:
        env.update(
            SMARTCITY_S3_ENDPOINT=settings.s3_endpoint,
            SMARTCITY_S3_ACCESS_KEY=settings.s3_access_key.get_secret_value(),
            SMARTCITY_S3_SECRET_KEY=settings.s3_secret_key.get_secret_value(),
        )
    return env


def start_worker(
    settings: Settings, *args: str, log: Path | None = None
) -> subprocess.Popen[bytes]:
    """`smartcity stream` with `args`; its stderr piped, or into the file `log` (a worker
    that runs long logs more than a pipe holds while nobody reads it)."""
    return subprocess.Popen(
        [SMARTCITY, "stream", "--metrics-port", "0", *args],
        env=worker_env(settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE if log is None else log.open("wb"),
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


def for_this_run(services: Settings) -> Settings:
    """`services` with this test run's own topic prefix and bucket, topics and bucket created:
    services shared by test runs never show a run what an earlier one left."""
    from smartcity.lake import s3_filesystem
    from smartcity.topics import create_topics

    run = uuid.uuid4().hex[:8]
    settings = services.model_copy(
        update={"topic_prefix": f"test-{run}.", "lake_uri": f"s3://test-{run}/lake"}
    )
    create_topics(settings)
    s3_filesystem(settings).create_dir(f"test-{run}")
    return settings


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


def consume_all(
    settings: Settings, topic: str | list[str], group_id: str, idle_s: int = 5
) -> list[Message]:
    """Every message of `topic` (or topics) from the start, until quiet for `idle_s`."""
    consumer = Consumer(
        client_config(
            settings,
            **{"group.id": group_id, "auto.offset.reset": "earliest", "enable.auto.commit": False},
        )
    )
    consumer.subscribe([topic] if isinstance(topic, str) else topic)
    found: list[Message] = []
    idle = 0
    while idle < idle_s:
        batch = consumer.consume(5000, timeout=1.0)
        idle = 0 if batch else idle + 1
        found += [message for message in batch if message.error() is None]
    consumer.close()
    return found


def start_simulator(
    settings: Settings, seconds: int, rate: int, faults: str, summary: Path
) -> subprocess.Popen[bytes]:
    """`smartcity simulate` live for `seconds` at `rate` msgs/s, its summary to `summary`;
    the default city is in the lake as the registry before it returns (workers need it)."""
    import_registry(Lake.from_settings(settings), build_registry().table())
    return subprocess.Popen(
        [
            *(SMARTCITY, "simulate", "--duration", f"{seconds}s", "--rate", str(rate)),
            *("--faults", faults, "--summary", str(summary), "--no-progress"),
        ],
        env=worker_env(settings),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


Coordinate = tuple[str, int, int]  # sensor type, Kafka partition, offset


@dataclass
class LogCensus:
    """The reading topics as the broker holds them, split the way the worker must split
    them: valid readings (to land) and the rest (to the dead-letter topic)."""

    valid: dict[Coordinate, tuple[str, int]] = field(default_factory=dict)
    invalid: set[Coordinate] = field(default_factory=set)


def log_census(settings: Settings, group_id: str) -> LogCensus:
    """Every message of the reading topics, checked as the worker checks it."""
    decoder = ReadingDecoder()
    known = set(sensors_by_id(build_registry().table()))
    types = {settings.reading_topic(t): t for t in SENSOR_TYPES}
    census = LogCensus()
    for message in consume_all(settings, list(types), group_id):
        where = (types[message.topic()], message.partition(), message.offset())
        try:
            reading = decoder.decode(message.value() or b"")
        except ContractError:
            census.invalid.add(where)
            continue
        if reading["sensor_type"] != where[0] or reading["sensor_id"] not in known:
            census.invalid.add(where)
        else:
            census.valid[where] = (reading["sensor_id"], reading["seq"])
    return census


def dead_letter_sources(settings: Settings, group_id: str) -> set[Coordinate]:
    """Where each dead letter came from (a replay may have sent one twice: a set)."""
    types = {settings.reading_topic(t): t for t in SENSOR_TYPES}
    sources = set()
    for message in consume_all(settings, settings.topic("deadletter"), group_id):
        headers = {k: v.decode() for k, v in message.headers() or []}
        assert headers["reason"] and headers["error"]
        sources.add(
            (
                types[headers["source_topic"]],
                int(headers["source_partition"]),
                int(headers["source_offset"]),
            )
        )
    return sources


def kafka_coordinates(rows: pa.Table) -> list[tuple[str, int, int]]:
    """(sensor type, partition, offset) of each landed row: where Kafka holds it."""
    columns = ("sensor_type", "kafka_partition", "kafka_offset")
    return list(zip(*(rows[name].to_pylist() for name in columns), strict=True))


def assert_landed_exactly_once(settings: Settings, census: LogCensus) -> pa.Table:
    """Every valid reading of the log landed once, by (sensor_id, seq) and by Kafka
    coordinate, nothing else landed, and no landing file name appears twice."""
    files, tables = landed(Lake.from_settings(settings))
    rows = pa.concat_tables(tables)
    coordinates = kafka_coordinates(rows)
    assert len(coordinates) == len(set(coordinates)), "a Kafka offset was landed twice"
    assert set(coordinates) == set(census.valid), "landed offsets differ from the log's"
    pairs = set(zip(rows["sensor_id"].to_pylist(), rows["seq"].to_pylist(), strict=True))
    assert pairs == set(census.valid.values()), "landed readings differ from the log's"
    names = [(path.split("landing/")[1].split("/")[0], path.rsplit("/", 1)[1]) for path in files]
    assert len(names) == len(set(names)), "a landing file name appears twice"
    return rows


def assert_acknowledged_landed(summary: Path, rows: pa.Table) -> None:
    """What the simulator's broker acknowledged is all in the landing: per topic at least
    as many distinct readings, and every sensor up to its last acknowledged seq."""
    data = orjson.loads(summary.read_bytes())
    pairs = set(zip(rows["sensor_id"].to_pylist(), rows["seq"].to_pylist(), strict=True))
    assert data["unconfirmed"] == 0 and not data["delivery_errors"], data
    for sensor_type, topic in data["topics"].items():
        distinct = sum(1 for sensor, _ in pairs if sensor.lower().startswith(sensor_type))
        assert distinct >= topic["readings_acknowledged"], sensor_type
    landed_last: dict[str, int] = {}
    for sensor, seq in pairs:
        landed_last[sensor] = max(seq, landed_last.get(sensor, seq))
    for sensor, seq in data["last_acknowledged_seq"].items():
        assert landed_last.get(sensor, -1) >= seq, f"{sensor}: seq {seq} acknowledged, not landed"


def committed_marks(
    settings: Settings, group_id: str
) -> dict[tuple[str, int], tuple[int, OwnerMark]]:
    """The group's committed offset and owner mark of every reading partition."""
    consumer = Consumer(client_config(settings, **{"group.id": group_id}))
    topics = [settings.reading_topic(t) for t in SENSOR_TYPES]
    partitions = [
        TopicPartition(topic, partition)
        for topic in topics
        for partition in consumer.list_topics(topic, timeout=30).topics[topic].partitions
    ]
    committed = consumer.committed(partitions, timeout=30)
    consumer.close()
    return {
        (tp.topic, tp.partition): (tp.offset, OwnerMark.decode(tp.metadata)) for tp in committed
    }


BACKFILL_BEHIND_S = 20 * 365 * 86_400.0
"""Tests replay fixed past days now, which is a backfill: the shared services' settings (and
so every worker started from them) take readings dated up to 20 years before their broker
timestamp (`Settings.event_time_behind_s`); the bad-clock tests go back to the default."""


def live_start_ms(interval_ms: int) -> int:
    """The next step of the interval grid from now: readings dated as a live sensor's."""
    return -(-time.time_ns() // 1_000_000 // interval_ms) * interval_ms


def produce_messages(
    settings: Settings, messages: list[tuple[str, bytes | None, bytes]], **config: object
) -> list[tuple[str, int, int]]:
    """Send each (topic, key, value) as it is (librdkafka `config` over the defaults);
    where the broker put each one, as (topic, partition, offset), in the order sent."""
    producer = Producer(client_config(settings, **{"enable.idempotence": True, **config}))
    placed: dict[int, tuple[str, int, int]] = {}
    errors: list[str] = []

    def delivered(index: int, error: object, message: Message) -> None:
        if error is not None:
            errors.append(str(error))
        else:
            placed[index] = (message.topic(), message.partition(), message.offset())

    for index, (topic, key, value) in enumerate(messages):
        produce(producer, topic, key, value, partial(delivered, index))
        producer.poll(0)
    assert producer.flush(120) == 0
    assert errors == []
    return [placed[index] for index in range(len(messages))]


def worker_status(settings: Settings, worker_id: str) -> dict:
    """The status a worker last wrote into the live state (written at its exit too)."""
    return orjson.loads(Lake.from_settings(settings).read_bytes(live_key(worker_id, "status.json")))
