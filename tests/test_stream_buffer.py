"""Detection on every short consume, landing in rounds: the buffers, their cadence, replays."""

from __future__ import annotations

import random

import pyarrow as pa
import pytest

from simulator.registry import build_registry, registry_table
from simulator.simulation import Simulation, SimulationConfig
from smartcity.contract import ReadingDecoder
from smartcity.lake import Lake
from smartcity.registry import sensors_by_id
from smartcity.settings import Settings
from smartcity_stream.buffer import LandingBuffers, LandingPolicy, landing_due
from smartcity_stream.landing import landing_files, rows_to_table
from smartcity_stream.progress import load_all_progress
from smartcity_stream.worker import StreamWorker, WorkerOptions
from tests.stream_support import (
    isolated,
    kafka_coordinates,
    landed,
    produce_simulation,
)

POLICY = LandingPolicy(max_messages=100, max_age_s=1.0)
TP = ("smartcity.traffic", 1)


def test_a_round_is_due_by_messages_in_hand_or_by_the_oldest_age() -> None:
    assert not landing_due(0, None, 50.0, POLICY)
    assert not landing_due(99, 10.0, 10.5, POLICY)
    assert landing_due(100, 10.0, 10.0, POLICY)
    assert landing_due(1, 10.0, 11.0, POLICY)
    assert not landing_due(1, 10.0, 10.999, POLICY)


def test_buffers_sum_their_messages_and_keep_the_oldest_opening() -> None:
    buffers = LandingBuffers(POLICY)
    buffers.add(TP, (0, 49), 10.0, table=None, anomalies=[], watermark=None)
    buffers.add(("smartcity.energy", 0), (7, 46), 10.5, table=None, anomalies=[], watermark=None)
    assert not buffers.due(10.9)
    assert buffers.due(11.0)  # the first buffer's age, though the second is younger
    assert not buffers.full()
    buffers.add(TP, (50, 59), 10.6, table=None, anomalies=[], watermark=None)
    assert buffers.due(10.6)  # 60 + 40 messages in all
    assert buffers.full()
    assert len(buffers.take([TP, ("smartcity.weather", 2)])) == 1
    assert not buffers.due(10.6)
    assert not buffers.full()


def test_a_buffer_is_one_contiguous_range_in_offset_order() -> None:
    buffers = LandingBuffers(POLICY)
    first = pa.table({"kafka_offset": [3, 5]})
    second = pa.table({"kafka_offset": [9]})
    buffers.add(TP, (3, 6), 1.0, table=first, anomalies=[{"a": 1}], watermark="w1")
    buffers.add(TP, (7, 8), 1.2, table=None, anomalies=[], watermark=None)  # all invalid
    buffers.add(TP, (9, 9), 1.4, table=second, anomalies=[{"a": 2}], watermark="w2")
    with pytest.raises(ValueError):
        buffers.add(TP, (9, 12), 1.5, table=second, anomalies=[], watermark=None)
    buffer = buffers.take()[TP]
    assert (buffer.first_offset, buffer.last_offset, buffer.messages) == (3, 9, 7)
    assert buffer.opened_at == 1.0
    assert buffer.table().column("kafka_offset").to_pylist() == [3, 5, 9]
    assert buffer.anomalies == [{"a": 1}, {"a": 2}]
    assert buffer.watermark == "w2"
    assert len(buffers) == 0


def test_landing_names_do_not_depend_on_how_consumes_cut_the_range() -> None:
    """A replay consumes the intent's range in other pieces than the first attempt did: the
    files (names and rows) must come out the same, hours crossed included."""
    config = SimulationConfig(start_ms=1_795_737_600_000 - 900_000, interval_ms=60_000)
    simulation = Simulation(build_registry(), config)
    decoder = ReadingDecoder()
    rows = []
    for _ in range(30):  # 23:45 .. 00:14: two dates, two hours
        for batch in simulation.next_step():
            if batch.sensor_type == "weather":
                rows += [decoder.decode(value) for _, value, _, _ in batch.messages]
    for offset, row in enumerate(rows):
        row.update(kafka_partition=2, kafka_offset=offset)
    whole = landing_files("weather", 2, rows_to_table("weather", rows))
    assert len(whole) == 2

    rng = random.Random(3)
    for _ in range(5):
        cuts = sorted(rng.sample(range(1, len(rows)), 6))
        buffers = LandingBuffers(POLICY)
        for start, end in zip([0, *cuts], [*cuts, len(rows)], strict=True):
            piece = rows_to_table("weather", rows[start:end])
            buffers.add(("w", 2), (start, end - 1), 0.0, table=piece, anomalies=[], watermark=None)
        pieces = landing_files("weather", 2, buffers.take()[("w", 2)].table())
        assert [f.key for f in pieces] == [f.key for f in whole]
        assert all(a.table.equals(b.table) for a, b in zip(pieces, whole, strict=True))


class Crash(RuntimeError):
    """Stands for a SIGKILL between the landing writes and the commit."""


@pytest.mark.integration
def test_a_crash_before_the_commit_is_replayed_into_the_same_files(
    live_settings: Settings,
) -> None:
    """The first worker writes intents and files of its first round, then dies before the
    commit; the next one consumes in other pieces (small batches) and lands the intents
    again: same names, so no offset lands twice, and nothing is missing."""
    settings = isolated(live_settings, "rp")
    produced = produce_simulation(settings, steps=30, interval_ms=600_000)
    sensors = sensors_by_id(registry_table(build_registry()))
    lake = Lake.from_settings(settings)
    group = f"{settings.topic_prefix}replay"

    first = StreamWorker(
        settings,
        sensors,
        WorkerOptions(
            group_id=group,
            batch_size=700,
            land_messages=2500,
        ),
    )

    def crash(offsets: object) -> None:
        raise Crash

    first._commit = crash  # type: ignore[method-assign]
    with pytest.raises(Crash):
        first.run()
    before, _ = landed(lake)
    intents = [p for p in load_all_progress(lake) if p.pending_first is not None]
    assert before and intents, "the first round wrote nothing before its commit"
    assert all(p.committed_offset == 0 for p in load_all_progress(lake))

    second = StreamWorker(
        settings,
        sensors,
        WorkerOptions(
            group_id=group,
            batch_size=97,
            land_messages=900,
            until_idle_s=3,
        ),
    )
    second.run()
    after, tables = landed(lake)
    assert set(before) <= set(after), "the replay named a range's files otherwise"
    rows = pa.concat_tables(tables)
    coordinates = kafka_coordinates(rows)
    assert len(coordinates) == len(set(coordinates)), "an offset was landed twice"
    pairs = set(zip(rows["sensor_id"].to_pylist(), rows["seq"].to_pylist(), strict=True))
    assert pairs == produced.readings
    assert all(p.pending_first is None for p in load_all_progress(lake))
