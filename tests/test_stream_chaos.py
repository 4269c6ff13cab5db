"""Chaos on the cluster: three workers of one group keep every reading exactly once while
the busiest broker and one worker are killed with SIGKILL.

`smartcity simulate` sends live at 2,100 msgs/s with faults for two minutes to topics
replicated 3 times (2 in sync) on 3 brokers. Meanwhile the broker leading the most
partitions is killed and restarted, and one worker is killed: its partitions go to the
others, which replay its intents. At the end every valid reading of the log is landed once
(by sensor and seq, and by Kafka partition and offset), everything the simulator had
acknowledged among them, every faulty message is in the dead-letter topic, and the two
workers left ran to their end without an error.
"""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

import pytest

from smartcity.lake import Lake
from smartcity.settings import Settings
from smartcity_stream.progress import load_all_progress
from tests.cluster_support import (  # noqa: F401  (session fixtures, used by name)
    busiest_broker,
    cluster,
    cluster_settings,
    kill_broker,
    restart_broker,
)
from tests.stream_support import (
    assert_acknowledged_landed,
    assert_landed_exactly_once,
    dead_letter_sources,
    isolated,
    log_census,
    start_simulator,
    start_worker,
)

pytestmark = pytest.mark.integration

SECONDS = 120
RATE = 2100
FAULTS = (
    "malformed=0.001,missing_field=0.001,wrong_type=0.001,unknown_sensor=0.001,"
    "out_of_range=0.001,duplicate=0.002,late=0.002,out_of_order=0.002"
)
READING_PARTITIONS = 9


def test_brokers_and_workers_die_and_nothing_is_lost_or_doubled(
    cluster_settings: Settings,  # noqa: F811
    tmp_path: Path,
) -> None:
    settings = isolated(cluster_settings, "chaos")
    group = f"{settings.topic_prefix}stream"
    lake = Lake.from_settings(settings)
    summary = tmp_path / "summary.json"
    simulator = start_simulator(settings, SECONDS, RATE, FAULTS, summary)
    logs = [tmp_path / f"worker-{n}.log" for n in range(3)]
    workers = [
        start_worker(settings, "--group-id", group, "--until-idle", "8", log=log) for log in logs
    ]
    ids = [f"{socket.gethostname()}-{worker.pid}" for worker in workers]
    try:
        _wait_for_owners(lake, set(ids))
        broker = busiest_broker(settings, settings.all_topics)
        kill_broker(settings, broker)
        time.sleep(15)  # the cluster runs on two brokers: leaders move, writes go on
        restart_broker(settings, broker)
        workers[0].send_signal(signal.SIGKILL)
        workers[0].wait(30)
        _wait_for_owners(lake, set(ids[1:]))
        _, simulator_err = simulator.communicate(timeout=SECONDS + 60)
        assert simulator.returncode == 0, simulator_err.decode()[-2000:]
        for worker in workers[1:]:
            worker.wait(120)
    except BaseException:
        for log in logs:
            print(f"--- {log.name}", log.read_text()[-3000:], sep="\n")
        raise
    finally:
        for process in (*workers, simulator):
            if process.poll() is None:
                process.kill()
                process.wait(30)
    for worker, log in zip(workers[1:], logs[1:], strict=True):
        assert worker.returncode == 0, log.read_text()[-2000:]
        assert "Traceback" not in log.read_text(), log.read_text()[-2000:]

    census = log_census(settings, f"{group}-census")
    rows = assert_landed_exactly_once(settings, census)
    assert_acknowledged_landed(summary, rows)
    assert census.invalid and census.invalid <= dead_letter_sources(settings, f"{group}-dlq")


def _wait_for_owners(lake: Lake, owners: set[str], timeout_s: float = 90) -> None:
    """Until the reading partitions' manifests are all written by exactly `owners`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        manifests = load_all_progress(lake)
        if len(manifests) == READING_PARTITIONS and {m.owner for m in manifests} == owners:
            return
        time.sleep(0.5)
    found = {(m.topic, m.partition): m.owner for m in load_all_progress(lake)}
    raise AssertionError(f"the partitions never went to {sorted(owners)}: {found}")
