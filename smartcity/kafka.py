"""Kafka clients configured once from the settings, and the broker reachability check."""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, ClusterMetadata

from smartcity.settings import Settings

_quiet = logging.getLogger("smartcity.librdkafka")
_quiet.addHandler(logging.NullHandler())
_quiet.propagate = False


class BrokerUnreachable(RuntimeError):
    """No broker answered at `SMARTCITY_KAFKA_BOOTSTRAP` in time."""


def client_config(settings: Settings, **extra: Any) -> dict[str, Any]:
    """The settings every client shares; librdkafka's connection noise goes to a quiet logger."""
    return {"bootstrap.servers": settings.kafka_bootstrap, "logger": _quiet, **extra}


def admin_client(settings: Settings) -> AdminClient:
    return AdminClient(client_config(settings))


def cluster_metadata(settings: Settings, admin: AdminClient | None = None) -> ClusterMetadata:
    """Metadata of the cluster, or `BrokerUnreachable` within `kafka_timeout_s`."""
    client = admin or admin_client(settings)
    try:
        return client.list_topics(timeout=settings.kafka_timeout_s)
    except KafkaException:
        raise BrokerUnreachable(
            f"SMARTCITY_KAFKA_BOOTSTRAP={settings.kafka_bootstrap}: no Kafka broker answered "
            f"within {settings.kafka_timeout_s:g} s (start one with `smartcity services up`)"
        ) from None
