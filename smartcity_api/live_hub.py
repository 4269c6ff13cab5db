"""The live stream's source and fan-out: one Kafka consumer per API process, many SSE clients.

The map needs a sensor's new value within a second; the lake's live state is written once a
second by the worker and then read through listings, so the stream reads the topics
themselves. One consumer per process, made when the first client connects, reads every
partition of the reading topics and of the anomalies topic from their ends, with no group
commit (nothing is owed to anyone: a restarted API simply starts at the new ends).

Its thread does little per message: decode, a cheap check, and keep the newest reading per
sensor in a dict. Once a second it encodes what it kept as SSE events into one block of bytes;
each anomaly is encoded as it comes. Blocks reach the event loop by `call_soon_threadsafe`,
and fan-out appends the same bytes to every client's queue, so the cost of a client is an
append per block, never an encoding. A client whose queue is full (it stopped reading while
events kept coming) is dropped: its stream ends and the drop is counted, so nothing is ever
buffered without bound for a client that cannot keep up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import orjson
from confluent_kafka import OFFSET_END, Consumer, KafkaException, TopicPartition
from prometheus_client import Counter, Gauge

from smartcity.kafka import client_config
from smartcity.settings import SENSOR_TYPES, Settings
from smartcity_api.ingest import MAX_READING_BYTES
from smartcity_api.responses import render

log = logging.getLogger(__name__)
QUEUE_EVENTS = 2000
"""Events a client may have waiting; one more and it is dropped (about ten seconds of a city
of 210 sensors at one reading event a second each, a few seconds of an anomaly storm)."""
TICK_S = 1.0
KEEP_ALIVE_S = 15.0
POLL_S = 0.1
"""The longest the consumer waits for a batch, so an anomaly is on its way within 0.1 s."""
BATCH = 1000
METADATA_TIMEOUT_S = 2.0
RETRY_S = 5.0
"""How often the thread looks again for topics (or a broker) it has not found yet."""
SEEN_ANOMALIES = 100_000
"""How many anomaly ids the feed remembers to drop repeats: a replayed range (a worker's
restart, a rebalance) publishes the same deterministic ids again, well within this many."""
KEEP_ALIVE = b": keep-alive\n\n"
LINE_BREAKS = (b"\n", b"\r")

Deliver = Callable[[bytes, int], None]
"""Hands a block of `count` encoded events to the event loop (called on the consumer thread)."""


def sse(event: bytes, data: bytes) -> bytes:
    return b"event: " + event + b"\ndata: " + data + b"\n\n"


def one_line(raw: bytes, parsed: object) -> bytes:
    """`raw` itself when it fits on one `data:` line, else the same JSON re-encoded compact."""
    return orjson.dumps(parsed) if any(b in raw for b in LINE_BREAKS) else raw


class SeenIds:
    """The last `limit` anomaly ids the feed delivered, oldest forgotten first."""

    def __init__(self, limit: int = SEEN_ANOMALIES) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._limit = limit

    def first_time(self, anomaly_id: object) -> bool:
        """Whether `anomaly_id` is new (a message without a string id always is), noting it."""
        if not isinstance(anomaly_id, str):
            return True
        if anomaly_id in self._ids:
            return False
        self._ids[anomaly_id] = None
        if len(self._ids) > self._limit:
            self._ids.popitem(last=False)
        return True


def anomaly_event(raw: bytes, seen: SeenIds) -> bytes | None:
    """The anomaly message as an `anomaly` event, or None when it is not a JSON object or its
    `anomaly_id` was delivered before."""
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(parsed, dict) or not seen.first_time(parsed.get("anomaly_id")):
        return None
    return sse(b"anomaly", one_line(raw, parsed))


class Coalescer:
    """The newest reading of each sensor since the last `take`, and the event-time watermark.

    "Newest" is the higher `seq` (a duplicate or a late reading arriving after a sensor's next
    one does not replace it); without a usable `seq`, the later arrival. The check is the
    cheap part of the contract the map relies on: a JSON object with a string `sensor_id`
    and an RFC 3339 `event_time` with a zone. Anything else is the stream worker's to
    dead-letter.
    """

    def __init__(self) -> None:
        self._pending: dict[str, tuple[int, bytes]] = {}
        self.watermark: tuple[float, str] | None = None
        """(epoch seconds, the reading's own text) of the newest event time seen; replaced
        whole, so the event loop reads it without a lock."""

    def add(self, raw: bytes) -> None:
        if len(raw) > MAX_READING_BYTES:
            return
        try:
            reading = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return
        if not isinstance(reading, dict):
            return
        sensor_id, event_time, seq = (
            reading.get("sensor_id"),
            reading.get("event_time"),
            reading.get("seq"),
        )
        if not isinstance(sensor_id, str) or not isinstance(event_time, str):
            return
        try:
            instant = datetime.fromisoformat(event_time)
        except ValueError:
            return
        if instant.tzinfo is None:
            return
        order = seq if isinstance(seq, int) and not isinstance(seq, bool) else -1
        kept = self._pending.get(sensor_id)
        if kept is None or order >= kept[0]:
            self._pending[sensor_id] = (order, one_line(raw, reading))
        seconds = instant.timestamp()
        if self.watermark is None or seconds > self.watermark[0]:
            self.watermark = (seconds, event_time)

    def take(self) -> tuple[bytes, int]:
        """The kept readings as `reading` events in one block, and how many; then forget them."""
        pending, self._pending = self._pending, {}
        return b"".join(sse(b"reading", data) for _, data in pending.values()), len(pending)


class KafkaFeed:
    """The consumer and its thread: readings coalesced once a second, anomalies as they come."""

    def __init__(self, settings: Settings, deliver: Deliver) -> None:
        self.settings = settings
        self.deliver = deliver
        self.coalescer = Coalescer()
        self.seen = SeenIds()
        self.anomalies = settings.topic("anomalies")
        self.topics = [settings.reading_topic(t) for t in SENSOR_TYPES] + [self.anomalies]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="live-stream-consumer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _consumer(self) -> Consumer:
        return Consumer(
            client_config(
                self.settings,
                **{
                    "group.id": f"smartcity-api-live-{uuid.uuid4().hex}",
                    "enable.auto.commit": False,
                    "enable.auto.offset.store": False,
                    "auto.offset.reset": "latest",
                },
            )
        )

    def _assign_new(self, consumer: Consumer, assigned: set[tuple[str, int]]) -> bool:
        """Add the partitions not assigned yet, at their ends; True once every topic is in.

        Topics may be created after the API starts, and the broker may be down at first.
        """
        try:
            metadata = consumer.list_topics(timeout=METADATA_TIMEOUT_S)
        except KafkaException:
            return False
        found = {
            (topic, partition)
            for topic in self.topics
            if topic in metadata.topics and metadata.topics[topic].error is None
            for partition in metadata.topics[topic].partitions
        }
        new = found - assigned
        if new:
            consumer.incremental_assign([TopicPartition(t, p, OFFSET_END) for t, p in new])
            assigned |= new
        return {topic for topic, _ in assigned} == set(self.topics)

    def _run(self) -> None:
        consumer = self._consumer()
        assigned: set[tuple[str, int]] = set()
        complete, looked = False, float("-inf")
        flush_at = time.monotonic() + TICK_S
        try:
            while not self._stop.is_set():
                if not complete and time.monotonic() - looked >= RETRY_S:
                    complete, looked = self._assign_new(consumer, assigned), time.monotonic()
                try:
                    messages = consumer.consume(BATCH, POLL_S) if assigned else []
                except KafkaException as error:  # fatal for this consumer: say so, keep the clock
                    log.warning("live stream: the consumer failed: %s", error)
                    break
                if not assigned:
                    self._stop.wait(POLL_S)
                self._handle(messages)
                if time.monotonic() >= flush_at:
                    flush_at = time.monotonic() + TICK_S
                    block, count = self.coalescer.take()
                    if count:
                        self.deliver(block, count)
        finally:
            consumer.close()

    def _handle(self, messages: list) -> None:
        events: list[bytes] = []
        for message in messages:
            raw = message.value()
            if message.error() is not None or raw is None:
                continue
            if message.topic() == self.anomalies:
                event = anomaly_event(raw, self.seen)
                if event is not None:
                    events.append(event)
            else:
                self.coalescer.add(raw)
        if events:
            self.deliver(b"".join(events), len(events))


class Subscriber:
    """One client's queue: blocks of encoded events waiting for its connection to take them."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.dropped = False
        self._blocks: deque[bytes] = deque()
        self._queued = 0
        self._ready = asyncio.Event()

    def offer(self, block: bytes, count: int) -> bool:
        """Queue `count` events; False (nothing queued) when the client is that far behind.

        A client that has taken everything accepts any block, so a city whose second of
        readings alone exceeds the limit still streams to clients that keep up.
        """
        if self._queued and self._queued + count > self.limit:
            return False
        self._blocks.append(block)
        self._queued += count
        self._ready.set()
        return True

    def drop(self) -> None:
        self.dropped = True
        self._blocks.clear()
        self._ready.set()

    async def events(self) -> AsyncIterator[bytes]:
        """What is queued, joined into one write per wake-up; a comment line after 15 s of
        nothing so proxies keep the connection; ends once the client is dropped."""
        while not self.dropped:
            try:
                async with asyncio.timeout(KEEP_ALIVE_S):
                    await self._ready.wait()
            except TimeoutError:
                yield KEEP_ALIVE
                continue
            self._ready.clear()
            if self.dropped:
                return
            blocks, self._blocks, self._queued = self._blocks, deque(), 0
            yield b"".join(blocks)


class LiveHub:
    """The feed of one API process and the clients it fans out to (all on the event loop).

    The `clock` event comes from the event loop, not from Kafka, so it keeps coming when the
    broker is unreachable: the page can tell "no data" from "no connection".
    """

    def __init__(
        self, settings: Settings, clients: Gauge, dropped: Counter, limit: int = QUEUE_EVENTS
    ) -> None:
        self.settings = settings
        self.clients = clients
        self.dropped = dropped
        self.limit = limit
        self._subscribers: set[Subscriber] = set()
        self._feed: KafkaFeed | None = None
        self._ticker: asyncio.Task[None] | None = None

    def subscribe(self) -> Subscriber:
        """A new client, sent a `clock` at once; the first one starts the feed and the clock."""
        if self._feed is None:
            loop = asyncio.get_running_loop()

            def deliver(block: bytes, count: int) -> None:
                with contextlib.suppress(RuntimeError):  # the loop is closed: nobody listens
                    loop.call_soon_threadsafe(self.publish, block, count)

            self._feed = KafkaFeed(self.settings, deliver)
            self._feed.start()
            self._ticker = loop.create_task(self._tick(), name="live-stream-clock")
        subscriber = Subscriber(self.limit)
        self._subscribers.add(subscriber)
        self.clients.inc()
        subscriber.offer(self.clock(), 1)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        if subscriber in self._subscribers:
            self._subscribers.remove(subscriber)
            self.clients.dec()

    def publish(self, block: bytes, count: int) -> None:
        for subscriber in list(self._subscribers):
            if not subscriber.offer(block, count):
                subscriber.drop()
                self.unsubscribe(subscriber)
                self.dropped.inc()

    def clock(self) -> bytes:
        now = time.time()
        watermark = self._feed.coalescer.watermark if self._feed is not None else None
        return sse(
            b"clock",
            render(
                {
                    "now": datetime.fromtimestamp(now, UTC),
                    "watermark": None if watermark is None else watermark[1],
                    "lag_s": None if watermark is None else round(now - watermark[0], 3),
                }
            ),
        )

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            due += TICK_S
            await asyncio.sleep(due - loop.time())
            self.publish(self.clock(), 1)

    def close(self) -> None:
        """End every client's stream, the clock and the consumer (at the app's shutdown)."""
        for subscriber in list(self._subscribers):
            subscriber.drop()
            self.unsubscribe(subscriber)
        if self._ticker is not None:
            self._ticker.cancel()
        if self._feed is not None:
            self._feed.close()
