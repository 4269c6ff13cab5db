"""The worker never stops: a storage outage pauses it in its group, SIGTERM lands and
commits what it holds, a flood of bad messages goes to the dead-letter topic while the
readings land (docs/stream.md, "Storage outages and stops")."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from pydantic import SecretStr

from simulator.registry import build_registry
from simulator.simulation import Simulation, SimulationConfig
from smartcity.kafka import admin_client
from smartcity.lake import Lake, s3_filesystem
from smartcity.registry import RegistryFollower, import_registry
from smartcity.services import minio_server
from smartcity.services.processes import ServiceRecord, family, terminate
from smartcity.settings import SENSOR_TYPES, Settings
from smartcity_stream.progress import load_all_progress
from smartcity_stream.worker import StreamWorker, WorkerOptions
from tests.stream_support import (
    assert_acknowledged_landed,
    assert_landed_exactly_once,
    committed_marks,
    consume_all,
    isolated,
    live_start_ms,
    log_census,
    produce_messages,
    start_simulator,
    start_worker,
    worker_status,
)

pytestmark = pytest.mark.integration

OUTAGE_S = 30
INTERVAL_MS = 10_000
Message = tuple[str, bytes | None, bytes]  # topic, key, value


def test_minio_stopped_for_30_s_loses_nothing_and_the_worker_stays_in_its_group(
    live_settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A live simulation into a worker whose lake is a MinIO of this test's own; once the
    worker has landed, MinIO is stopped (SIGSTOP) for 30 s, then resumed. The worker may
    go 15 s without a consume before the group drops it, half the outage: it stays the
    group's one member throughout, with the same member id, lands every reading the
    simulator had acknowledged exactly once, and leaves on its own."""
    caplog.set_level(logging.INFO, logger="smartcity.stream")
    minio = minio_server.start(live_settings.model_copy(update={"runtime_dir": tmp_path}))
    try:
        settings = _on_own_minio(isolated(live_settings, "outage"), minio)
        group = f"{settings.topic_prefix}stream"
        summary = tmp_path / "summary.json"
        simulator = start_simulator(settings, 45, 500, "", summary)
        worker = _worker_in_thread(settings, group)
        lake = Lake.from_settings(settings)
        _wait_until(lambda: any(p.committed_offset for p in load_all_progress(lake)), 60)
        members = [_member_ids(settings, group)]
        os.kill(minio.pid, signal.SIGSTOP)
        try:
            stopped_at = time.monotonic()
            while time.monotonic() - stopped_at < OUTAGE_S:
                time.sleep(3)
                members.append(_member_ids(settings, group))
        finally:
            os.kill(minio.pid, signal.SIGCONT)
        _, simulator_err = simulator.communicate(timeout=120)
        assert simulator.returncode == 0, simulator_err.decode()[-2000:]
        worker.join(180)
        assert not worker.is_alive(), "the worker did not leave when idle"
        assert worker.error is None, worker.error

        assert len(members[0]) == 1 and all(m == members[0] for m in members), members
        # A worker the group dropped would have its partitions revoked or lost and assigned
        # again; the one revocation allowed is the worker's own, when it leaves.
        log = [record.getMessage() for record in caplog.records]
        assert sum(line.startswith("assigned") for line in log) == 1, log
        assert sum(line.startswith("revoked") for line in log) <= 1, log
        assert not [line for line in log if line.startswith("lost")], log
        assert any("partitions paused" in line for line in log), "the outage paused nothing"
        assert any("partitions resumed" in line for line in log)
        census = log_census(settings, f"{group}-census")
        rows = assert_landed_exactly_once(settings, census)
        assert_acknowledged_landed(summary, rows)
    finally:
        with_stopped = family(minio.pid)
        for process in with_stopped:
            process.resume()
        terminate(with_stopped, 10)


def test_sigterm_lands_what_the_worker_holds_commits_and_exits_0(
    live_settings: Settings, tmp_path: Path
) -> None:
    """A worker that lands only every 10 minutes follows a live simulation; SIGTERM while
    it consumes: it lands every row it holds, commits each partition right after its last
    consumed message and exits 0. A restart goes on from there and lands nothing twice."""
    settings = isolated(live_settings, "term")
    group = f"{settings.topic_prefix}stream"
    summary = tmp_path / "summary.json"
    simulator = start_simulator(settings, 15, 500, "", summary)
    args = ("--group-id", group, "--worker-id", "term-worker")
    worker = start_worker(settings, *args, "--land-after", "600", "--land-messages", "1000000")
    try:
        _wait_until(lambda: _status(settings).get("consumed", 0) >= 2000, 60)
        assert _status(settings)["landed"] == 0, "the worker landed before SIGTERM"
        worker.send_signal(signal.SIGTERM)
        _, stderr = worker.communicate(timeout=120)
        assert worker.returncode == 0, stderr.decode()[-2000:]
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(30)
    status = worker_status(settings, "term-worker")
    assert status["landed"] == status["consumed"] > 0, status
    marks = committed_marks(settings, group)
    assert sum(max(offset, 0) for offset, _ in marks.values()) == status["consumed"]
    assert all(mark.pending is None for _, mark in marks.values())

    _, simulator_err = simulator.communicate(timeout=120)
    assert simulator.returncode == 0, simulator_err.decode()[-2000:]
    restart = start_worker(settings, *args, "--until-idle", "5")
    _, stderr = restart.communicate(timeout=300)
    assert restart.returncode == 0, stderr.decode()[-2000:]
    census = log_census(settings, f"{group}-census")
    rows = assert_landed_exactly_once(settings, census)
    assert_acknowledged_landed(summary, rows)


def test_a_flood_of_100_000_bad_messages_is_dead_lettered_while_readings_land(
    live_settings: Settings,
) -> None:
    """100,000 bad messages of four kinds (malformed JSON, out of contract, an unknown
    sensor, a reading on another type's topic) mixed into live readings of every type: each
    is in the dead-letter topic once, with its reason; every reading is landed once."""
    settings = isolated(live_settings, "flood100k")
    group = f"{settings.topic_prefix}stream"
    readings = _live_readings(settings, steps=12)
    bad = _bad_messages(settings, readings, 100_000)
    flood = list(bad)
    stride = -(-len(flood) // len(readings))
    messages = [
        message
        for index, reading in enumerate(readings)
        for message in (reading, *flood[index * stride : (index + 1) * stride])
    ]
    placed = produce_messages(settings, messages, **{"linger.ms": 20})
    expected = {
        where: bad[message]
        for where, message in zip(placed, messages, strict=True)
        if message in bad
    }
    assert len(expected) == len(bad)

    worker = start_worker(settings, "--until-idle", "5", "--group-id", group)
    _, stderr = worker.communicate(timeout=600)
    assert worker.returncode == 0, stderr.decode()[-2000:]

    letters = consume_all(settings, settings.topic("deadletter"), f"{group}-dlq")
    got = {}
    for letter in letters:
        headers = {k: v.decode() for k, v in letter.headers() or []}
        assert headers["error"]
        source = headers["source_topic"], int(headers["source_partition"])
        got[(*source, int(headers["source_offset"]))] = headers["reason"]
    assert len(letters) == len(expected), "a dead letter is missing or was sent twice"
    assert got == expected
    census = log_census(settings, f"{group}-census")
    assert len(census.valid) == len(readings)
    assert_landed_exactly_once(settings, census)


class _WorkerThread(threading.Thread):
    """A worker run in this process (so that the test can shorten its poll interval)."""

    def __init__(self, worker: StreamWorker) -> None:
        super().__init__(daemon=True)
        self.worker = worker
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.worker.run()
        except BaseException as error:
            self.error = error


def _worker_in_thread(settings: Settings, group: str) -> _WorkerThread:
    """A worker like `smartcity stream`'s (it follows the registry in the lake too), that
    leaves 5 s after the last message, with a 10 s session and dropped from its group
    after 15 s without a consume."""
    registry = RegistryFollower.start(Lake.from_settings(settings), settings.registry_refresh_s)
    options = WorkerOptions(
        group_id=group,
        until_idle_s=5,
        session_timeout_s=10,
        max_poll_interval_s=15,
    )
    thread = _WorkerThread(
        StreamWorker(settings, registry.current.active_sensors(), options, registry)
    )
    thread.start()
    return thread


def _on_own_minio(settings: Settings, minio: ServiceRecord) -> Settings:
    """`settings` with a lake in a bucket of `minio`, which the test stops and resumes."""
    own = settings.model_copy(
        update={
            "s3_endpoint": minio.env["SMARTCITY_S3_ENDPOINT"],
            "s3_access_key": SecretStr(minio.env["SMARTCITY_S3_ACCESS_KEY"]),
            "s3_secret_key": SecretStr(minio.env["SMARTCITY_S3_SECRET_KEY"]),
            "lake_uri": "s3://outage/lake",
        }
    )
    s3_filesystem(own).create_dir("outage")
    return own


def _member_ids(settings: Settings, group: str) -> list[str]:
    """The group's members as the coordinator describes them (a rejoin gets a new id)."""
    admin = admin_client(settings)
    future = admin.describe_consumer_groups([group], request_timeout=10)[group]
    return sorted(member.member_id for member in future.result(timeout=20).members)


def _status(settings: Settings) -> dict:
    try:
        return worker_status(settings, "term-worker")
    except FileNotFoundError:
        return {}


def _live_readings(settings: Settings, steps: int) -> list[Message]:
    """`steps` live steps of the default city, as (topic, key, value); the registry is
    imported into the lake first, as `simulate` does."""
    registry = build_registry()
    import_registry(Lake.from_settings(settings), registry.table())
    config = SimulationConfig(start_ms=live_start_ms(INTERVAL_MS), interval_ms=INTERVAL_MS)
    simulation = Simulation(registry, config)
    return [
        (settings.reading_topic(batch.sensor_type), key, value)
        for _ in range(steps)
        for batch in simulation.next_step()
        for key, value, _, _ in batch.messages
    ]


def _bad_messages(settings: Settings, readings: list[Message], count: int) -> dict[Message, str]:
    """`count` bad messages, each (topic, key, value), with the reason each is bad; readings
    of the traffic and weather topics serve as templates for the contract-valid ones."""
    traffic, weather = settings.reading_topic("traffic"), settings.reading_topic("weather")
    traffic_reading = next(orjson.loads(v) for t, _, v in readings if t == traffic)
    weather_reading = next(orjson.loads(v) for t, _, v in readings if t == weather)
    bad: dict[Message, str] = {}
    for i in range(count):
        topic = settings.reading_topic(SENSOR_TYPES[i % len(SENSOR_TYPES)])
        kind = i % 4
        if kind == 0:
            bad[topic, b"x", b'{"sensor_id": "TRAFFIC_' + str(i).encode()] = "malformed_json"
        elif kind == 1:
            value = orjson.dumps({"schema_version": 1, "sensor_id": "TRAFFIC_0001", "seq": i})
            bad[topic, b"x", value] = "out_of_contract"
        elif kind == 2:
            value = orjson.dumps({**traffic_reading, "sensor_id": "TRAFFIC_9999", "seq": i})
            bad[traffic, b"TRAFFIC_9999", value] = "unknown_sensor"
        else:
            bad[traffic, b"WEATHER_0000", orjson.dumps({**weather_reading, "seq": i})] = (
                "wrong_topic"
            )
    return bad


def _wait_until(ready: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.3)
    raise AssertionError(f"not ready within {timeout_s:g} s")
