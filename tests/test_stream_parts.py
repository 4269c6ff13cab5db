"""The worker's parts, each on its own: replaying an intent, detecting a segment, lake
writes retried while the landing tells the loop it is held up (docs/stream.md, "The
worker's parts")."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from confluent_kafka import TIMESTAMP_CREATE_TIME
from hypothesis import given
from hypothesis import strategies as st

from simulator.registry import build_registry, registry_table
from smartcity.lake import Lake
from smartcity.layout import checkpoint_key
from smartcity.registry import sensors_by_id
from smartcity_stream.buffer import LandingBuffers, LandingPolicy
from smartcity_stream.clock_guard import ClockGuard
from smartcity_stream.detection import SegmentDetector, iso
from smartcity_stream.live import LiveState
from smartcity_stream.progress import OwnerMark, PartitionProgress
from smartcity_stream.replay import Replays
from smartcity_stream.rounds import DurableWrites, Lander, WrittenRound
from smartcity_stream.rules import RuleConfig, RuleEngine
from smartcity_stream.totals import WorkerTotals
from smartcity_stream.windows import TumblingWindows

TP = ("t.traffic", 0)
T0 = 1_795_737_600_000  # 2026-11-27T00:00:00Z


@dataclass
class FakeMessage:
    """What the parts read of a consumed message."""

    offset_: int
    value_: bytes = b""
    timestamp_ms: int = T0

    def offset(self) -> int:
        return self.offset_

    def value(self) -> bytes:
        return self.value_

    def key(self) -> bytes:
        return b"k"

    def topic(self) -> str:
        return TP[0]

    def partition(self) -> int:
        return TP[1]

    def timestamp(self) -> tuple[int, int]:
        return TIMESTAMP_CREATE_TIME, self.timestamp_ms


# --- replaying an intent -----------------------------------------------------------------


def _offsets(segments: list) -> list[tuple[list[int], bool]]:
    return [([m.offset() for m in batch], replay) for _, batch, replay in segments]


def test_without_an_intent_every_consume_is_one_segment() -> None:
    replays = Replays()
    batch = [FakeMessage(o) for o in (4, 5, 6)]
    assert _offsets(replays.segments({TP: batch})) == [([4, 5, 6], False)]


@given(
    cuts=st.lists(st.integers(1, 29), unique=True, max_size=6).map(sorted),
    last=st.integers(12, 25),
)
def test_an_intent_is_replayed_alone_however_consumes_cut_the_log(
    cuts: list[int], last: int
) -> None:
    """The log holds offsets 10..39, the intent is 10..`last`: whatever the consumes
    return, the intent's exact range comes out once as one replay segment, and what
    follows it as ordinary segments, in offset order."""
    replays = Replays()
    replays.expect(TP, (10, last))
    offsets = list(range(10, 40))
    segments = []
    for start, end in zip([0, *cuts], [*cuts, len(offsets)], strict=True):
        segments += _offsets(replays.segments({TP: [FakeMessage(o) for o in offsets[start:end]]}))
    assert segments[0] == (list(range(10, last + 1)), True)
    assert all(not replay for _, replay in segments[1:])
    assert [o for batch, _ in segments for o in batch] == offsets
    assert not replays.held and not replays.intents


def test_an_intent_already_committed_is_dropped() -> None:
    """The consume starts past the intent's first offset: the broker had committed it, and
    only its progress record was lost."""
    replays = Replays()
    replays.expect(TP, (10, 19))
    assert _offsets(replays.segments({TP: [FakeMessage(20)]})) == [([20], False)]
    assert not replays.intents


def test_a_range_held_back_is_released_when_the_partition_ends_short_of_it() -> None:
    replays = Replays()
    replays.expect(TP, (10, 19))
    assert replays.segments({TP: [FakeMessage(o) for o in range(10, 15)]}) == []
    assert replays.release(lambda tp: -1) == []  # the end is not known yet
    assert replays.release(lambda tp: 30) == []  # more is coming
    assert _offsets(replays.release(lambda tp: 15)) == [(list(range(10, 15)), True)]
    assert not replays.held and not replays.intents


# --- detecting a segment -----------------------------------------------------------------


class RecordingPublisher:
    """Keeps what the detector publishes."""

    def __init__(self) -> None:
        self.dead_letters: list[tuple[int, str]] = []
        self.anomalies: list[dict[str, Any]] = []

    def dead_letter(self, message: FakeMessage, reason: str, error: str) -> None:
        assert error
        self.dead_letters.append((message.offset(), reason))

    def anomaly(self, sensor_id: str, message: dict[str, Any]) -> None:
        self.anomalies.append(message)


def _reading(sensor_id: str = "TRAFFIC_0001", event_ms: int = T0, **values: Any) -> bytes:
    sensor_type = sensor_id.split("_")[0].lower()
    measures = {
        "traffic": {
            "vehicle_count": 5,
            "average_speed_kmh": 48.0,
            "occupancy_pct": 10.0,
            "congestion_level": "low",
        },
        "weather": {
            "temperature_c": 4.0,
            "humidity_pct": 80.0,
            "pressure_hpa": 1012.0,
            "wind_speed_ms": 3.0,
            "precipitation_mm": 0.0,
            "source": "simulated",
        },
    }[sensor_type]
    reading = {
        "schema_version": 1,
        "sensor_id": sensor_id,
        "sensor_type": sensor_type,
        "event_time": iso(event_ms),
        "seq": event_ms // 10_000,
        "interval_s": 10.0,
        **measures,
        **values,
    }
    return orjson.dumps(reading)


def test_a_segment_keeps_its_valid_readings_and_dead_letters_the_rest() -> None:
    sensors = sensors_by_id(registry_table(build_registry()))
    publisher, totals = RecordingPublisher(), WorkerTotals()
    detector = SegmentDetector(
        sensors,
        ClockGuard(ahead_s=86_400, behind_s=7 * 86_400),
        TumblingWindows(60, 30),
        RuleEngine(RuleConfig(), sensors),
        LiveState("w"),
        publisher,  # type: ignore[arg-type]
        totals,
    )
    batch = [
        FakeMessage(0, _reading()),
        FakeMessage(1, b'{"sensor_id": "TRAFFIC_0001", '),
        FakeMessage(2, _reading("TRAFFIC_9999")),
        FakeMessage(3, _reading("WEATHER_0001")),
        FakeMessage(4, _reading(event_ms=253_402_300_799_000)),
        FakeMessage(5, _reading(event_ms=T0 + 10_000)),
    ]
    detected = detector.detect(TP, "traffic", batch)  # type: ignore[arg-type]
    assert publisher.dead_letters == [
        (1, "malformed_json"),
        (2, "unknown_sensor"),
        (3, "wrong_topic"),
        (4, "event_time_out_of_range"),
    ]
    assert detected.table is not None
    assert detected.table.column("kafka_offset").to_pylist() == [0, 5]
    assert detected.watermark is not None
    assert (totals.consumed, totals.dead_letters) == (6, 0)  # dead letters: the publisher's


def test_a_segment_without_a_valid_reading_leaves_nothing_to_land() -> None:
    sensors = sensors_by_id(registry_table(build_registry()))
    detector = SegmentDetector(
        sensors,
        ClockGuard(ahead_s=86_400, behind_s=86_400),
        TumblingWindows(60, 30),
        RuleEngine(RuleConfig(), sensors),
        LiveState("w"),
        RecordingPublisher(),  # type: ignore[arg-type]
        WorkerTotals(),
    )
    detected = detector.detect(TP, "traffic", [FakeMessage(0, b"[]")])  # type: ignore[list-item]
    assert (detected.table, detected.anomalies, detected.watermark) == (None, [], None)


# --- lake writes and the landing's stall ---------------------------------------------------


class FlakyStore:
    """An object store that fails every write until `heal`, or holds it until `release`."""

    def __init__(self, hold: bool = False) -> None:
        self.healed = threading.Event()
        self.hold = hold
        self.failed = 0
        self.objects: dict[str, bytes] = {}

    def open_output_stream(self, path: str) -> Any:
        if self.hold:
            self.healed.wait(30)
        elif not self.healed.is_set():
            self.failed += 1
            raise OSError("store unreachable")
        return _Sink(self.objects, path)

    def get_file_info(self, selector: Any) -> list[Any]:
        return []

    def delete_file(self, path: str) -> None:
        self.objects.pop(path, None)


class _Sink:
    def __init__(self, objects: dict[str, bytes], path: str) -> None:
        self.objects, self.path = objects, path

    def __enter__(self) -> _Sink:
        return self

    def __exit__(self, *_: object) -> None:
        return None

    def write(self, data: bytes) -> None:
        self.objects[self.path] = data


def test_a_failing_write_is_retried_until_it_succeeds_and_counted() -> None:
    writes = DurableWrites(writers=2)
    attempts = []

    def write() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise OSError("disk full")
        return "written"

    try:
        assert writes(write) == "written"
        assert writes.failures == 2 and writes.last_error == "disk full"
    finally:
        writes.close()


def test_a_closed_writer_gives_a_failing_write_up() -> None:
    writes = DurableWrites(writers=1)
    writes.close()

    def write() -> None:
        raise OSError("still down")

    with pytest.raises(OSError, match="still down"):
        writes(write)


class Acknowledged:
    def wait_acknowledged(self) -> None:
        return None


def _lander(store: FlakyStore, stall_after_s: float = 60.0) -> Lander:
    lake = Lake(store, "bucket/lake", "s3://bucket/lake")  # type: ignore[arg-type]
    progress = {TP: PartitionProgress(*TP, committed_offset=3, epoch=2)}
    return Lander(
        lake,
        progress,
        Acknowledged(),  # type: ignore[arg-type]
        {TP[0]: "traffic"},
        WorkerTotals(),
        stall_after_s=stall_after_s,
    )


def _start_round(lander: Lander) -> None:
    """A round of one buffered range, offsets 3..9 (no valid row: only its manifests and
    its detection checkpoint)."""
    buffers = LandingBuffers(LandingPolicy())
    buffers.add(TP, (3, 9), 0.0, table=None, anomalies=[], watermark=None)
    lander.start(buffers.take(), {TP: b"state after 9"})


@pytest.mark.parametrize(
    ("store", "stall_after_s", "reason"),
    [
        (FlakyStore(), 60.0, "store unreachable"),
        (FlakyStore(hold=True), 0.05, "no answer for 0.05 s"),
    ],
    ids=["failing", "not answering"],
)
def test_the_landing_tells_when_the_lake_holds_a_round_up_and_goes_on_after(
    store: FlakyStore, stall_after_s: float, reason: str
) -> None:
    lander = _lander(store, stall_after_s)
    committed: list[WrittenRound] = []
    try:
        _start_round(lander)
        step = lander.current
        assert step is not None
        threading.Event().wait(0.3)  # a failed attempt, or the time, has passed
        assert lander.stalled() and lander.stall_reason() == reason
        store.healed.set()
        step.result(timeout=30)
        assert not lander.stalled()
        lander.step(committed.append)
        [written] = committed
        assert [(tp.offset, tp.metadata) for tp in written.offsets(lander.progress)] == [
            (10, OwnerMark(2).encode())
        ]
        record = lander.current
        assert record is not None
        record.result(timeout=30)
        assert lander.progress[TP].committed_offset == 10
        assert lander.progress[TP].pending_first is None
        assert any(key.endswith("p0.e2.json") for key in store.objects)
        assert store.objects[lander.lake.path(checkpoint_key(*TP, 10))] == b"state after 9"
    finally:
        store.healed.set()
        lander.close()
