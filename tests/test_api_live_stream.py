"""`GET /api/v1/live/stream` over a real socket, fed by the real Kafka broker.

`smartcity api` (uvicorn) serves topics of this module's own; the tests produce readings and
anomalies with a plain producer and read the Server-Sent Events with httpx. Waits are
generous (10 s) and only say how long an event took: the 2 s promise is the browser test's.
"""

from __future__ import annotations

import contextlib
import queue
import random
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from confluent_kafka import Producer

from smartcity.kafka import client_config
from smartcity.settings import SENSOR_TYPES, Settings
from smartcity_api.live_hub import (
    QUEUE_EVENTS,
    Coalescer,
    SeenIds,
    Subscriber,
    anomaly_event,
)
from tests.api_support import serve_api
from tests.stream_support import isolated, worker_env

pytestmark = pytest.mark.integration
KEY = "live-key-0123456789"
STREAM = "/api/v1/live/stream"
DEADLINE_S = 10.0
MEASUREMENTS = {
    "traffic": ("vehicle_count", "occupancy_pct"),
    "weather": ("temperature_c", "humidity_pct"),
    "energy": ("power_kw", "voltage_v"),
}


@dataclass(frozen=True)
class Event:
    name: str
    data: Any
    at: float


@contextmanager
def serve(env: dict[str, str]) -> Iterator[str]:
    with serve_api(env, stop_timeout_s=20) as served:
        yield served.base


@pytest.fixture(scope="module")
def topics(live_settings: Settings) -> Settings:
    return isolated(live_settings, f"live{uuid.uuid4().hex[:6]}")


@pytest.fixture(scope="module")
def producer(topics: Settings) -> Producer:
    return Producer(client_config(topics, **{"linger.ms": 5}))


@pytest.fixture(scope="module")
def server(topics: Settings, producer: Producer) -> Iterator[str]:
    """The API, its consumer started: the first client of a process starts it, and what is
    produced before the consumer has its partitions' end offsets is not streamed."""
    with serve(worker_env(topics) | {"SMARTCITY_API_KEY": KEY}) as base:
        with listen(base) as stream:
            wait_until(lambda: warmed_up(stream, topics, producer), "the consumer started")
        yield base


class Listener:
    """One SSE connection read on a thread of its own; events are kept as they arrive."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.events: queue.Queue[Event] = queue.Queue()
        self.ended = threading.Event()
        self.reading = threading.Event()
        self.reading.set()
        self.seen: list[Event] = []
        self.anomaly_ids: set[str] = set()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        name, data = "message", []
        try:
            for line in self.response.iter_lines():
                self.reading.wait()  # cleared: the socket is left unread, as a stalled client
                if line.startswith(":"):
                    self.events.put(Event("comment", line, time.monotonic()))
                elif line.startswith("event: "):
                    name = line.removeprefix("event: ")
                elif line.startswith("data: "):
                    data.append(line.removeprefix("data: "))
                elif line == "" and data:
                    parsed = orjson.loads("\n".join(data))
                    self.events.put(Event(name, parsed, time.monotonic()))
                    name, data = "message", []
        except (httpx.TransportError, httpx.StreamError):
            pass
        finally:
            self.ended.set()

    def _take(self, timeout: float) -> Event | None:
        """The next event within `timeout` seconds, kept in `seen`; None if none came."""
        try:
            event = self.events.get(timeout=max(timeout, 0))
        except queue.Empty:
            return None
        self.seen.append(event)
        if event.name == "anomaly":
            self.anomaly_ids.add(event.data["anomaly_id"])
        return event

    def wait_for(self, match: Callable[[Event], bool], timeout: float = DEADLINE_S) -> Event:
        """The first event (seen or to come) that matches; fails after `timeout` seconds."""
        for event in self.seen:
            if match(event):
                return event
        deadline = time.monotonic() + timeout
        while (event := self._take(deadline - time.monotonic())) is not None:
            if match(event):
                return event
        raise AssertionError(f"no matching event within {timeout:g} s; saw {len(self.seen)}")

    def wait_for_anomalies(self, ids: set[str], timeout: float = DEADLINE_S) -> None:
        """Until every anomaly of `ids` has arrived, in any order (three partitions)."""
        deadline = time.monotonic() + timeout
        while not ids <= self.anomaly_ids:
            if self._take(deadline - time.monotonic()) is None:
                missing = len(ids - self.anomaly_ids)
                raise AssertionError(f"{missing} of {len(ids)} anomalies not within {timeout:g} s")

    def drain(self, seconds: float) -> list[Event]:
        """Everything that arrives in the next `seconds` (plus what is queued)."""
        end = time.monotonic() + seconds
        while self._take(end - time.monotonic()) is not None:
            pass
        return self.seen


@contextmanager
def listen(base: str, key: str | None = KEY) -> Iterator[Listener]:
    headers = {"X-API-Key": key} if key else {}
    with (
        httpx.Client(timeout=httpx.Timeout(10, read=60)) as client,
        client.stream("GET", f"{base}{STREAM}", headers=headers) as response,
    ):
        assert response.status_code == 200, response.read()
        listener = Listener(response)
        listener.wait_for(lambda e: e.name == "clock")  # connected: the hub sends one at once
        try:
            yield listener
        finally:
            # Closing alone would leave the connection open while the listener's thread
            # waits in recv on it (until the next event arrives): the server would count a
            # client that is gone, and drop it as slow under a burst. Shutting the socket
            # down ends that recv and tells the server at once.
            socket_ = response.extensions["network_stream"].get_extra_info("socket")
            with contextlib.suppress(OSError):
                socket_.shutdown(socket.SHUT_RDWR)


def rfc3339(instant: datetime) -> str:
    return instant.strftime("%Y-%m-%dT%H:%M:%S.") + f"{instant.microsecond // 1000:03d}Z"


def reading(rng: random.Random, sensor_type: str, sensor: int, seq: int) -> dict[str, Any]:
    first, second = MEASUREMENTS[sensor_type]
    return {
        "schema_version": 1,
        "sensor_id": f"{sensor_type.upper()}_{sensor:04d}",
        "sensor_type": sensor_type,
        "event_time": rfc3339(datetime.now(UTC)),
        "seq": seq,
        first: rng.randrange(0, 500),
        second: round(rng.uniform(0, 100), 2),
    }


def anomaly(rng: random.Random, padding: int = 0) -> dict[str, Any]:
    now = datetime.now(UTC)
    sensor_type = rng.choice(SENSOR_TYPES)
    return {
        "anomaly_id": uuid.UUID(int=rng.getrandbits(128)).hex,
        "sensor_id": f"{sensor_type.upper()}_{rng.randrange(10_000):04d}",
        "sensor_type": sensor_type,
        "kind": rng.choice(["spike", "flatline", "out_of_range"]),
        "severity": rng.choice(["warning", "critical"]),
        "event_time": rfc3339(now),
        "seq": rng.randrange(1, 10**9),
        "window_start": rfc3339(now - timedelta(seconds=60)),
        "window_end": rfc3339(now),
        "detected_at": rfc3339(now),
        "values": {"value": rng.uniform(-50, 500), "note": "x" * padding},
    }


def send(producer: Producer, topic: str, messages: list[dict[str, Any]]) -> float:
    for message in messages:
        producer.produce(topic, key=message["sensor_id"].encode(), value=orjson.dumps(message))
    assert producer.flush(10) == 0
    return time.monotonic()


def metric(base: str, name: str) -> float:
    text = httpx.get(f"{base}/metrics").text
    found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    return float(found[1]) if found else 0.0


def wait_until(check: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what}: not within {timeout:g} s"
        time.sleep(0.2)


def warmed_up(stream: Listener, topics: Settings, producer: Producer) -> bool:
    message = reading(random.Random(), "weather", 9999, time.time_ns() // 1_000_000)
    send(producer, topics.reading_topic("weather"), [message])
    try:
        stream.wait_for(lambda e: e.name == "reading" and e.data == message, timeout=1.5)
    except AssertionError:
        return False
    return True


@pytest.fixture
def rng() -> random.Random:
    seed = random.randrange(2**32)
    print(f"seed {seed}")
    return random.Random(seed)


def test_a_produced_reading_arrives_as_a_reading_event(
    server: str, topics: Settings, producer: Producer, rng: random.Random
) -> None:
    sensor_type = rng.choice(SENSOR_TYPES)
    message = reading(rng, sensor_type, rng.randrange(10_000), rng.randrange(10**9))
    with listen(server) as stream:
        sent = send(producer, topics.reading_topic(sensor_type), [message])
        event = stream.wait_for(
            lambda e: e.name == "reading" and e.data["sensor_id"] == message["sensor_id"]
        )
    assert event.data == message, f"arrived {event.at - sent:.2f} s after it was acknowledged"


def test_readings_of_a_sensor_are_coalesced_to_the_newest_once_a_second(
    server: str, topics: Settings, producer: Producer, rng: random.Random
) -> None:
    """20 readings of each of three sensors within a second: each sensor's events are at most
    one per second (so at most 2 over a span that crosses one tick, plus slack for one more)
    and the last one is the newest reading."""
    sensors = {t: rng.randrange(10_000) for t in SENSOR_TYPES}
    first_seq = {t: rng.randrange(10**9) for t in SENSOR_TYPES}
    produced: dict[str, list[dict[str, Any]]] = {}
    with listen(server) as stream:
        for step in range(20):
            for sensor_type in SENSOR_TYPES:
                message = reading(
                    rng, sensor_type, sensors[sensor_type], first_seq[sensor_type] + step
                )
                produced.setdefault(message["sensor_id"], []).append(message)
                producer.produce(
                    topics.reading_topic(sensor_type),
                    key=message["sensor_id"].encode(),
                    value=orjson.dumps(message),
                )
            producer.poll(0)
            time.sleep(0.04)
        sent = time.monotonic()
        assert producer.flush(10) == 0
        for sensor_id, messages in produced.items():
            stream.wait_for(
                lambda e, s=sensor_id, q=messages[-1]["seq"]: (
                    e.name == "reading" and e.data["sensor_id"] == s and e.data["seq"] == q
                )
            )
        events = stream.drain(1.5)  # a later tick must not send anything more of them
    for sensor_id, messages in produced.items():
        mine = [e for e in events if e.name == "reading" and e.data["sensor_id"] == sensor_id]
        seqs = [e.data["seq"] for e in mine]
        delays = [round(e.at - sent, 2) for e in mine]
        assert 1 <= len(mine) <= 3, f"{sensor_id}: {seqs} at {delays} s"
        assert seqs == sorted(set(seqs)), f"{sensor_id}: {seqs}"
        assert mine[-1].data == messages[-1], f"{sensor_id}: the newest wins, got {seqs}"
        assert all(e.data == messages[e.data["seq"] - messages[0]["seq"]] for e in mine)


def test_within_a_second_a_late_or_repeated_reading_does_not_replace_the_newest() -> None:
    coalescer = Coalescer()
    newer = {"sensor_id": "ENERGY_0003", "event_time": "2026-12-04T10:00:01.000Z", "seq": 8}
    older = newer | {"event_time": "2026-12-04T10:00:00.000Z", "seq": 7}
    for message in (newer, older, newer | {"power_kw": 1.0, "seq": 8}):
        coalescer.add(orjson.dumps(message))
    for junk in (
        b"not json",
        b"[1]",
        orjson.dumps({"seq": 9}),
        orjson.dumps(newer | {"event_time": "soon"}),
    ):
        coalescer.add(junk)
    block, count = coalescer.take()
    assert count == 1
    assert block == b"event: reading\ndata: " + orjson.dumps(newer | {"power_kw": 1.0}) + b"\n\n"
    assert coalescer.watermark is not None and coalescer.watermark[1] == newer["event_time"]
    assert coalescer.take() == (b"", 0)


def test_a_caught_up_client_takes_a_block_larger_than_its_queue_once() -> None:
    """A city with more sensors than the queue holds still streams to clients that keep up."""
    subscriber = Subscriber(limit=10)
    assert subscriber.offer(b"a second of 50 readings", 50)
    assert not subscriber.offer(b"a clock", 1)


def test_every_anomaly_arrives_as_an_anomaly_event(
    server: str, topics: Settings, producer: Producer, rng: random.Random
) -> None:
    """Anomalies are not coalesced: five of one sensor at once all arrive, as published."""
    first = anomaly(rng)
    burst = [first] + [
        anomaly(rng) | {"sensor_id": first["sensor_id"], "sensor_type": first["sensor_type"]}
        for _ in range(4)
    ]
    with listen(server) as stream:
        sent = send(producer, topics.topic("anomalies"), burst)
        arrived = [
            stream.wait_for(
                lambda e, a=message["anomaly_id"]: e.name == "anomaly" and e.data["anomaly_id"] == a
            )
            for message in burst
        ]
    delays = [round(event.at - sent, 2) for event in arrived]
    assert [event.data for event in arrived] == burst, f"arrived after {delays} s"


def test_clock_events_carry_the_watermark_of_the_readings(
    server: str, topics: Settings, producer: Producer, rng: random.Random
) -> None:
    sensor_type = rng.choice(SENSOR_TYPES)
    message = reading(rng, sensor_type, rng.randrange(10_000), rng.randrange(10**9))
    with listen(server) as stream:
        sent = send(producer, topics.reading_topic(sensor_type), [message])
        clock = stream.wait_for(
            lambda e: e.name == "clock" and e.data["watermark"] == message["event_time"]
        )
        ticks = [e for e in stream.drain(2.5) if e.name == "clock"]
    now = datetime.fromisoformat(clock.data["now"])
    watermark = datetime.fromisoformat(clock.data["watermark"])
    expected = (now - watermark).total_seconds()
    assert clock.data["lag_s"] == pytest.approx(expected, abs=0.002), clock.data
    assert 0 <= clock.data["lag_s"] < 60, f"{clock.data} ({clock.at - sent:.2f} s after sending)"
    assert len(ticks) >= 3, f"one clock a second expected, got {len(ticks)} in 2.5 s and more"


def test_the_api_key_is_required_when_set(server: str) -> None:
    for headers in ({}, {"X-API-Key": KEY[:-1] + "x"}):
        refused = httpx.get(f"{server}{STREAM}", headers=headers)
        assert refused.status_code == 401, headers
        assert refused.json()["detail"].startswith("X-API-Key")
    with listen(server, KEY) as stream:
        headers = stream.response.headers
        assert headers["content-type"].startswith("text/event-stream")
        assert headers["cache-control"] == "no-cache"
        assert headers["x-accel-buffering"] == "no"


def test_kafka_unreachable_still_streams_clocks_with_a_null_watermark(
    live_settings: Settings,
) -> None:
    """The chosen behaviour: 200 and `clock` events, so the page can show "no data" while
    it stays connected. This server also has no API key: the stream is open."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{closed.getsockname()[1]}"
    env = worker_env(live_settings) | {"SMARTCITY_KAFKA_BOOTSTRAP": dead}
    with serve(env) as base, listen(base, key=None) as stream:
        clocks = [e for e in stream.drain(3.5) if e.name == "clock"]
        assert httpx.get(f"{base}/").status_code == 200
    assert len(clocks) >= 3, clocks
    assert all(e.data["watermark"] is None and e.data["lag_s"] is None for e in clocks)


def test_a_slow_client_is_dropped_and_counted_while_others_are_served(
    server: str, topics: Settings, producer: Producer, rng: random.Random
) -> None:
    """One client stops reading while anomalies of about 3 KB flow; once the socket buffers
    (which do not grow for a reader that reads nothing) and its 2,000-event queue are full,
    it is dropped. A client that reads keeps receiving every anomaly, and requests keep
    answering. Reading again, the dropped client gets what was already sent, then the end
    of the stream.

    Nothing here depends on how fast the machine is. The next step is produced only once
    the reader has received all but the last `AHEAD` steps, so the reader never has more
    than a quarter of its queue waiting, however slowly it is scheduled; the slow client's
    backlog only grows, so steps go on until it is dropped (the count of steps is bounded
    far above what its queue and socket buffers can hold).
    """
    per_step, ahead, most = 100, 5, 20_000
    assert per_step * ahead <= QUEUE_EVENTS // 4
    dropped = "smartcity_api_live_dropped_clients_total"
    # Only this test's two clients: a client of an earlier test still being let go would
    # fall behind too and be counted.
    wait_until(lambda: metric(server, "smartcity_api_live_clients") == 0, "no client left")
    dropped_before = metric(server, dropped)
    steps: list[set[str]] = []
    with listen(server) as reader, listen(server) as slow:
        slow.reading.clear()
        slow_seen = len(slow.drain(0.5))
        while metric(server, dropped) == dropped_before:
            assert len(steps) * per_step < most, f"the slow client not dropped after {most}"
            burst = [anomaly(rng, padding=3000) for _ in range(per_step)]
            send(producer, topics.topic("anomalies"), burst)
            steps.append({message["anomaly_id"] for message in burst})
            if len(steps) > ahead:
                # A hang guard, not a speed limit: the reader is waited for, never raced.
                reader.wait_for_anomalies(steps[-ahead - 1], timeout=60)
        produced = set().union(*steps)
        reader.wait_for_anomalies(produced, timeout=60)
        assert not reader.ended.is_set(), "the reading client's stream ended"
        assert httpx.get(f"{server}/", timeout=5).status_code == 200
        assert metric(server, "smartcity_api_live_clients") == 1  # the reader only
        slow.reading.set()  # it reads again: what was sent before the drop, then the end
        assert slow.ended.wait(DEADLINE_S), "the dropped client's stream did not end"
        slow.drain(0)
    slow_anomalies = [e for e in slow.seen[slow_seen:] if e.name == "anomaly"]
    assert len(slow_anomalies) < len(produced), "the slow client was sent everything"
    assert metric(server, dropped) == dropped_before + 1
    wait_until(lambda: metric(server, "smartcity_api_live_clients") == 0, "clients gone")


def test_a_replayed_anomaly_reaches_the_map_once() -> None:
    """A worker that replays a range publishes its anomalies again under the same ids."""
    seen = SeenIds(limit=2)
    first = orjson.dumps({"anomaly_id": "a", "kind": "stuck_sensor"})
    assert anomaly_event(first, seen) is not None
    assert anomaly_event(first, seen) is None
    assert anomaly_event(orjson.dumps({"kind": "no id"}), seen) is not None
    for other in ("b", "c"):
        assert anomaly_event(orjson.dumps({"anomaly_id": other}), seen) is not None
    assert anomaly_event(first, seen) is not None, "the oldest id is forgotten past the limit"
