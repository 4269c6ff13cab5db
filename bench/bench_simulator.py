"""Simulator throughput: messages/s acknowledged by a real broker, tuned way vs naive way.

Both ways produce the same simulated readings (default city, 1 s interval, backfill style) to
their own fresh topics. The tuned way is `ReadingProducer` (idempotent, lz4, linger, a large
queue, `poll(0)` per batch, delivery accounting). The naive way is what a first prototype does:
`produce` each message, then `flush` after every batch of 210 (one time step of the city).

Uses the broker at SMARTCITY_KAFKA_BOOTSTRAP if set, else starts one with `smartcity.services`
(stopped at the end). Run: `make bench` or `python -m bench.bench_simulator [--messages N]`.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
from confluent_kafka import Producer

from simulator.producer import ReadingProducer
from simulator.registry import build_registry
from simulator.simulation import Simulation, SimulationConfig
from smartcity.kafka import client_config
from smartcity.services import kafka_broker, manager
from smartcity.settings import Settings
from smartcity.topics import create_topics

START_MS = 1_795_737_600_000  # 2026-11-27T00:00:00Z
REPLAY_BEHIND_S = 20 * 365 * 86_400.0
"""The benches' fixed day is sent now, which is a backfill: their workers take readings dated
up to this long before their broker timestamp (`Settings.event_time_behind_s`)."""


@contextmanager
def broker() -> Iterator[Settings]:
    """Settings for a reachable broker: the caller's, or one started for the bench."""
    if os.environ.get("SMARTCITY_KAFKA_BOOTSTRAP"):
        yield Settings(_env_file=None)
        return
    with tempfile.TemporaryDirectory(prefix="smartcity-bench-") as runtime:
        base = Settings(_env_file=None, runtime_dir=Path(runtime))
        records = manager.up(base, [kafka_broker.NAME])
        try:
            env = records[kafka_broker.NAME].env
            yield base.model_copy(update={"kafka_bootstrap": env["SMARTCITY_KAFKA_BOOTSTRAP"]})
        finally:
            manager.down(base)


def fresh_topics(settings: Settings) -> Settings:
    isolated = settings.model_copy(update={"topic_prefix": f"bench-{uuid.uuid4().hex[:8]}."})
    create_topics(isolated)
    return isolated


def simulation(seed: int = 42) -> Simulation:
    config = SimulationConfig(start_ms=START_MS, interval_ms=1000, seed=seed)
    return Simulation(build_registry(), config)


def tuned(settings: Settings, messages: int) -> tuple[int, float]:
    """The simulator's own path: generation, encoding and producing all included."""
    producer = ReadingProducer(settings)
    sim = simulation()
    started = time.perf_counter()
    while producer.produced < messages:
        for batch in sim.next_step():
            producer.send(batch)
    assert producer.flush(120) == 0, "messages left unconfirmed"
    elapsed = time.perf_counter() - started
    assert sum(c.failed for c in producer.counts.values()) == 0
    return producer.acknowledged, elapsed


def naive(settings: Settings, messages: int) -> tuple[int, float]:
    """A first prototype: same readings, but `flush` after every batch of 210 messages."""
    acknowledged = 0

    def delivered(error: object, _message: object) -> None:
        nonlocal acknowledged
        acknowledged += error is None

    producer = Producer(client_config(settings, **{"enable.idempotence": True}))
    sim = simulation()
    produced = 0
    started = time.perf_counter()
    while produced < messages:
        for batch in sim.next_step():
            topic = settings.reading_topic(batch.sensor_type)
            for key, value, _, _ in batch.messages:
                producer.produce(topic, value, key, on_delivery=delivered)
            produced += len(batch.messages)
        producer.flush()  # one step of the default city: 210 messages
    elapsed = time.perf_counter() - started
    return acknowledged, elapsed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2_000_000, help="tuned-way messages")
    parser.add_argument("--naive-messages", type=int, default=500_000, help="naive-way messages")
    args = parser.parse_args(argv)
    machine = f"{psutil.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GB"
    print(f"simulator bench on {platform.machine()} {machine}, Python {platform.python_version()}")
    with broker() as settings:
        fast_n, fast_s = tuned(fresh_topics(settings), args.messages)
        slow_n, slow_s = naive(fresh_topics(settings), args.naive_messages)
    fast, slow = fast_n / fast_s, slow_n / slow_s
    print(f"tuned : {fast_n:>10,} acknowledged in {fast_s:6.2f} s = {fast:>9,.0f} msgs/s")
    print(f"naive : {slow_n:>10,} acknowledged in {slow_s:6.2f} s = {slow:>9,.0f} msgs/s")
    print(f"ratio : {fast / slow:.2f}x (target: >= 100,000 msgs/s tuned)")


if __name__ == "__main__":
    main()
