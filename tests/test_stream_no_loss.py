"""Nothing lost, nothing doubled: the worker killed with SIGKILL again and again."""

from __future__ import annotations

import random
import signal
import time

import pyarrow as pa
import pytest

from smartcity.lake import Lake
from smartcity.settings import Settings
from smartcity_stream.progress import load_all_progress
from tests.stream_support import (
    consume_all,
    isolated,
    kafka_coordinates,
    landed,
    produce_simulation,
    start_worker,
)

pytestmark = pytest.mark.integration

KILLS = 5
FAULTS = (
    "malformed=0.002,missing_field=0.002,wrong_type=0.002,unknown_sensor=0.002,"
    "out_of_range=0.002,duplicate=0.005,late=0.005,out_of_order=0.005"
)


def test_sigkill_loses_and_doubles_nothing(live_settings: Settings) -> None:
    settings = isolated(live_settings, "nl")
    produced = produce_simulation(settings, steps=950, interval_ms=10_000, faults=FAULTS)
    total = len(produced.readings) + len(produced.invalid)
    assert total >= 200_000 * 0.99

    lake = Lake.from_settings(settings)
    rng = random.Random(7)
    committed = 0
    for _ in range(KILLS):
        worker = start_worker(
            settings,
            *("--batch-size", "2000", "--land-messages", "5000", "--worker-id", "nl-worker"),
        )
        committed = _wait_for_progress(lake, committed)
        time.sleep(rng.uniform(0.0, 0.8))
        worker.send_signal(signal.SIGKILL)
        worker.wait(30)
    final = start_worker(settings, "--until-idle", "8", "--worker-id", "nl-worker")
    _, stderr = final.communicate(timeout=600)
    assert final.returncode == 0, stderr.decode()[-2000:]

    files, tables = landed(lake)
    rows = pa.concat_tables(tables)
    pairs = set(zip(rows["sensor_id"].to_pylist(), rows["seq"].to_pylist(), strict=True))
    assert produced.readings <= pairs, "an acknowledged reading is missing from the landing"
    assert len(pairs) == len(produced.readings)

    coordinates = set(kafka_coordinates(rows))
    assert len(coordinates) == rows.num_rows, "a Kafka offset was landed twice"
    names = [(path.split("landing/")[1].split("/")[0], path.rsplit("/", 1)[1]) for path in files]
    assert len(names) == len(set(names)), "a landing file name appears twice"

    assert set(produced.invalid) <= _dead_letters(settings)


def _wait_for_progress(lake: Lake, committed_before: int) -> int:
    """Block until the worker has committed more than before: a kill then lands mid-flow."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        committed = sum(p.committed_offset for p in load_all_progress(lake))
        if committed > committed_before:
            return committed
        time.sleep(0.2)
    raise AssertionError("the worker made no progress within 120 s")


def _dead_letters(settings: Settings) -> set[bytes]:
    values: set[bytes] = set()
    for message in consume_all(settings, settings.topic("deadletter"), "nl-dlq", idle_s=8):
        headers = dict(message.headers() or [])
        assert headers["reason"] and headers["error"] and headers["source_topic"]
        values.add(message.value())
    return values
