"""The MQTT bridge: readings that sensors publish to `smartcity/<type>/<sensor_id>` into Kafka.

QoS 1 end to end: a message's PUBACK goes to the broker only once Kafka acknowledged its
produce, so whatever the bridge had not finished when it died is sent again by the broker
(at least once into Kafka; the batch layer's dedup by (sensor_id, seq) makes it exactly once
in the clean tables). Everything runs on one thread: paho's network loop, the produces its
callback makes, Kafka's delivery reports and the PUBACKs, so no lock guards the ack line and
paho is only ever called from the thread that runs its loop.
"""

from __future__ import annotations

import logging
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from confluent_kafka import KafkaError, Producer
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from smartcity.bridge import metrics
from smartcity.bridge.acks import InOrderAcks, Pending
from smartcity.cli_support import UserError
from smartcity.contract import ContractError
from smartcity.ingest import TOO_LARGE, ReadingGate, dead_letter_headers, produce
from smartcity.metrics_endpoint import serve
from smartcity.settings import SENSOR_TYPES, Settings

log = logging.getLogger(__name__)

TOPIC_ROOT = "smartcity"
SUBSCRIPTION = f"{TOPIC_ROOT}/+/+"
TOPIC_MISMATCH = "topic_mismatch"
MAX_PAYLOAD_BYTES = 512 * 1024
"""Kafka's default message size is 1 MB; a reading is a few hundred bytes. Anything bigger is
dead-lettered with its first bytes only, rather than failing the produce."""

SESSION_EXPIRY_S = 7 * 24 * 3600
"""How long the broker keeps the bridge's session (subscription and queued messages) while
the bridge is away."""
RECEIVE_MAXIMUM = 1000
"""Messages the broker may have in flight to the bridge, awaiting their PUBACK."""
KEEPALIVE_S = 30
CONNECT_TIMEOUT_S = 10.0
WAITING_FOR_KAFKA_S = 0.002
IDLE_S = 0.5
RECONNECT_MAX_S = 10.0
FLUSH_TIMEOUT_S = 30.0


@dataclass
class BridgeTotals:
    received: int = 0
    produced: int = 0
    dead_letters: Counter[str] = field(default_factory=Counter)
    failed: int = 0


@dataclass(frozen=True)
class BridgeOptions:
    client_id: str
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9109


def expected_topic(reading: dict[str, Any]) -> str:
    return f"{TOPIC_ROOT}/{reading['sensor_type']}/{reading['sensor_id']}"


def broker_address(value: str) -> tuple[str, int]:
    """`host:port` of the one broker the bridge connects to."""
    if "," in value:
        raise UserError(f"SMARTCITY_MQTT_BROKER={value}: the bridge connects to one broker")
    host, _, port = value.rpartition(":")
    return host.strip("[]"), int(port)


class MqttBridge:
    """One MQTT session (one client id) bridged into one Kafka producer."""

    def __init__(
        self, settings: Settings, options: BridgeOptions, gate: ReadingGate, producer: Producer
    ) -> None:
        self.settings = settings
        self.options = options
        self.totals = BridgeTotals()
        self._gate = gate
        self._producer = producer
        self._broker = broker_address(settings.mqtt_broker)
        self._dead_letter_topic = settings.topic("deadletter")
        self._acks = InOrderAcks()
        self._subscribed = False
        self._refused: str | None = None
        self._stopping = False
        self._produced = {t: metrics.PRODUCED.labels(t) for t in SENSOR_TYPES}
        metrics.UNACKED.set_function(lambda: len(self._acks))
        self._client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=options.client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        if settings.mqtt_username:
            password = settings.mqtt_password
            self._client.username_pw_set(
                settings.mqtt_username, password.get_secret_value() if password else None
            )
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message

    def connect(self) -> None:
        """Connect and subscribe, resuming the session of this client id; `UserError` with
        one line if the broker does not answer or refuses."""
        host, port = self._broker
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = SESSION_EXPIRY_S
        properties.ReceiveMaximum = RECEIVE_MAXIMUM
        where = f"SMARTCITY_MQTT_BROKER={self.settings.mqtt_broker}"
        try:
            self._client.connect(
                host, port, keepalive=KEEPALIVE_S, clean_start=False, properties=properties
            )
        except OSError as error:
            raise UserError(
                f"{where}: no MQTT broker answered ({error.strerror or error}); "
                "start one with `smartcity services up --mqtt`"
            ) from None
        deadline = time.monotonic() + CONNECT_TIMEOUT_S
        while not self._subscribed:
            if self._refused:
                raise UserError(f"{where}: {self._refused}")
            if time.monotonic() > deadline:
                raise UserError(f"{where}: no CONNACK/SUBACK within {CONNECT_TIMEOUT_S:g} s")
            self._client.loop(0.1)

    def _on_connect(
        self,
        client: mqtt.Client,
        _userdata: object,
        flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            self._refused = f"the broker refused the connection: {reason}"
            return
        log.info(
            "connected to %s as %s (session %s)",
            self.settings.mqtt_broker,
            self.options.client_id,
            "resumed" if flags.session_present else "new",
        )
        options = SubscribeOptions(qos=1, retainHandling=SubscribeOptions.RETAIN_SEND_IF_NEW_SUB)
        client.subscribe(SUBSCRIPTION, options=options)

    def _on_subscribe(
        self,
        _client: mqtt.Client,
        _userdata: object,
        _mid: int,
        reasons: list[ReasonCode],
        _properties: Properties | None,
    ) -> None:
        if reasons[0].is_failure or reasons[0].value < 1:
            self._refused = f"the broker refused QoS 1 on {SUBSCRIPTION}: {reasons[0]}"
            return
        self._subscribed = True

    def _on_disconnect(
        self,
        _client: mqtt.Client,
        _userdata: object,
        _flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        self._subscribed = False
        if not self._stopping and not self._refused:  # a refusal is reported on its own
            log.warning("disconnected from %s: %s", self.settings.mqtt_broker, reason)

    def _reconnect(self) -> None:
        """Connection lost: the messages in line are sent again on the next connection (with
        other packet ids), so their acks are dropped; retry with a growing pause."""
        dropped = self._acks.forget()
        if dropped:
            log.warning("%d messages in flight will be redelivered by the broker", dropped)
        pause = 0.5
        while not self._stopping:
            try:
                self._client.reconnect()
                return
            except OSError as error:
                log.warning("reconnecting to %s: %s", self.settings.mqtt_broker, error)
            deadline = time.monotonic() + pause
            while not self._stopping and time.monotonic() < deadline:
                self._producer.poll(0.1)
            pause = min(pause * 2, RECONNECT_MAX_S)

    def _on_message(
        self, _client: mqtt.Client, _userdata: object, message: mqtt.MQTTMessage
    ) -> None:
        """Judge, then produce to the reading topic or the dead-letter topic; bad input is
        only ever dead-lettered, never raised."""
        self.totals.received += 1
        metrics.RECEIVED.inc()
        pending = self._acks.arrived(message.mid) if message.qos > 0 else None
        topic: str = message.topic
        payload: bytes = message.payload
        if len(payload) > MAX_PAYLOAD_BYTES:
            error = f"payload of {len(payload)} bytes; its first {MAX_PAYLOAD_BYTES} are kept"
            self._dead_letter(topic, payload[:MAX_PAYLOAD_BYTES], TOO_LARGE, error, pending)
            return
        try:
            reading = self._gate.judge(payload)
        except ContractError as error:
            self._dead_letter(topic, payload, error.reason, str(error), pending)
            return
        expected = expected_topic(reading)
        if topic != expected:
            error = f"published on {topic}, but the payload belongs on {expected}"
            self._dead_letter(topic, payload, TOPIC_MISMATCH, error, pending)
            return
        sensor_type: str = reading["sensor_type"]

        def delivered(failure: KafkaError | None, _message: object) -> None:
            if failure is None:
                self.totals.produced += 1
                self._produced[sensor_type].inc()
            self._decided(pending, failure)

        produce(
            self._producer,
            self.settings.reading_topic(sensor_type),
            reading["sensor_id"].encode(),
            payload,
            delivered,
        )

    def _dead_letter(
        self, topic: str, payload: bytes, reason: str, error: str, pending: Pending | None
    ) -> None:
        def delivered(failure: KafkaError | None, _message: object) -> None:
            if failure is None:
                self.totals.dead_letters[reason] += 1
                metrics.DEAD_LETTERS.labels(reason).inc()
            self._decided(pending, failure)

        produce(
            self._producer,
            self._dead_letter_topic,
            topic.rpartition("/")[2].encode(),
            payload,
            delivered,
            headers=dead_letter_headers(reason, error, mqtt_topic=topic),
        )

    def _decided(self, pending: Pending | None, failure: KafkaError | None) -> None:
        if failure is not None:
            self.totals.failed += 1
            metrics.DELIVERY_FAILURES.inc()
            log.error("Kafka did not take a message (left unacknowledged): %s", failure)
        if pending is not None:
            pending.delivered = failure is None

    def _ack(self, mid: int) -> None:
        self._client.ack(mid, 1)

    def health(self) -> dict[str, Any]:
        return {
            "status": "ok" if self._subscribed else "connecting",
            "client_id": self.options.client_id,
            "unacked": len(self._acks),
            "received": self.totals.received,
        }

    def request_stop(self, *_: object) -> None:
        self._stopping = True

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)

    def run(self) -> BridgeTotals:
        """Bridge until SIGTERM/SIGINT, then flush Kafka, acknowledge what it took and leave
        the session to be resumed (the broker keeps queueing for it meanwhile)."""
        server = serve(
            metrics.REGISTRY, self.options.metrics_host, self.options.metrics_port, self.health
        )
        client, producer, acks = self._client, self._producer, self._acks
        try:
            while not self._stopping:
                rc = client.loop(WAITING_FOR_KAFKA_S if len(acks) else IDLE_S)
                if rc != mqtt.MQTT_ERR_SUCCESS and not self._stopping:
                    self._reconnect()
                producer.poll(0)
                acks.release(self._ack)
                self._gate.refresh()
        finally:
            left = producer.flush(FLUSH_TIMEOUT_S)
            if left:
                log.error(
                    "%d produces undecided after %g s: not acknowledged", left, FLUSH_TIMEOUT_S
                )
            acks.release(self._ack)
            self._disconnect()
            server.shutdown()
        return self.totals

    def _disconnect(self) -> None:
        """A normal DISCONNECT after the last PUBACKs; the session outlives it."""
        self._client.disconnect()
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            if self._client.loop(0.05) != mqtt.MQTT_ERR_SUCCESS:
                return
