"""What the worker publishes (dead letters, anomalies), so that no bad input can stop it.

Two ways a publication used to crash the worker, and on a restart crash it again at the same
offset (nothing of the range was committed, so it is consumed again):
- A full local queue. `Producer.produce` raises `BufferError` when the producer holds
  `queue.buffering.max.messages` unacknowledged messages, which a flood of bad messages
  reaches faster than the broker acknowledges. Every publication goes through
  `smartcity.ingest.produce`, which the ingest paths use too: it polls the producer instead
  (delivery reports free the queue) and tries again, back-pressure on the consuming thread.
- A dead letter the broker refuses for its size. The dead-letter topic takes messages up to
  its `max.message.bytes` (the broker's `message.max.bytes` unless the topic sets its own,
  about 1 MB by default), while a reading topic may take larger ones, and a dead letter
  also carries its headers. `dead_letter` cuts such a message to what fits, from the end,
  and says so in a `truncated` header holding the original size.
"""

from __future__ import annotations

import logging
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import ConfigResource, ResourceType
from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_fixed

from smartcity.ingest import dead_letter_headers, ingest_producer
from smartcity.kafka import admin_client
from smartcity.settings import Settings

log = logging.getLogger("smartcity.stream")

Headers = list[tuple[str, bytes]]

TRUNCATED = "truncated"
TRUNCATED_KEY = "truncated_key"
# librdkafka's own `message.max.bytes`, a little below Kafka's default (1,048,588): the
# limit assumed when the broker does not say what the dead-letter topic takes.
DEFAULT_MESSAGE_MAX_BYTES = 1_000_000
_LIBRDKAFKA_MESSAGE_MAX_BYTES = (1_000, 1_000_000_000)  # the range librdkafka accepts
# A record batch's header (61 bytes), the record's own framing and each header's lengths
# (varints), with room to spare: what a message needs beyond its key, value and headers.
FRAMING_BYTES = 1_024


def message_limit(settings: Settings, topic: str) -> int:
    """The largest message `topic` takes (its `max.message.bytes`, asked of the broker);
    `DEFAULT_MESSAGE_MAX_BYTES` if the broker does not answer within `kafka_timeout_s`. A
    topic created a moment ago may be unknown to the broker asked for a while: asked again."""
    resource = ConfigResource(ResourceType.TOPIC, topic)
    # Held until the answer is in: a client destroyed first fails its own request.
    admin = admin_client(settings)

    def ask() -> int:
        futures = admin.describe_configs([resource], request_timeout=settings.kafka_timeout_s)
        entries = next(iter(futures.values())).result(timeout=settings.kafka_timeout_s + 5)
        return int(entries["max.message.bytes"].value)

    try:
        return Retrying(
            retry=retry_if_exception(_unknown_topic),
            wait=wait_fixed(0.2),
            stop=stop_after_delay(settings.kafka_timeout_s),
            reraise=True,
        )(ask)
    except (KafkaException, FutureTimeout, KeyError, ValueError) as error:
        log.warning(
            "max.message.bytes of %s unknown (%s): dead letters cut at %d bytes",
            topic,
            error,
            DEFAULT_MESSAGE_MAX_BYTES,
        )
        return DEFAULT_MESSAGE_MAX_BYTES


def _unknown_topic(error: BaseException) -> bool:
    return (
        isinstance(error, KafkaException)
        and error.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART
    )


def worker_producer(
    settings: Settings, message_max_bytes: int, overrides: dict[str, Any]
) -> Producer:
    """The ingest paths' producer (idempotent, lz4, a short linger), taking messages as large
    as the dead-letter topic does; `overrides` are librdkafka settings over these (a test
    gives it a tiny queue)."""
    low, high = _LIBRDKAFKA_MESSAGE_MAX_BYTES
    limit = min(max(message_max_bytes, low), high)
    return ingest_producer(settings, **{"message.max.bytes": limit, **overrides})


def dead_letter(
    message: Message, reason: str, error: str, limit: int
) -> tuple[bytes | None, bytes | None, Headers]:
    """Key, value and headers of a message's dead letter: the message as it came, with its
    reason and source (`docs/stream.md`), cut to `limit` bytes if it is larger."""
    headers = dead_letter_headers(
        reason,
        error,
        source_topic=message.topic(),
        source_partition=str(message.partition()),
        source_offset=str(message.offset()),
    )
    return fit_dead_letter(message.key(), message.value(), headers, limit)


def fit_dead_letter(
    key: bytes | None, value: bytes | None, headers: Headers, limit: int
) -> tuple[bytes | None, bytes | None, Headers]:
    """The dead letter as it fits in `limit` bytes: unchanged if it does; else its value cut
    from the end, with a `truncated` header holding the value's original size, and if the
    key alone is still too large, the key cut too (`truncated_key`, its original size)."""
    key_size, value_size = len(key or b""), len(value or b"")
    room = limit - FRAMING_BYTES - _size(headers)
    if key_size + value_size <= room:
        return key, value, headers
    cut_value = (TRUNCATED, str(value_size).encode())
    room -= _size([cut_value])
    if key_size <= room:
        return key, (value or b"")[: room - key_size], [*headers, cut_value]
    cut_key = (TRUNCATED_KEY, str(key_size).encode())
    room -= _size([cut_key])
    return (key or b"")[: max(room, 0)], b"", [*headers, cut_value, cut_key]


def _size(headers: Headers) -> int:
    return sum(len(name) + len(value) for name, value in headers)
