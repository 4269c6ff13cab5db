"""What the API asks Kafka: reachability for /health, offsets and lag for /statistics.

One admin client per process, short timeouts (an API must answer even when the broker
does not), and results cached for a few seconds so a dashboard polling /health does not
turn into a metadata request per poll.
"""

from __future__ import annotations

import threading
from typing import Any

from cachetools import TTLCache
from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from smartcity.kafka import BrokerUnreachable, admin_client, cluster_metadata
from smartcity.settings import Settings
from smartcity_stream.worker import GROUP_ID

TIMEOUT_S = 2.0
CACHE_S = 3.0


class Broker:
    """Cached, short-timeout questions to the Kafka cluster."""

    def __init__(self, settings: Settings) -> None:
        timeout = min(TIMEOUT_S, settings.kafka_timeout_s)
        self.settings = settings.model_copy(update={"kafka_timeout_s": timeout})
        self._admin: AdminClient | None = None
        self._lock = threading.Lock()
        self._cache: TTLCache[str, Any] = TTLCache(4, CACHE_S)

    @property
    def admin(self) -> AdminClient:
        with self._lock:
            if self._admin is None:
                self._admin = admin_client(self.settings)
            return self._admin

    def _cached(self, key: str, compute: Any) -> Any:
        with self._lock:
            if key in self._cache:
                return self._cache[key]
        value = compute()
        with self._lock:
            self._cache[key] = value
        return value

    def reachable(self) -> tuple[bool, str]:
        """(True, brokers/topics summary) or (False, why), cached a few seconds."""

        def probe() -> tuple[bool, str]:
            try:
                metadata = cluster_metadata(self.settings, self.admin)
            except BrokerUnreachable as error:
                return False, str(error)
            return True, f"{len(metadata.brokers)} broker(s), {len(metadata.topics)} topic(s)"

        return self._cached("reachable", probe)

    def offsets(self) -> dict[str, Any]:
        """End offsets of the platform's topics and the stream group's lag on each."""
        return self._cached("offsets", self._offsets)

    def _offsets(self) -> dict[str, Any]:
        metadata = cluster_metadata(self.settings, self.admin)
        topics = [t for t in self.settings.all_topics if t in metadata.topics]
        partitions = [
            TopicPartition(t, p) for t in topics for p in sorted(metadata.topics[t].partitions)
        ]
        timeout = self.settings.kafka_timeout_s
        try:
            ends = {
                (tp.topic, tp.partition): future.result().offset
                for tp, future in self.admin.list_offsets(
                    {tp: OffsetSpec.latest() for tp in partitions}, request_timeout=timeout
                ).items()
            }
            request = [ConsumerGroupTopicPartitions(GROUP_ID)]
            group = self.admin.list_consumer_group_offsets(request, request_timeout=timeout)
            committed = {
                (tp.topic, tp.partition): tp.offset
                for tp in group[GROUP_ID].result().topic_partitions or []
                if tp.offset >= 0
            }
        except KafkaException as error:
            raise BrokerUnreachable(f"Kafka offsets could not be read: {error}") from None
        result = []
        for topic in topics:
            rows = []
            for tp in (tp for tp in partitions if tp.topic == topic):
                end = ends[(topic, tp.partition)]
                done = committed.get((topic, tp.partition))
                lag = None if done is None else max(0, end - done)
                rows.append(
                    {
                        "partition": tp.partition,
                        "end_offset": end,
                        "committed_offset": done,
                        "lag": lag,
                    }
                )
            lags = [row["lag"] for row in rows if row["lag"] is not None]
            result.append(
                {
                    "topic": topic,
                    "partitions": rows,
                    "end_offset_total": sum(row["end_offset"] for row in rows),
                    "lag_total": sum(lags) if lags else None,
                }
            )
        return {"group": GROUP_ID, "topics": result}
