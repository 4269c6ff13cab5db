"""Stream worker throughput: one worker through validation, landing, windows and rules.

Pre-loads N readings (default city, 1 s interval) with the simulator's producer, then times
(a) one `StreamWorker` consuming them into a local-folder lake until idle, and (b) the
ceiling: a bare loop that only consumes and decodes the same messages with orjson. Prints
messages/s for both and the ratio. Run: `make bench` or `python -m bench.bench_stream`.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from pathlib import Path

import orjson
from confluent_kafka import Consumer

from bench.bench_simulator import broker, fresh_topics, simulation
from simulator.producer import ReadingProducer
from simulator.registry import build_registry, registry_table
from smartcity.kafka import client_config
from smartcity.settings import SENSOR_TYPES, Settings
from smartcity_stream.sensors import sensors_by_id
from smartcity_stream.worker import StreamWorker, WorkerOptions

IDLE_S = 2.0


def preload(settings: Settings, messages: int) -> int:
    producer = ReadingProducer(settings)
    sim = simulation()
    while producer.produced < messages:
        for batch in sim.next_step():
            producer.send(batch)
    assert producer.flush(120) == 0
    return producer.acknowledged


def worker_rate(settings: Settings, lake: Path) -> tuple[int, float]:
    options = WorkerOptions(until_idle_s=IDLE_S, group_id=f"bench-{uuid.uuid4().hex[:6]}")
    local = settings.model_copy(update={"lake_uri": lake.as_uri()})
    worker = StreamWorker(local, sensors_by_id(registry_table(build_registry())), options)
    started = time.perf_counter()
    totals = worker.run()
    return totals.consumed, time.perf_counter() - started - IDLE_S


def bare_rate(settings: Settings, expected: int) -> tuple[int, float]:
    consumer = Consumer(
        client_config(
            settings,
            **{
                "group.id": f"bench-bare-{uuid.uuid4().hex[:6]}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            },
        )
    )
    consumer.subscribe([settings.reading_topic(t) for t in SENSOR_TYPES])
    seen = 0
    started = None
    while seen < expected:
        batch = consumer.consume(10_000, timeout=1.0)
        if batch and started is None:
            started = time.perf_counter()
        for message in batch:
            orjson.loads(message.value())
        seen += len(batch)
    elapsed = time.perf_counter() - (started or time.perf_counter())
    consumer.close()
    return seen, elapsed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=500_000)
    args = parser.parse_args(argv)
    with broker() as settings, tempfile.TemporaryDirectory(prefix="smartcity-lake-") as lake:
        topics = fresh_topics(settings)
        loaded = preload(topics, args.messages)
        worker_n, worker_s = worker_rate(topics, Path(lake))
        bare_n, bare_s = bare_rate(topics, loaded)
    worker, bare = worker_n / worker_s, bare_n / bare_s
    print(f"stream worker : {worker_n:>9,} msgs in {worker_s:6.2f} s = {worker:>9,.0f} msgs/s")
    print(f"bare consume  : {bare_n:>9,} msgs in {bare_s:6.2f} s = {bare:>9,.0f} msgs/s")
    print(f"ratio         : worker at {worker / bare:.0%} of the ceiling (target >= 50,000 msgs/s)")


if __name__ == "__main__":
    main()
