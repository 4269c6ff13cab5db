"""The real broker: an idempotent producer's keyed messages come back exactly once."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import NewTopic

from smartcity.kafka import admin_client, client_config
from smartcity.settings import Settings

pytestmark = pytest.mark.integration

MESSAGES = 10_000


def test_idempotent_producer_and_consumer_group_agree(live_settings: Settings) -> None:
    topic = live_settings.topic(f"roundtrip-{uuid.uuid4().hex[:6]}")
    admin = admin_client(live_settings)
    admin.create_topics([NewTopic(topic, num_partitions=3)])[topic].result(timeout=30)

    failures: list[str] = []

    def delivered(error: object, message: object) -> None:
        if error is not None:
            failures.append(str(error))

    producer = Producer(
        client_config(live_settings, **{"enable.idempotence": True, "linger.ms": 20})
    )
    sent = {f"SENSOR_{i % 210:04d}:{i}" for i in range(MESSAGES)}
    for value in sent:
        key = value.split(":", 1)[0]
        producer.produce(topic, value=value.encode(), key=key.encode(), on_delivery=delivered)
        producer.poll(0)
    assert producer.flush(30) == 0
    assert failures == []

    consumer = Consumer(
        client_config(
            live_settings,
            **{
                "group.id": f"roundtrip-{uuid.uuid4().hex[:6]}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            },
        )
    )
    consumer.subscribe([topic])
    received: list[str] = []
    partitions: set[int] = set()
    idle = 0
    while len(received) < MESSAGES and idle < 20:
        batch = consumer.consume(num_messages=1000, timeout=1.0)
        idle = 0 if batch else idle + 1
        for message in batch:
            assert message.error() is None
            received.append(message.value().decode())
            partitions.add(message.partition())
            assert message.key().decode() == message.value().decode().split(":", 1)[0]
        if batch:
            consumer.commit(asynchronous=False)
    consumer.close()

    assert len(received) == MESSAGES
    assert set(received) == sent
    assert partitions == {0, 1, 2}
