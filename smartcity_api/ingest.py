"""Readings posted over HTTP: judged as the stream worker judges them, produced to Kafka, and
confirmed per request once Kafka has acknowledged each one.

One idempotent producer per API worker process, polled by one background thread. Each
request's messages carry their own `Delivery`, which their delivery reports complete on the
request's event loop: a request waits for its own messages only, where a `flush` per request
would wait for everyone's.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from smartcity.contract import ContractError
from smartcity.ingest import TOO_LARGE, ReadingGate, ingest_producer, produce
from smartcity.lake import Lake
from smartcity.settings import SENSOR_TYPES, Settings

MAX_READING_BYTES = 64 * 1024
"""A reading is a few hundred bytes; far larger ones (the contract ignores extra fields)
would be refused by the broker at 1 MB, so they are refused here, with a reason."""
POLL_S = 0.1


@dataclass(frozen=True)
class Rejection:
    index: int
    reason: str
    error: str


@dataclass(frozen=True)
class Outcome:
    """What became of a request's valid readings: acknowledged, or not (yet) confirmed."""

    acknowledged: int
    unconfirmed: int
    error: str | None


class Delivery:
    """One request's messages in flight. Delivery reports arrive on the polling thread (or a
    producing thread waiting on a full queue); the request's future is completed on its own
    event loop once every message produced for it has been reported."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.done: asyncio.Future[None] = loop.create_future()
        self._lock = threading.Lock()
        self._reported = 0
        self._acknowledged = 0
        self._expected: int | None = None
        self._error: str | None = None

    def report(self, error: KafkaError | None, _message: Message) -> None:
        with self._lock:
            self._reported += 1
            if error is None:
                self._acknowledged += 1
            elif self._error is None:
                self._error = error.str()
            complete = self._reported == self._expected
        if complete:
            self._complete()

    def seal(self, produced: int, error: str | None = None) -> None:
        """No more messages: `produced` were handed to the producer (`error` if it stopped)."""
        with self._lock:
            self._expected = produced
            self._error = self._error or error
            complete = self._reported == produced
        if complete:
            self._complete()

    def outcome(self, valid: int) -> Outcome:
        with self._lock:
            return Outcome(self._acknowledged, valid - self._acknowledged, self._error)

    def _complete(self) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            self._loop.call_soon_threadsafe(self._resolve)

    def _resolve(self) -> None:
        if not self.done.done():
            self.done.set_result(None)


class Ingest:
    """The gate, the producer and its polling thread of one API worker process.

    Nothing connects until the first reading arrives, so an API that only reads never opens
    a producer; `close` flushes what is queued at shutdown.
    """

    def __init__(self, settings: Settings, lake: Lake) -> None:
        self.settings = settings
        self.lake = lake
        self.topics = {name: settings.reading_topic(name) for name in SENSOR_TYPES}
        self._lock = threading.Lock()
        self._gate: ReadingGate | None = None
        self._producer: Producer | None = None
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None

    def gate(self) -> ReadingGate:
        with self._lock:
            if self._gate is None:
                self._gate = ReadingGate.for_lake(self.lake, self.settings.registry_refresh_s)
            else:
                self._gate.refresh()
            return self._gate

    def producer(self) -> Producer:
        with self._lock:
            if self._producer is None:
                self._producer = ingest_producer(self.settings)
                self._poller = threading.Thread(
                    target=self._poll, args=(self._producer,), name="ingest-poll", daemon=True
                )
                self._poller.start()
            return self._producer

    def _poll(self, producer: Producer) -> None:
        while not self._stop.is_set():
            producer.poll(POLL_S)

    def submit(self, items: list[bytes], delivery: Delivery) -> tuple[int, list[Rejection]]:
        """Judge each item, produce the valid ones for `delivery`; (valid, rejections).

        Blocking (a full queue waits for deliveries): run it off the event loop.
        """
        judge = self.gate().judge
        rejected: list[Rejection] = []
        valid: list[tuple[str, bytes, bytes]] = []
        for index, raw in enumerate(items):
            if len(raw) > MAX_READING_BYTES:
                error = f"a reading is at most {MAX_READING_BYTES} bytes, got {len(raw)}"
                rejected.append(Rejection(index, TOO_LARGE, error))
                continue
            try:
                reading = judge(raw)
            except ContractError as error:
                rejected.append(Rejection(index, error.reason, str(error)))
                continue
            sensor_id: str = reading["sensor_id"]
            valid.append((self.topics[reading["sensor_type"]], sensor_id.encode(), raw))
        if not valid:
            delivery.seal(0)
            return 0, rejected
        producer, report = self.producer(), delivery.report
        produced = 0
        try:
            for topic, key, value in valid:
                produce(producer, topic, key, value, report)
                produced += 1
        except KafkaException as error:
            delivery.seal(produced, f"the producer refused a reading: {error.args[0].str()}")
        else:
            delivery.seal(produced)
        return len(valid), rejected

    def close(self) -> None:
        """Stop polling and give queued readings `kafka_timeout_s` to be delivered."""
        self._stop.set()
        if self._poller is not None:
            self._poller.join()
        if self._producer is not None:
            self._producer.flush(self.settings.kafka_timeout_s)
