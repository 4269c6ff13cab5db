"""What every ingest path shares (HTTP, MQTT): judge a reading as the stream worker does, and
produce it to its Kafka topic keyed by sensor, with the dead-letter topic's headers.

The gate is the worker's own compiled contract (`ReadingDecoder`) plus the registry in
force, so a reading an ingest path accepts is one the worker lands, and an unknown sensor is
reported at the door instead of later in the dead-letter topic.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from confluent_kafka import Producer

from smartcity.contract import ContractError, ReadingDecoder
from smartcity.kafka import client_config
from smartcity.lake import Lake
from smartcity.registry import RegistryFollower
from smartcity.settings import Settings

UNKNOWN_SENSOR = "unknown_sensor"
TOO_LARGE = "too_large"
"""A message far larger than any reading (each path says where its limit lies)."""
ERROR_HEADER_BYTES = 1000
BACKPRESSURE_POLL_S = 0.05

Delivered = Callable[[Any, Any], None]
"""confluent-kafka's delivery callback: (error or None, message)."""


class ReadingGate:
    """Contract and registry in one check; the registry is looked up again now and then."""

    def __init__(self, follower: RegistryFollower) -> None:
        self._decode = ReadingDecoder().decode
        self._follower = follower
        self._active = follower.current.active_ids()

    @classmethod
    def for_lake(cls, lake: Lake, every_s: float = 10.0) -> ReadingGate:
        return cls(RegistryFollower.start(lake, every_s))

    def refresh(self) -> None:
        """Pick up a newly imported registry (cheap: at most one look-up per period)."""
        if self._follower.refresh():
            self._active = self._follower.current.active_ids()

    def judge(self, raw: bytes) -> dict[str, Any]:
        """The reading, or `ContractError` whose `reason` is the dead-letter reason."""
        reading = self._decode(raw)
        if reading["sensor_id"] not in self._active:
            raise ContractError(
                f"sensor_id: {reading['sensor_id']} is not an active sensor of the registry",
                reason=UNKNOWN_SENSOR,
            )
        return reading


def ingest_producer(settings: Settings, **extra: Any) -> Producer:
    """Idempotent (acks from all in-sync replicas, no duplicates from retries), batched."""
    return Producer(
        client_config(
            settings,
            **{"enable.idempotence": True, "linger.ms": 5, "compression.type": "lz4", **extra},
        )
    )


def produce(
    producer: Producer,
    topic: str,
    key: bytes | None,
    value: bytes,
    on_delivery: Delivered,
    headers: list[tuple[str, bytes]] | None = None,
) -> None:
    """Produce, waiting for deliveries while the local queue is full instead of failing."""
    while True:
        try:
            producer.produce(topic, key=key, value=value, headers=headers, on_delivery=on_delivery)
            return
        except BufferError:
            producer.poll(BACKPRESSURE_POLL_S)


def dead_letter_headers(reason: str, error: str, **source: str) -> list[tuple[str, bytes]]:
    """The dead-letter topic's headers: the reason, the error, and where the message came
    from (`source_topic`, `mqtt_topic`...)."""
    headers = [("error", error.encode()[:ERROR_HEADER_BYTES]), ("reason", reason.encode())]
    return headers + [(name, value.encode()) for name, value in source.items()]
