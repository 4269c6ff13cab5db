"""The worker's publications: dead letters and anomalies, sent the moment detection finds
them and acknowledged before the round that holds their offsets commits.

The shape of each message (a dead letter's headers, its cut to the topic's size limit) is
`smartcity_stream.publish`'s; this is the producer and its bookkeeping. A delivery error is
not retried here: it fails the round, nothing of which was committed, so the range is
consumed, detected and published again after the restart.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from confluent_kafka import KafkaError, Message, Producer

from smartcity.ingest import produce
from smartcity.settings import Settings
from smartcity_stream import metrics
from smartcity_stream.publish import TRUNCATED, dead_letter, message_limit, worker_producer
from smartcity_stream.totals import WorkerTotals

log = logging.getLogger("smartcity.stream")


class DeliveryFailed(RuntimeError):
    """The broker did not acknowledge a dead letter or an anomaly; the range is replayed."""


class Publisher:
    """Dead letters and anomalies through one idempotent producer."""

    def __init__(
        self, settings: Settings, totals: WorkerTotals, producer_settings: dict[str, Any]
    ) -> None:
        self.dead_letter_topic = settings.topic("deadletter")
        self.anomaly_topic = settings.topic("anomalies")
        self.dead_letter_limit = message_limit(settings, self.dead_letter_topic)
        self.producer: Producer = worker_producer(
            settings, self.dead_letter_limit, producer_settings
        )
        self.totals = totals
        self._errors: list[str] = []

    def dead_letter(self, message: Message, reason: str, error: str) -> None:
        """The message as it came, its reason and source in headers; cut to what the
        dead-letter topic takes if it is larger (`smartcity_stream.publish`)."""
        key, value, headers = dead_letter(message, reason, error, self.dead_letter_limit)
        if any(name == TRUNCATED for name, _ in headers):
            log.warning(
                "dead letter of %s/%d@%d cut to %d bytes",
                message.topic(),
                message.partition(),
                message.offset(),
                len(key or b"") + len(value or b""),
            )
        produce(self.producer, self.dead_letter_topic, key, value, self._delivered, headers)
        self.producer.poll(0)
        self.totals.dead_letters += 1
        self.totals.by_reason[reason] += 1
        metrics.DEAD_LETTERS.labels(reason).inc()

    def anomaly(self, sensor_id: str, message: dict[str, Any]) -> None:
        """One anomaly, keyed by its sensor (its partition follows the sensor's)."""
        produce(
            self.producer,
            self.anomaly_topic,
            sensor_id.encode(),
            orjson.dumps(message),
            self._delivered,
        )

    def poll(self) -> None:
        """Serve delivery reports (they free the producer's queue)."""
        self.producer.poll(0)

    def wait_acknowledged(self) -> None:
        """Wait until every dead letter and anomaly is acknowledged (a broker that is still
        loading its coordinators only delays them); a delivery error fails the round and
        stops the worker: nothing of the round was committed, so it is replayed."""
        while remaining := self.producer.flush(30):
            log.warning("%d dead letters/anomalies still unacknowledged; waiting", remaining)
        if self._errors:
            errors, self._errors = self._errors, []
            raise DeliveryFailed(f"{len(errors)} not delivered: {errors[:3]}")

    def close(self) -> None:
        self.producer.flush(10)

    def _delivered(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self._errors.append(str(error))
