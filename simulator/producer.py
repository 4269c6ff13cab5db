"""The Kafka side: produce fast, count only what the broker acknowledged.

Throughput comes from librdkafka's own batching (linger, large batches, lz4, a large local
queue) and from never waiting per message: `produce` only queues, `poll(0)` after each batch
serves delivery reports. Safety comes from idempotence with `acks=all` (no duplicates or
reordering from retries) and from the delivery reports: a message counts as sent only when its
report says so.

Each queued message leaves a small integer tag (seq, sensor type, message code) in a FIFO per
key. Delivery reports of one partition arrive in produce order, and all messages of one key go
to one partition, so the report for a key always belongs to the oldest tag of that key: no
per-message callback object is needed.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from simulator.faults import FAULT_KINDS, READING_CODES
from simulator.simulation import Batch
from smartcity.kafka import client_config, cluster_metadata
from smartcity.settings import SENSOR_TYPES, Settings

PRODUCER_CONFIG: dict[str, Any] = {
    "enable.idempotence": True,
    "acks": "all",
    "linger.ms": 25,
    "batch.size": 4_000_000,
    "batch.num.messages": 100_000,
    "compression.type": "lz4",
    "queue.buffering.max.messages": 2_000_000,
    "queue.buffering.max.kbytes": 2_097_152,
    "message.timeout.ms": 60_000,
}
"""Tuned for throughput on a small machine; `message.timeout.ms` bounds how long a dead broker
can keep a run waiting before its messages count as failed."""

_CODE_BITS, _TYPE_BITS = 4, 2  # tag = seq | sensor type | message code, low bits last
_SEQ_SHIFT = _CODE_BITS + _TYPE_BITS
_CODE_MASK, _TYPE_MASK = (1 << _CODE_BITS) - 1, (1 << _TYPE_BITS) - 1
_CODES = len(FAULT_KINDS) + 1


class TopicsMissing(RuntimeError):
    """The reading topics do not exist (the message says how to create them)."""


@dataclass
class TopicCounts:
    """What happened to the messages of one topic."""

    produced: int = 0
    acknowledged_by_code: list[int] = field(default_factory=lambda: [0] * _CODES)
    failed: int = 0

    @property
    def acknowledged(self) -> int:
        return sum(self.acknowledged_by_code)

    @property
    def readings_acknowledged(self) -> int:
        """Acknowledged messages that carry a reading once: distinct (sensor_id, seq) pairs."""
        return sum(self.acknowledged_by_code[c] for c in READING_CODES)

    def faults(self) -> dict[str, int]:
        return {kind: self.acknowledged_by_code[i + 1] for i, kind in enumerate(FAULT_KINDS)}


class ReadingProducer:
    """One idempotent producer for the three reading topics, with delivery accounting."""

    def __init__(self, settings: Settings, overrides: Mapping[str, Any] | None = None) -> None:
        topics = {t: settings.reading_topic(t) for t in SENSOR_TYPES}
        missing = sorted(set(topics.values()) - set(cluster_metadata(settings).topics))
        if missing:
            raise TopicsMissing(
                f"topics {', '.join(missing)} do not exist at {settings.kafka_bootstrap}; "
                "create them with `smartcity topics create`"
            )
        self._topics = topics
        self.counts = {t: TopicCounts() for t in SENSOR_TYPES}
        self.last_acknowledged_seq: dict[bytes, int] = {}
        self.errors: collections.Counter[str] = collections.Counter()
        self.fatal: KafkaError | None = None
        self._pending: collections.defaultdict[bytes, collections.deque[int]] = (
            collections.defaultdict(collections.deque)
        )
        config = client_config(
            settings, **{**PRODUCER_CONFIG, **(overrides or {})}, on_delivery=self._on_delivery
        )
        self._producer = Producer(config)

    def send(self, batch: Batch) -> None:
        """Queue a batch (waiting only while the local queue is full), then serve reports."""
        topic = self._topics[batch.sensor_type]
        type_bits = SENSOR_TYPES.index(batch.sensor_type) << _CODE_BITS
        produce, pending = self._producer.produce, self._pending
        for key, value, seq, code in batch.messages:
            while True:
                try:
                    produce(topic, value, key)
                    break
                except BufferError:
                    self._producer.poll(0.05)
            pending[key].append(seq << _SEQ_SHIFT | type_bits | code)
        self.counts[batch.sensor_type].produced += len(batch.messages)
        self._producer.poll(0)

    def _on_delivery(self, error: KafkaError | None, message: Message) -> None:
        key = message.key()
        tag = self._pending[key].popleft()
        code = tag & _CODE_MASK
        counts = self.counts[SENSOR_TYPES[(tag >> _CODE_BITS) & _TYPE_MASK]]
        if error is not None:
            counts.failed += 1
            self.errors[error.name()] += 1
            if error.fatal():
                self.fatal = error
            return
        counts.acknowledged_by_code[code] += 1
        if code in READING_CODES:
            seq = tag >> _SEQ_SHIFT
            if seq > self.last_acknowledged_seq.get(key, -1):
                self.last_acknowledged_seq[key] = seq

    @property
    def acknowledged(self) -> int:
        return sum(c.acknowledged for c in self.counts.values())

    @property
    def produced(self) -> int:
        return sum(c.produced for c in self.counts.values())

    def poll(self, timeout: float = 0) -> None:
        self._producer.poll(timeout)

    def flush(self, timeout: float) -> int:
        """Wait for the outstanding reports; returns how many stayed unconfirmed."""
        return self._producer.flush(timeout)
