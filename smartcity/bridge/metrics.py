"""The MQTT bridge's Prometheus metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

REGISTRY = CollectorRegistry()

RECEIVED = Counter(
    "smartcity_bridge_mqtt_messages_total", "MQTT messages received.", registry=REGISTRY
)
PRODUCED = Counter(
    "smartcity_bridge_mqtt_produced_total",
    "Readings Kafka acknowledged on their reading topic.",
    ["sensor_type"],
    registry=REGISTRY,
)
DEAD_LETTERS = Counter(
    "smartcity_bridge_mqtt_dead_letters_total",
    "Messages Kafka acknowledged on the dead-letter topic.",
    ["reason"],
    registry=REGISTRY,
)
DELIVERY_FAILURES = Counter(
    "smartcity_bridge_mqtt_delivery_failures_total",
    "Produces Kafka did not acknowledge; left unacknowledged on MQTT, so sent again.",
    registry=REGISTRY,
)
UNACKED = Gauge(
    "smartcity_bridge_mqtt_unacked",
    "MQTT messages waiting for Kafka before their PUBACK.",
    registry=REGISTRY,
)
