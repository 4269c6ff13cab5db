"""A real Mosquitto broker for the MQTT bridge's tests, started through the platform's own
service module, and helpers to publish readings, run the bridge and read Kafka back."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import httpx
import orjson
import paho.mqtt.client as mqtt
import pytest
from confluent_kafka import Consumer, Message
from prometheus_client.parser import text_string_to_metric_families

from smartcity.kafka import client_config
from smartcity.services import mosquitto
from smartcity.services.processes import ServiceRecord, free_port, stop
from smartcity.settings import Settings
from tests.stream_support import SMARTCITY, worker_env

PUBLISH_WINDOW = 1000
"""QoS 1 messages a publisher has in flight: paho itself is left unlimited, because its own
queue is scanned on every PUBACK."""


@pytest.fixture(scope="session")
def mqtt_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`host:port` of a Mosquitto of this test run, in a runtime folder of its own."""
    settings = Settings(_env_file=None, runtime_dir=tmp_path_factory.mktemp("mqtt-runtime"))
    record: ServiceRecord = mosquitto.start(settings)
    try:
        yield record.env["SMARTCITY_MQTT_BROKER"]
    finally:
        stop(record)


def host_port(broker: str) -> tuple[str, int]:
    host, _, port = broker.rpartition(":")
    return host, int(port)


@dataclass
class Bridge:
    """A `smartcity bridge mqtt` subprocess and the port of its /metrics and /healthz."""

    process: subprocess.Popen[bytes]
    port: int

    def healthy(self) -> bool:
        try:
            response = httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=2.0)
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        text = httpx.get(f"http://127.0.0.1:{self.port}/metrics", timeout=5.0).text
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    def received(self) -> float:
        try:
            return self.metrics()[("smartcity_bridge_mqtt_messages_total", ())]
        except httpx.HTTPError:
            return 0.0

    def output(self) -> str:
        _, stderr = self.process.communicate(timeout=60)
        return stderr.decode(errors="replace")[-3000:]


def start_bridge(settings: Settings, broker: str, client_id: str) -> Bridge:
    """Start the bridge and return once it is subscribed (its /healthz says ok)."""
    port = free_port()
    env = {**worker_env(settings), "SMARTCITY_MQTT_BROKER": broker}
    process = subprocess.Popen(
        [SMARTCITY, "bridge", "mqtt", "--client-id", client_id, "--metrics-port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    bridge = Bridge(process, port)
    deadline = time.monotonic() + 60
    while not bridge.healthy():
        if process.poll() is not None:
            raise AssertionError(f"the bridge exited at start:\n{bridge.output()}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"the bridge did not become healthy:\n{bridge.output()}")
        time.sleep(0.1)
    return bridge


class Publisher:
    """A sensor gateway: paho, MQTT 3.1.1, QoS 1, on its own network thread."""

    def __init__(self, broker: str, client_id: str) -> None:
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311
        )
        self.client.max_inflight_messages_set(0)
        self.client.connect(*host_port(broker))
        self.client.loop_start()
        self.sent: list[mqtt.MQTTMessageInfo] = []

    def publish(self, topic: str, payload: bytes) -> mqtt.MQTTMessageInfo:
        if len(self.sent) >= PUBLISH_WINDOW:
            self.sent[-PUBLISH_WINDOW].wait_for_publish(60)
        info = self.client.publish(topic, payload, qos=1)
        self.sent.append(info)
        return info

    def close(self) -> None:
        """Wait for the broker's PUBACKs of everything sent, then disconnect."""
        for info in self.sent:
            info.wait_for_publish(60)
        self.client.disconnect()
        self.client.loop_stop()


def forget_session(broker: str, client_id: str) -> None:
    """End a bridge's persistent session on the broker (a clean start that expires at once),
    so that a test leaves nothing queued behind."""
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
    )
    client.connect(*host_port(broker), clean_start=True)
    client.loop_start()
    deadline = time.monotonic() + 10
    while not client.is_connected() and time.monotonic() < deadline:
        time.sleep(0.05)
    client.disconnect()
    client.loop_stop()


def topic_of(sensor_type: str, sensor_id: str) -> str:
    return f"smartcity/{sensor_type}/{sensor_id}"


def read_until(
    settings: Settings,
    topics: Sequence[str],
    group: str,
    take: Callable[[list[Message]], bool],
    timeout_s: float = 240.0,
) -> None:
    """Consume `topics` from the start, handing each batch to `take` until it says it has
    all it waits for (or the time is up: the caller's assertions then say what is missing)."""
    consumer = Consumer(
        client_config(
            settings,
            **{"group.id": group, "auto.offset.reset": "earliest", "enable.auto.commit": False},
        )
    )
    consumer.subscribe(list(topics))
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            batch = consumer.consume(10_000, timeout=0.5)
            if take([m for m in batch if m.error() is None]):
                return
    finally:
        consumer.close()


def pair(value: bytes) -> tuple[str, int]:
    reading = orjson.loads(value)
    return reading["sensor_id"], reading["seq"]
