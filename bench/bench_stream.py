"""Stream worker throughput and event-to-anomaly latency.

Pre-loads N readings (default city, 1 s interval) with the simulator's producer, then times
(a) one `StreamWorker` consuming them into a local-folder lake until idle, and (b) the
ceiling: a bare loop that only consumes and decodes the same messages with orjson. Both are
timed from their first batch to their last (the worker's last commit), so the group join
before and the worker's idle wait after are in neither. Prints messages/s for both and the
ratio. Then runs a worker beside `smartcity simulate` live at
2,100 msgs/s with a high anomaly rate and prints p50/p99 of detection time minus event time,
read from the anomalies topic. Run: `make bench` or `python -m bench.bench_stream`.

`--workers 1,2,3` instead measures how the group scales: for each N, N `smartcity stream`
processes in one consumer group over the same preloaded backlog (fresh topics each time),
timed from the first offset commit to the one that covers the whole backlog (and from the
spawn, start-up and group join included).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path

import orjson
from confluent_kafka import Consumer, TopicPartition

from bench.bench_simulator import REPLAY_BEHIND_S, broker, fresh_topics, simulation
from simulator.producer import ReadingProducer
from simulator.registry import build_registry, registry_table
from smartcity.kafka import client_config
from smartcity.lake import Lake
from smartcity.registry import import_registry, sensors_by_id
from smartcity.settings import SENSOR_TYPES, Settings
from smartcity_stream.rules import RuleConfig
from smartcity_stream.worker import StreamWorker, WorkerOptions

LIVE_WARMUP_S = 5.0

IDLE_S = 2.0


def preload(settings: Settings, messages: int) -> int:
    producer = ReadingProducer(settings)
    sim = simulation()
    while producer.produced < messages:
        for batch in sim.next_step():
            producer.send(batch)
    assert producer.flush(120) == 0
    return producer.acknowledged


def worker_rate(
    settings: Settings, lake: Path, batch_size: int, land_messages: int
) -> tuple[int, float, float]:
    """Messages, seconds from first batch to last commit, and seconds of the whole run
    (start-up and group join included, the idle wait at the end not)."""
    options = WorkerOptions(
        batch_size=batch_size,
        land_messages=land_messages,
        until_idle_s=IDLE_S,
        group_id=f"bench-{uuid.uuid4().hex[:6]}",
    )
    local = settings.model_copy(
        update={"lake_uri": lake.as_uri(), "event_time_behind_s": REPLAY_BEHIND_S}
    )
    worker = StreamWorker(local, sensors_by_id(registry_table(build_registry())), options)
    started = time.perf_counter()
    totals = worker.run()
    assert totals.first_batch_at is not None and totals.last_batch_at is not None
    busy = totals.last_batch_at - totals.first_batch_at
    return totals.consumed, busy, totals.last_batch_at - started


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


def live_latency(settings: Settings, lake: Path, seconds: int, anomaly_rate: float) -> list[float]:
    """Anomaly latencies (s) with a worker following a live simulation at 2,100 msgs/s.

    The baselines judge nothing in their first 30 minutes of event time, longer than the
    run: the live worker's warm-up is cut to 5 s, so that what it times is the path from a
    reading to its anomaly, not the learning."""
    options = WorkerOptions(
        group_id=f"bench-live-{uuid.uuid4().hex[:6]}",
        rules=RuleConfig(baseline_warmup_s=LIVE_WARMUP_S),
    )
    local = settings.model_copy(update={"lake_uri": lake.as_uri()})
    worker = StreamWorker(local, sensors_by_id(registry_table(build_registry())), options)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    env = {
        **os.environ,
        "SMARTCITY_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "SMARTCITY_TOPIC_PREFIX": settings.topic_prefix,
        "SMARTCITY_LAKE_URI": lake.as_uri(),
    }
    subprocess.run(
        [
            str(Path(sys.executable).parent / "smartcity"),
            "simulate",
            "--duration",
            str(seconds),
            "--rate",
            "2100",
            "--anomaly-rate",
            str(anomaly_rate),
            "--no-progress",
        ],
        env=env,
        check=True,
        capture_output=True,
    )
    time.sleep(3)
    worker.request_stop()
    thread.join(60)
    consumer = Consumer(
        client_config(
            settings,
            **{
                "group.id": f"bench-anomalies-{uuid.uuid4().hex[:6]}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            },
        )
    )
    consumer.subscribe([settings.topic("anomalies")])
    latencies, idle = [], 0
    while idle < 3:
        batch = consumer.consume(5000, timeout=1.0)
        idle = 0 if batch else idle + 1
        for message in batch:
            anomaly = orjson.loads(message.value())
            latencies.append(_seconds(anomaly["detected_at"]) - _seconds(anomaly["event_time"]))
    consumer.close()
    return sorted(latencies)


def group_rate(settings: Settings, lake: Path, workers: int, messages: int) -> tuple[float, float]:
    """Seconds from the first commit to the last, and from the spawn to the last, for
    `workers` worker processes of one group draining a backlog of `messages`."""
    topics = fresh_topics(settings)
    loaded = preload(topics, messages)
    local = topics.model_copy(update={"lake_uri": lake.as_uri()})
    import_registry(Lake.from_settings(local), registry_table(build_registry()))
    group = f"bench-group-{uuid.uuid4().hex[:6]}"
    env = {
        **os.environ,
        "SMARTCITY_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "SMARTCITY_TOPIC_PREFIX": topics.topic_prefix,
        "SMARTCITY_LAKE_URI": lake.as_uri(),
        "SMARTCITY_EVENT_TIME_BEHIND_S": str(REPLAY_BEHIND_S),
    }
    command = [str(Path(sys.executable).parent / "smartcity"), "stream", "--group-id", group]
    command += ["--until-idle", str(IDLE_S), "--metrics-port", "0"]
    started = time.perf_counter()
    processes = [
        subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for _ in range(workers)
    ]
    watcher = Consumer(client_config(settings, **{"group.id": group}))
    partitions = [
        TopicPartition(topics.reading_topic(t), p)
        for t in SENSOR_TYPES
        for p in range(topics.topic_partitions)
    ]
    first = None
    while True:
        committed = sum(max(tp.offset, 0) for tp in watcher.committed(partitions, timeout=30))
        now = time.perf_counter()
        if committed and first is None:
            first = now
        if committed >= loaded:
            break
        time.sleep(0.05)
    watcher.close()
    for process in processes:
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr.decode()[-2000:]
    assert first is not None
    return now - first, now - started


def _seconds(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _percentile(values: list[float], share: float) -> float:
    return values[min(len(values) - 1, int(share * len(values)))] if values else float("nan")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=500_000)
    parser.add_argument("--live-seconds", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=WorkerOptions.batch_size)
    parser.add_argument("--land-messages", type=int, default=WorkerOptions.land_messages)
    parser.add_argument(
        "--anomaly-rate",
        type=float,
        default=20.0,
        help="planted anomalies per sensor and hour in the live run (more: a steadier p99)",
    )
    parser.add_argument(
        "--workers",
        help="comma-separated worker counts (1,2,3): measure the group's scaling instead",
    )
    args = parser.parse_args(argv)
    if args.workers:
        scaling(args.messages, [int(n) for n in args.workers.split(",")])
        return
    with broker() as settings, tempfile.TemporaryDirectory(prefix="smartcity-lake-") as lake:
        topics = fresh_topics(settings)
        loaded = preload(topics, args.messages)
        worker_n, worker_s, whole_s = worker_rate(
            topics, Path(lake), args.batch_size, args.land_messages
        )
        bare_n, bare_s = bare_rate(topics, loaded)
        latencies = live_latency(
            fresh_topics(settings), Path(lake) / "live", args.live_seconds, args.anomaly_rate
        )
    worker, bare = worker_n / worker_s, bare_n / bare_s
    print(f"stream worker : {worker_n:>9,} msgs in {worker_s:6.2f} s = {worker:>9,.0f} msgs/s")
    print(f"  whole run   : {whole_s:6.2f} s with start-up = {worker_n / whole_s:>9,.0f} msgs/s")
    print(f"bare consume  : {bare_n:>9,} msgs in {bare_s:6.2f} s = {bare:>9,.0f} msgs/s")
    print(f"ratio         : worker at {worker / bare:.0%} of the ceiling (target >= 60,000 msgs/s)")
    p50, p99 = (_percentile(latencies, share) * 1000 for share in (0.5, 0.99))
    print(
        f"live 2,100/s  : {len(latencies)} anomalies, event-to-anomaly p50 {p50:.0f} ms, "
        f"p99 {p99:.0f} ms (target p99 < 250 ms)"
    )


def scaling(messages: int, counts: list[int]) -> None:
    print(f"{os.cpu_count()} cores; backlog of {messages:,} readings per run")
    with broker() as settings:
        for workers in counts:
            with tempfile.TemporaryDirectory(prefix="smartcity-lake-") as lake:
                busy, whole = group_rate(settings, Path(lake), workers, messages)
            print(
                f"{workers} worker(s): {messages / busy:>9,.0f} msgs/s first to last commit "
                f"({busy:6.2f} s), {messages / whole:>9,.0f} msgs/s from the spawn ({whole:6.2f} s)"
            )


if __name__ == "__main__":
    main()
