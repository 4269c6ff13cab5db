"""A worker killed mid-day and restarted finds the anomalies an uninterrupted one finds.

Six hours of the city every minute from 05:00 UTC, anomalies planted. One worker reads it
all in one go into a lake of its own. Another (its own group and lake) follows the same
topics live: it lands the first four hours, is killed with SIGKILL while the next half
hour streams in, with up to 5 s of detected readings not yet committed, and is started
again once the day is in. Its second run restores each partition's detection checkpoint
(baselines, runs, open episodes, open windows) at the committed offset and replays from
there, so both lakes hold the same anomalies, with the same ids, none twice. Without the
checkpoint the restarted worker would learn its baselines again for half an hour and miss
what falls in them.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pyarrow.dataset as ds
import pytest
from confluent_kafka import Consumer, TopicPartition

from simulator.registry import build_registry
from smartcity.kafka import client_config
from smartcity.lake import Lake
from smartcity.layout import LANDING, STATE
from smartcity.registry import import_registry
from smartcity.settings import SENSOR_TYPES, Settings
from tests.stream_support import committed_marks, isolated, produce_simulation, start_worker

pytestmark = pytest.mark.integration

INTERVAL_MS = 60_000
STEPS = 360
LANDED_FIRST = 240
KILLED_AT = 270
START_MS = 1_795_755_600_000  # 2026-11-27T05:00:00Z
KEY = ["anomaly_id", "sensor_id", "kind", "severity", "event_time", "window_start", "window_end"]


def _ends(settings: Settings) -> dict[tuple[str, int], int]:
    consumer = Consumer(client_config(settings, **{"group.id": "restart-ends"}))
    ends = {}
    for sensor_type in SENSOR_TYPES:
        topic = settings.reading_topic(sensor_type)
        for partition in consumer.list_topics(topic, timeout=30).topics[topic].partitions:
            _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), 30)
            ends[(topic, partition)] = high
    consumer.close()
    return ends


def _wait_committed(settings: Settings, group_id: str, timeout_s: float = 300) -> None:
    """Until the group has committed every reading partition to its end."""
    ends = _ends(settings)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        marks = committed_marks(settings, group_id)
        if all(marks[tp][0] >= end for tp, end in ends.items()):
            return
        time.sleep(0.5)
    raise AssertionError(f"{group_id} did not commit up to {ends}")


def _anomalies(lake: Lake) -> list[tuple]:
    files = [
        info.path
        for info in lake.list_files(f"{LANDING}/anomalies")
        if info.path.endswith(".parquet")
    ]
    table = ds.dataset(files, filesystem=lake.filesystem, format="parquet").to_table(columns=KEY)
    return sorted(zip(*(table.column(name).to_pylist() for name in KEY), strict=True))


def test_a_killed_and_restarted_worker_finds_what_an_uninterrupted_one_finds(
    live_settings: Settings, tmp_path: Path
) -> None:
    settings = isolated(live_settings, "restart")
    whole = settings.model_copy(update={"lake_uri": f"{settings.lake_uri}-whole"})
    import_registry(Lake.from_settings(whole), build_registry().table())
    follower_args = ("--group-id", "restart-killed", "--land-after", "5", "--session-timeout", "6")
    killed = {}

    def land_the_first_hours() -> None:
        killed["worker"] = start_worker(settings, *follower_args, log=tmp_path / "first.log")
        _wait_committed(settings, "restart-killed")

    def kill() -> None:
        time.sleep(1.0)  # rounds of the streaming half hour detected, not all committed
        killed["worker"].send_signal(signal.SIGKILL)
        killed["worker"].wait(30)

    produced = produce_simulation(
        settings,
        steps=STEPS,
        interval_ms=INTERVAL_MS,
        start_ms=START_MS,
        anomaly_rate_per_hour=1.0,
        pauses={LANDED_FIRST: land_the_first_hours, KILLED_AT: kill},
    )
    assert killed["worker"].returncode == -signal.SIGKILL
    state = Lake.from_settings(settings).list_files(STATE)
    assert state, "the killed worker left no detection checkpoint"

    restarted = start_worker(settings, *follower_args, "--until-idle", "6")
    _, stderr = restarted.communicate(timeout=600)
    assert restarted.returncode == 0, stderr.decode()[-2000:]
    assert b"detection restored at offset" in stderr
    uninterrupted = start_worker(whole, "--group-id", "restart-whole", "--until-idle", "6")
    _, stderr = uninterrupted.communicate(timeout=600)
    assert uninterrupted.returncode == 0, stderr.decode()[-2000:]

    expected = _anomalies(Lake.from_settings(whole))
    found = _anomalies(Lake.from_settings(settings))
    killed_ms = START_MS + LANDED_FIRST * INTERVAL_MS
    after_kill = [a for a in expected if a[4].timestamp() * 1000 >= killed_ms]
    print(f"{len(expected)} anomalies, {len(after_kill)} after the kill; planted", end=" ")
    print(len(produced.planted))
    assert len(after_kill) >= 10
    assert len({a[0] for a in found}) == len(found), "an anomaly landed twice"
    assert found == expected
