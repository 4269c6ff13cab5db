"""Fencing: a worker paused past its session (a zombie) cannot write over the new owner.

The owner mark and the manifests per epoch are checked on their own first. Then two
workers of one group consume a live simulation on the real broker. One is stopped with
SIGSTOP until the group has given all its partitions to the other, then resumed: its next
commit (an intent or a round's offsets) is refused by the broker, so it stops without
landing anything more, the survivor's manifests stay the ones readers take, and every
reading of the log is landed exactly once.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from smartcity.lake import Lake
from smartcity.settings import Settings
from smartcity_stream.landing import LandingFile
from smartcity_stream.progress import (
    OwnerMark,
    PartitionProgress,
    drop_older_manifests,
    load_all_progress,
    load_progress,
    save_progress,
)
from tests.stream_support import (
    assert_acknowledged_landed,
    assert_landed_exactly_once,
    committed_marks,
    dead_letter_sources,
    isolated,
    log_census,
    start_simulator,
    start_worker,
)

FAULTS = "malformed=0.002,unknown_sensor=0.002,out_of_range=0.002,duplicate=0.005,late=0.005"
READING_PARTITIONS = 9
offsets = st.integers(min_value=0, max_value=2**62)


@given(st.integers(min_value=0, max_value=2**31), st.none() | st.tuples(offsets, offsets))
def test_the_owner_mark_survives_the_commit_metadata(epoch: int, pending) -> None:
    assert OwnerMark.decode(OwnerMark(epoch, pending).encode()) == OwnerMark(epoch, pending)


@pytest.mark.parametrize("metadata", [None, "", "not json", "[1, 2]"])
def test_metadata_of_another_client_is_epoch_0_without_intent(metadata: str | None) -> None:
    assert OwnerMark.decode(metadata) == OwnerMark()


def test_readers_take_the_highest_epoch_and_a_zombie_write_changes_nothing(
    tmp_path: Path,
) -> None:
    lake = Lake.from_settings(Settings(_env_file=None, lake_uri=tmp_path.as_uri()))
    for partition in (1, 10):  # p1 and p10 share a prefix, not a manifest
        save_progress(lake, PartitionProgress("t", partition, committed_offset=5))
    owner = PartitionProgress("t", 1, committed_offset=50, epoch=3, owner="new")
    save_progress(lake, owner)
    drop_older_manifests(lake, owner)
    save_progress(lake, PartitionProgress("t", 1, committed_offset=7, epoch=2, owner="zombie"))
    assert load_progress(lake, "t", 1).owner == "new"
    assert sorted((m.partition, m.owner) for m in load_all_progress(lake)) == [(1, "new"), (10, "")]


def _file(day: str, hour: int, name: str, rows: int) -> LandingFile:
    table = pa.table({"seq": list(range(rows))})
    return LandingFile(f"landing/traffic/date={day}/hour={hour:02d}/{name}", day, hour, 0, table)


@pytest.mark.parametrize(("committed", "settled"), [(100, True), (90, False)])
def test_a_new_owner_settles_an_intent_only_if_it_was_committed(
    committed: int, settled: bool
) -> None:
    progress = PartitionProgress("t", 0, committed_offset=90)
    progress.intend(90, 99, [_file("2026-11-27", 5, "p0-90-99.parquet", 10)])
    progress.committed_offset = committed  # what the broker says
    progress.take_over()
    assert progress.pending_first is None and progress.pending_files == {}
    landed = {"2026-11-27": {"05": {"p0-90-99.parquet": 10}}}
    assert progress.hours == (landed if settled else {})


@pytest.mark.integration
def test_a_zombie_is_refused_and_nothing_lands_twice(
    live_settings: Settings, tmp_path: Path
) -> None:
    settings = isolated(live_settings, "fence")
    group = f"{settings.topic_prefix}stream"
    lake = Lake.from_settings(settings)
    summary = tmp_path / "summary.json"
    simulator = start_simulator(settings, seconds=60, rate=1000, faults=FAULTS, summary=summary)
    args = ("--group-id", group, "--until-idle", "8", "--session-timeout", "10")
    zombie = start_worker(settings, *args)
    survivor = start_worker(settings, *args)
    zombie_id, survivor_id = (f"{socket.gethostname()}-{w.pid}" for w in (zombie, survivor))
    try:
        _zombie_and_survivor(settings, group, zombie, survivor, zombie_id, survivor_id)
        _, simulator_err = simulator.communicate(timeout=120)
        assert simulator.returncode == 0, simulator_err.decode()[-2000:]
        _, survivor_err = survivor.communicate(timeout=180)
        assert survivor.returncode == 0, survivor_err.decode()[-2000:]
    finally:
        for process in (zombie, survivor, simulator):
            _stop(process)

    census = log_census(settings, f"{group}-census")
    rows = assert_landed_exactly_once(settings, census)
    assert_acknowledged_landed(summary, rows)
    assert census.invalid and census.invalid <= dead_letter_sources(settings, f"{group}-dlq")

    marks = committed_marks(settings, group)
    final = load_all_progress(lake)
    assert len(final) == READING_PARTITIONS
    for manifest in final:
        offset, mark = marks[(manifest.topic, manifest.partition)]
        assert manifest.owner == survivor_id, "a manifest of the zombie is the one readers take"
        assert (manifest.epoch, manifest.committed_offset) == (mark.epoch, offset)
        assert manifest.pending_first is None and mark.pending is None


def _zombie_and_survivor(
    settings: Settings,
    group: str,
    zombie: subprocess.Popen[bytes],
    survivor: subprocess.Popen[bytes],
    zombie_id: str,
    survivor_id: str,
) -> None:
    """Stop the zombie until the survivor owns every partition, resume it, see it refused."""
    lake = Lake.from_settings(settings)
    shared = _wait_for_manifests(lake, lambda ms: {m.owner for m in ms} == {zombie_id, survivor_id})
    before = {(m.topic, m.partition): m.epoch for m in shared}
    zombie.send_signal(signal.SIGSTOP)

    # The group reassigns every partition to the survivor, each under a higher epoch.
    def survivor_owns(manifests: list[PartitionProgress]) -> bool:
        return all(
            m.owner == survivor_id and m.epoch > before[(m.topic, m.partition)] for m in manifests
        )

    _wait_for_manifests(lake, survivor_owns)
    # The survivor commits its owner mark under the epoch of its manifest. It goes on working,
    # and a further rebalance may move the two on between the test's two reads, so they are
    # read again until they agree.
    deadline = time.monotonic() + 60
    while True:
        marks = committed_marks(settings, group)
        manifests = load_all_progress(lake)
        epochs = {
            (m.topic, m.partition): (marks[(m.topic, m.partition)][1].epoch, m.epoch)
            for m in manifests
        }
        if survivor_owns(manifests) and all(mark == kept for mark, kept in epochs.values()):
            break
        assert time.monotonic() < deadline, f"marks and manifests disagree: {epochs}"
        time.sleep(0.3)
    zombie.send_signal(signal.SIGCONT)

    _, zombie_err = zombie.communicate(timeout=120)
    assert zombie.returncode == 3, zombie_err.decode()[-2000:]
    assert "stream worker stopped" in zombie_err.decode()


def _wait_for_manifests(
    lake: Lake, ready: Callable[[list[PartitionProgress]], bool], timeout_s: float = 120
) -> list[PartitionProgress]:
    """The reading partitions' manifests once every one exists and `ready` holds for them."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        manifests = load_all_progress(lake)
        if len(manifests) == READING_PARTITIONS and ready(manifests):
            return manifests
        time.sleep(0.3)
    owners = {(m.topic, m.partition): m.owner for m in load_all_progress(lake)}
    raise AssertionError(f"manifests never reached the state awaited: {owners}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGCONT)
        process.kill()
        process.wait(30)
