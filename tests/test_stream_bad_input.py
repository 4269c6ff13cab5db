"""Bad input never stops the worker: bad clocks, a flood through a full producer queue, a
message at the broker's size limit (docs/stream.md, "Bad clocks, a full producer queue,
oversized dead letters")."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import NewTopic
from hypothesis import given
from hypothesis import strategies as st

from simulator.registry import build_registry, registry_table
from simulator.simulation import Simulation, SimulationConfig
from smartcity.kafka import admin_client
from smartcity.lake import Lake
from smartcity.registry import import_registry, sensors_by_id
from smartcity.settings import SENSOR_TYPES, Settings
from smartcity_stream.clock_guard import ClockGuard, advance_ms
from smartcity_stream.columns import Readings
from smartcity_stream.progress import load_all_progress
from smartcity_stream.publish import (
    FRAMING_BYTES,
    TRUNCATED,
    TRUNCATED_KEY,
    fit_dead_letter,
    message_limit,
)
from smartcity_stream.windows import TumblingWindows
from smartcity_stream.worker import StreamWorker, WorkerOptions
from tests.stream_support import (
    assert_landed_exactly_once,
    consume_all,
    dead_letter_sources,
    isolated,
    landed,
    live_start_ms,
    log_census,
    produce_messages,
    produce_simulation,
    start_worker,
    worker_status,
)

HOUR_MS = 3_600_000
INTERVAL_MS = 10_000
T0 = 1_795_737_600_000  # 2026-11-27T00:00:00Z


# --- the clock guard and the watermark ---------------------------------------------------


def test_the_guard_refuses_beyond_either_bound_and_never_without_a_timestamp() -> None:
    guard = ClockGuard(ahead_s=3600, behind_s=7200)
    broker = np.array([T0, T0, T0, T0, T0, -1])
    event = np.array(
        [T0 + HOUR_MS, T0 + HOUR_MS + 1, T0 - 2 * HOUR_MS, T0 - 2 * HOUR_MS - 1, T0, 0]
    )
    assert guard.out_of_range(event, broker).tolist() == [False, True, False, True, False, False]
    assert "ahead of" in guard.error("e", T0 + 2 * HOUR_MS, T0)
    assert "behind" in guard.error("e", T0 - 3 * HOUR_MS, T0)


@given(
    st.lists(
        st.tuples(st.integers(-(2**62), 2**62), st.one_of(st.just(-1), st.integers(0, 2**62))),
        min_size=1,
    )
)
def test_a_reading_moves_the_watermark_at_most_to_its_broker_timestamp(
    pairs: list[tuple[int, int]],
) -> None:
    event, broker = (np.array(column, dtype=np.int64) for column in zip(*pairs, strict=True))
    advance = advance_ms(event, broker)
    assert (advance <= event).all()
    assert np.where(broker >= 0, advance <= broker, advance == event).all()


def test_a_fast_clock_does_not_make_its_partitions_later_readings_late() -> None:
    """Readings sent live every 10 s, one of them dated 2 hours ahead: capped at its broker
    timestamp, it leaves every later reading on time; uncapped, it makes them all late."""
    broker = np.array([T0 + i * INTERVAL_MS for i in range(20)], dtype=np.int64)
    events = broker.tolist()
    events[5] += 2 * HOUR_MS
    rows = [{"sensor_id": "TRAFFIC_0001", "seq": i, "vehicle_count": 5} for i in range(20)]
    readings = Readings.from_rows("traffic", rows, events)
    capped, uncapped = TumblingWindows(60, 30), TumblingWindows(60, 30)
    advance = advance_ms(readings.event_ms, broker)
    view = capped.add_batch("p0", readings, ("vehicle_count",), advance)
    assert view.joined.all() and capped.late_events == 0
    uncapped.add_batch("p0", readings, ("vehicle_count",))
    assert uncapped.late_events == 14


# --- publishing ----------------------------------------------------------------------------


@given(
    key=st.one_of(st.none(), st.binary(max_size=3000)),
    value=st.one_of(st.none(), st.binary(max_size=6000)),
    error=st.binary(max_size=300),
    limit=st.integers(FRAMING_BYTES + 400, 8000),
)
def test_a_dead_letter_is_cut_to_fit_and_says_what_it_cut(
    key: bytes | None, value: bytes | None, error: bytes, limit: int
) -> None:
    headers = [("error", error), ("reason", b"malformed_json")]
    new_key, new_value, new_headers = fit_dead_letter(key, value, headers, limit)
    assert _size(new_key, new_value, new_headers) + FRAMING_BYTES <= limit
    assert new_headers[: len(headers)] == headers
    marks = dict(new_headers[len(headers) :])
    if not marks:
        assert (new_key, new_value) == (key, value)
    else:
        assert marks[TRUNCATED] == str(len(value or b"")).encode()
        assert (value or b"").startswith(new_value or b"")
        assert (key or b"").startswith(new_key or b"")
        assert (TRUNCATED_KEY in marks) == (new_key != key)


# --- on the broker -----------------------------------------------------------------------


@pytest.mark.integration
def test_bad_clocks_are_dead_lettered_and_stall_no_partition(live_settings: Settings) -> None:
    """Live readings, then per reading topic one dated 9999-12-31, one 0001-01-01 and one
    from a clock 2 hours fast, then live readings again; the worker on its defaults."""
    default = Settings.model_fields["event_time_behind_s"].default
    settings = isolated(live_settings, "clock").model_copy(update={"event_time_behind_s": default})
    first_ms = live_start_ms(INTERVAL_MS) - 120_000
    before = produce_simulation(settings, steps=12, interval_ms=INTERVAL_MS, start_ms=first_ms)
    fast_ms = live_start_ms(INTERVAL_MS) + 2 * HOUR_MS
    bad = {
        (sensor_type, label): _reading_at(sensor_type, event_time, seq_ms)
        for sensor_type in SENSOR_TYPES
        for label, event_time, seq_ms in (
            ("9999", "9999-12-31T23:59:59.999Z", 0),
            ("0001", "0001-01-01T00:00:00.000Z", 0),
            ("fast", _iso(fast_ms), fast_ms),
        )
    }
    placed = produce_messages(
        settings, [(settings.reading_topic(t), key, value) for (t, _), (key, value) in bad.items()]
    )
    where = dict(zip(bad, placed, strict=True))
    after_ms = live_start_ms(INTERVAL_MS)
    after = produce_simulation(settings, steps=12, interval_ms=INTERVAL_MS, start_ms=after_ms)

    worker = start_worker(settings, "--until-idle", "5", "--worker-id", "clock-worker")
    _, stderr = worker.communicate(timeout=600)
    assert worker.returncode == 0, stderr.decode()[-2000:]
    finished_ms = live_start_ms(INTERVAL_MS)

    letters = {_source(headers): headers for headers, _ in _dead_letters(settings)}
    assert set(letters) == {where[b] for b in bad if b[1] in ("9999", "0001")}
    assert {h["reason"] for h in letters.values()} == {b"event_time_out_of_range"}
    status = worker_status(settings, "clock-worker")
    assert status["late_events"] == 0, "a bad clock made later readings late"
    assert status["dead_letters_by_reason"] == {"event_time_out_of_range": 6}

    lake = Lake.from_settings(settings)
    files, tables = landed(lake)
    pairs = {(row["sensor_id"], row["seq"]) for table in tables for row in table.to_pylist()}
    fast = {
        (reading["sensor_id"], reading["seq"])
        for (_, label), (_, value) in bad.items()
        if label == "fast"
        for reading in [orjson.loads(value)]
    }
    assert pairs == before.readings | after.readings | fast
    # Each landed under its own date: the live readings' (the day of the run, or both days
    # if it crossed midnight) and the fast clock's; no date=1-01-01, no 9999-12-31.
    last_ms = after_ms + 12 * INTERVAL_MS
    dates = {path.split("date=")[1].split("/")[0] for path in files}
    assert dates <= {_iso(ms)[:10] for ms in (first_ms, last_ms, fast_ms)}, dates
    # The fast clock moved no watermark past the time it was sent.
    for progress in load_all_progress(lake):
        assert progress.watermark is not None and progress.watermark < _iso(finished_ms)


@pytest.mark.integration
def test_event_times_with_up_to_nine_fractional_digits_are_landed(
    live_settings: Settings,
) -> None:
    """Per reading topic, one reading for each count of fractional digits the contract
    takes (0, 3, 6, 7, 9): the worker refuses none, lands each at its millisecond (the
    digits beyond cut, docs/lake.md) and leaves on its own, instead of crash-looping."""
    settings = isolated(live_settings, "digits")
    second_ms = live_start_ms(INTERVAL_MS)
    second = _iso(second_ms)[:19]
    fractions = ("", ".123", ".123456", ".1234567", ".123456789")
    messages, expected = [], {}
    for sensor_type in SENSOR_TYPES:
        key, value = _reading_at(sensor_type, f"{second}Z", 0)
        reading = orjson.loads(value)
        for step, fraction in enumerate(fractions):
            reading.update(event_time=f"{second}{fraction}Z", seq=reading["seq"] + step)
            messages.append((settings.reading_topic(sensor_type), key, orjson.dumps(reading)))
            expected[reading["sensor_id"], reading["seq"]] = second_ms + (123 if fraction else 0)
    produce_messages(settings, messages)

    options = WorkerOptions(group_id=f"{settings.topic_prefix}stream", until_idle_s=3)
    worker = StreamWorker(settings, sensors_by_id(registry_table(build_registry())), options)
    totals = worker.run()  # returns: the worker left on its own, idle
    assert dict(totals.by_reason) == {}
    assert totals.landed == len(messages)

    lake = Lake.from_settings(settings)
    files, _ = landed(lake)
    got = {}
    for path in files:
        table = pq.read_table(path, filesystem=lake.filesystem)
        millis = table["event_time"].cast(pa.int64()).to_pylist()
        keys = zip(table["sensor_id"].to_pylist(), table["seq"].to_pylist(), strict=True)
        got.update(zip(keys, millis, strict=True))
    assert got == expected


@pytest.mark.integration
def test_a_flood_through_a_tiny_producer_queue_loses_no_dead_letter(
    live_settings: Settings,
) -> None:
    """20,000 malformed messages among live readings; the worker's producer queue holds 10
    messages, so dead-lettering waits for room again and again, and nothing is lost."""
    settings = isolated(live_settings, "flood")
    group = f"{settings.topic_prefix}stream"
    produce_simulation(
        settings, steps=6, interval_ms=INTERVAL_MS, start_ms=live_start_ms(INTERVAL_MS)
    )
    topics = [settings.reading_topic(t) for t in SENSOR_TYPES]
    flood = [
        (topics[i % 3], f"SENSOR_{i % 97}".encode(), b'{"malformed": ' + str(i).encode())
        for i in range(20_000)
    ]
    produce_messages(settings, flood, **{"linger.ms": 20})
    produce_simulation(
        settings, steps=6, interval_ms=INTERVAL_MS, start_ms=live_start_ms(INTERVAL_MS)
    )

    options = WorkerOptions(
        group_id=group, until_idle_s=3, producer_settings={"queue.buffering.max.messages": 10}
    )
    worker = StreamWorker(settings, sensors_by_id(registry_table(build_registry())), options)
    producer = worker.producer = _QueueWatch(worker.producer)
    totals = worker.run()  # returns: the worker left on its own, idle
    assert producer.full > 0, "the producer's queue was never full"
    assert totals.by_reason["malformed_json"] == len(flood)

    census = log_census(settings, f"{group}-census")
    assert len(census.invalid) == len(flood)
    assert dead_letter_sources(settings, f"{group}-dlq") == census.invalid
    assert_landed_exactly_once(settings, census)


@pytest.mark.integration
def test_the_limit_is_the_topic_s_own(live_settings: Settings) -> None:
    """Asked of the broker, not assumed: a topic that takes 3 MB says so."""
    topic = f"{live_settings.topic_prefix}limit-{uuid.uuid4().hex[:6]}"
    admin = admin_client(live_settings)
    created = admin.create_topics([NewTopic(topic, 1, 1, config={"max.message.bytes": "3000000"})])
    created[topic].result(timeout=30)
    assert message_limit(live_settings, topic) == 3_000_000


@pytest.mark.integration
def test_a_message_at_the_broker_limit_is_dead_lettered_cut_and_the_worker_goes_on(
    live_settings: Settings,
) -> None:
    """A malformed message just under what the reading topic takes, between live readings:
    its dead letter (the same bytes with headers) would not fit, so it is cut and says so;
    the worker lands the readings around it and exits 0. A second worker replays the whole
    log from its start into a lake of its own (what a restart before the commit replays)
    and does the same: no crash loop."""
    settings = isolated(live_settings, "big")
    topic = settings.reading_topic("weather")
    limit = message_limit(settings, topic)
    key = b"WEATHER_0001"
    big = b'{"sensor_id": "WEATHER_0001", "note": "' + b"x" * (limit - 1024)
    produce_simulation(
        settings, steps=3, interval_ms=INTERVAL_MS, start_ms=live_start_ms(INTERVAL_MS)
    )
    [where] = produce_messages(
        settings, [(topic, key, big)], **{"message.max.bytes": limit, "compression.type": "none"}
    )
    produce_simulation(
        settings, steps=3, interval_ms=INTERVAL_MS, start_ms=live_start_ms(INTERVAL_MS)
    )

    replay = settings.model_copy(update={"lake_uri": f"{settings.lake_uri}-replay"})
    import_registry(Lake.from_settings(replay), build_registry().table())
    for run in (settings, replay):
        group = f"{run.topic_prefix}{uuid.uuid4().hex[:6]}"
        worker = start_worker(run, "--until-idle", "5", "--group-id", group)
        _, stderr = worker.communicate(timeout=600)
        assert worker.returncode == 0, stderr.decode()[-2000:]

    letters = [(h, v) for h, v in _dead_letters(settings) if _source(h) == where]
    assert len(letters) == 2  # once per pass over the log
    dead_letter_limit = message_limit(settings, settings.topic("deadletter"))
    for headers, value in letters:
        assert headers["reason"] == b"malformed_json"
        assert headers[TRUNCATED] == str(len(big)).encode()
        assert big.startswith(value) and len(value) < len(big)
        assert _size(key, value, list(headers.items())) + FRAMING_BYTES <= dead_letter_limit
    census = log_census(settings, f"{settings.topic_prefix}census")
    assert census.valid and len(census.invalid) == 1
    for run in (settings, replay):
        assert_landed_exactly_once(run, census)


def _reading_at(sensor_type: str, event_time: str, seq_ms: int) -> tuple[bytes, bytes]:
    """A contract-valid live reading of the type's first sensor, dated `event_time` (its
    `seq` that of the step at `seq_ms`, when later than the live one)."""
    config = SimulationConfig(start_ms=live_start_ms(INTERVAL_MS), interval_ms=INTERVAL_MS)
    batch = next(
        b for b in Simulation(build_registry(), config).next_step() if b.sensor_type == sensor_type
    )
    key, value, seq, _ = batch.messages[0]
    reading = orjson.loads(value)
    reading.update(event_time=event_time, seq=max(seq_ms // INTERVAL_MS, seq))
    return key, orjson.dumps(reading)


def _dead_letters(settings: Settings) -> list[tuple[dict[str, bytes], bytes]]:
    """Every dead letter's headers and value."""
    group = f"{settings.topic_prefix}dlq-{uuid.uuid4().hex[:6]}"
    messages = consume_all(settings, settings.topic("deadletter"), group, idle_s=10)
    return [(dict(m.headers() or []), m.value()) for m in messages]


def _source(headers: dict[str, bytes]) -> tuple[str, int, int]:
    return (
        headers["source_topic"].decode(),
        int(headers["source_partition"]),
        int(headers["source_offset"]),
    )


def _size(key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]) -> int:
    return len(key or b"") + len(value or b"") + sum(len(n) + len(v) for n, v in headers)


class _QueueWatch:
    """A producer that counts how often its local queue was full (`BufferError`)."""

    def __init__(self, producer: Producer) -> None:
        self.producer, self.full = producer, 0

    def produce(self, *args: Any, **kwargs: Any) -> None:
        try:
            self.producer.produce(*args, **kwargs)
        except BufferError:
            self.full += 1
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self.producer, name)


def _iso(millis: int) -> str:
    return datetime.fromtimestamp(millis / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
