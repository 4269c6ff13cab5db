"""The MQTT bridge against a real Mosquitto, Kafka and S3: QoS 1 end to end through SIGKILLs,
bad input dead-lettered with its MQTT topic, and `services up --mqtt`."""

from __future__ import annotations

import os
import pwd
import random
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
import psutil
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from simulator.faults import INTACT
from simulator.registry import Registry, build_registry
from simulator.simulation import Simulation, SimulationConfig
from smartcity.bridge.acks import InOrderAcks
from smartcity.lake import Lake
from smartcity.registry import import_registry
from smartcity.services import mosquitto
from smartcity.services.mosquitto import MosquittoUnavailable, mosquitto_binary
from smartcity.services.processes import accepts, free_port, stop
from smartcity.settings import SENSOR_TYPES, Settings
from tests.mqtt_support import (
    Bridge,
    Publisher,
    forget_session,
    host_port,
    pair,
    read_until,
    start_bridge,
    topic_of,
)
from tests.stream_support import SMARTCITY, isolated, landed, start_worker, worker_env
from tests.test_cli import run

pytestmark = pytest.mark.integration

READINGS = 100_000
KILLS = 2
DAY_MS = 86_400_000
JAN_1_2026_MS = 1_767_225_600_000

Reading = tuple[str, str, bytes, int]  # sensor type, sensor id, payload, seq


def simulated(registry: Registry, count: int, rng: random.Random) -> list[Reading]:
    """`count` readings of the whole city from a random seed, day and interval."""
    interval_ms = rng.choice([5_000, 10_000, 15_000, 30_000, 60_000])
    config = SimulationConfig(
        start_ms=JAN_1_2026_MS + rng.randrange(300) * DAY_MS,
        interval_ms=interval_ms,
        seed=rng.randrange(1_000_000),
    )
    print(f"simulation: {config}")
    simulation = Simulation(registry, config)
    readings: list[Reading] = []
    while len(readings) < count:
        for batch in simulation.next_step():
            for key, value, seq, code in batch.messages:
                assert code == INTACT
                readings.append((batch.sensor_type, key.decode(), value, seq))
    return readings[:count]


def city(settings: Settings, name: str) -> tuple[Settings, Registry]:
    """Topics and a lake of the test's own, with the simulated city's registry imported."""
    own = isolated(settings, name)
    registry = build_registry()
    import_registry(Lake.from_settings(own), registry.table())
    return own, registry


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout_s:g} s for {what}")
        time.sleep(0.05)


def stop_cleanly(bridge: Bridge) -> str:
    """SIGTERM: the bridge flushes, acknowledges, disconnects and exits 0."""
    bridge.process.send_signal(signal.SIGTERM)
    output = bridge.output()
    assert bridge.process.returncode == 0, output
    assert "stopped:" in output
    return output


def test_sigkill_twice_mid_stream_loses_nothing(live_settings: Settings, mqtt_broker: str) -> None:
    """100,000 readings over MQTT while the bridge is SIGKILLed twice: the distinct
    (sensor_id, seq) landed by the stream worker are exactly the ones published."""
    rng = random.Random()
    run_id = rng.randrange(1_000_000)
    settings, registry = city(live_settings, f"mqtt{run_id}")
    readings = simulated(registry, READINGS, rng)
    published = {(sensor_id, seq) for _, sensor_id, _, seq in readings}
    assert len(published) == READINGS
    client_id = f"bridge-{run_id}"
    started = time.monotonic()

    bridge = start_bridge(settings, mqtt_broker, client_id)
    publisher = Publisher(mqtt_broker, f"gateway-{run_id}")
    sending = threading.Thread(
        target=lambda: [publisher.publish(topic_of(t, s), v) for t, s, v, _ in readings],
        name="publisher",
    )
    sending.start()
    received_by_run: list[float] = []
    for _ in range(KILLS):
        threshold = rng.randrange(8_000, 25_000)
        wait_for(lambda b=bridge, n=threshold: b.received() >= n, "bridge progress")
        print(f"SIGKILL after {threshold}+ messages; publisher still sending: {sending.is_alive()}")
        received_by_run.append(bridge.received())
        bridge.process.kill()
        bridge.process.wait(30)
        bridge = start_bridge(settings, mqtt_broker, client_id)
    sending.join()
    publisher.close()
    assert all(info.is_published() for info in publisher.sent), "the broker did not ack all"

    in_kafka: set[tuple[str, int]] = set()
    copies = Counter[tuple[str, int]]()

    def take(batch: list) -> bool:
        for message in batch:
            reading = pair(message.value())
            assert message.key().decode() == reading[0]
            copies[reading] += 1
            in_kafka.add(reading)
        return published <= in_kafka

    topics = [settings.reading_topic(t) for t in SENSOR_TYPES]
    read_until(settings, topics, f"check-{run_id}", take)
    assert published - in_kafka == set(), "a published reading never reached Kafka"
    received_by_run.append(bridge.received())
    stop_cleanly(bridge)
    forget_session(mqtt_broker, client_id)
    bridged_s = time.monotonic() - started

    worker = start_worker(settings, "--until-idle", "5")
    _, stderr = worker.communicate(timeout=600)
    assert worker.returncode == 0, stderr.decode()[-2000:]
    _, tables = landed(Lake.from_settings(settings))
    rows = pa.concat_tables(tables)
    pairs = list(zip(rows["sensor_id"].to_pylist(), rows["seq"].to_pylist(), strict=True))
    assert set(pairs) - published == set(), "a reading nobody published was landed"
    assert published - set(pairs) == set(), "a published reading is missing from the landing"
    assert in_kafka == published
    duplicates = len(pairs) - len(published)
    print(
        f"received per bridge run {received_by_run}; {duplicates} duplicate rows landed "
        f"(redeliveries, removed by the clean step's dedup); bridged in {bridged_s:.1f} s, "
        f"{len(pairs)} rows landed in {time.monotonic() - started:.1f} s all told"
    )


def test_broker_restart_keeps_the_queue_and_the_bridge_resumes(
    live_settings: Settings, tmp_path: Path
) -> None:
    """Readings queued for the bridge's session while it was stopped survive a restart of
    the broker in the middle of the drain; the bridge reconnects and takes the rest."""
    rng = random.Random()
    run_id = rng.randrange(1_000_000)
    settings, registry = city(live_settings, f"mqrs{run_id}")
    readings = simulated(registry, 30_000, rng)
    expected = {(s, q) for _, s, _, q in readings}
    own = Settings(_env_file=None, runtime_dir=tmp_path / "runtime", mqtt_port=free_port())
    record = mosquitto.start(own)
    broker = record.env["SMARTCITY_MQTT_BROKER"]
    client_id = f"bridge-rs-{run_id}"
    try:
        stop_cleanly(start_bridge(settings, broker, client_id))  # the session now exists
        publisher = Publisher(broker, f"gateway-rs-{run_id}")
        for sensor_type, sensor_id, value, _ in readings:
            publisher.publish(topic_of(sensor_type, sensor_id), value)
        publisher.close()

        bridge = start_bridge(settings, broker, client_id)
        wait_for(lambda: bridge.received() >= 3_000, "bridge progress")
        stop(record)
        record = mosquitto.start(own)
        in_kafka: set[tuple[str, int]] = set()

        def take(batch: list) -> bool:
            in_kafka.update(pair(message.value()) for message in batch)
            return expected <= in_kafka

        topics = [settings.reading_topic(t) for t in SENSOR_TYPES]
        read_until(settings, topics, f"check-{run_id}", take)
        assert in_kafka == expected
        assert bridge.process.poll() is None
        wait_for(bridge.healthy, "the bridge to subscribe again")
        output = stop_cleanly(bridge)
        assert "disconnected from" in output, output
        assert "session resumed" in output.split("disconnected from")[-1], output
        print(output)
    finally:
        stop(record)


def _variant(reading: bytes, **changes: object) -> bytes:
    return orjson.dumps({**orjson.loads(reading), **changes})


def test_bad_input_is_dead_lettered_and_valid_readings_flow_on(
    live_settings: Settings, mqtt_broker: str
) -> None:
    rng = random.Random()
    run_id = rng.randrange(1_000_000)
    settings, registry = city(live_settings, f"mqbad{run_id}")
    readings = simulated(registry, 2_000, rng)
    traffic = [r for r in readings if r[0] == "traffic"]
    (_, sensor_a, value_a, _), (_, sensor_b, _, _) = rng.sample(traffic, 2)
    bad: list[tuple[str, bytes, str]] = [
        (topic_of("traffic", sensor_a), b'{"sensor_id": "TRAFFIC_0001", ', "malformed_json"),
        (topic_of("traffic", sensor_a), _variant(value_a, occupancy_pct=250.0), "out_of_contract"),
        (
            topic_of("traffic", "TRAFFIC_9999"),
            _variant(value_a, sensor_id="TRAFFIC_9999"),
            "unknown_sensor",
        ),
        (topic_of("traffic", sensor_b), value_a, "topic_mismatch"),
        (topic_of("weather", sensor_a), value_a, "topic_mismatch"),
        (topic_of("traffic", sensor_a), b"[" * 600_000, "too_large"),
    ]
    client_id = f"bridge-bad-{run_id}"
    bridge = start_bridge(settings, mqtt_broker, client_id)
    publisher = Publisher(mqtt_broker, f"gateway-bad-{run_id}")
    cut = len(readings) // 2
    for sensor_type, sensor_id, value, _ in readings[:cut]:
        publisher.publish(topic_of(sensor_type, sensor_id), value)
    for topic, payload, _ in bad:
        publisher.publish(topic, payload)
    for sensor_type, sensor_id, value, _ in readings[cut:]:
        publisher.publish(topic_of(sensor_type, sensor_id), value)
    publisher.close()

    valid: set[tuple[str, int]] = set()
    dead: list = []
    expected = {(s, q) for _, s, _, q in readings}

    def take(batch: list) -> bool:
        for message in batch:
            if message.topic() == settings.topic("deadletter"):
                dead.append(message)
            else:
                valid.add(pair(message.value()))
        return valid >= expected and len(dead) >= len(bad)

    topics = [*(settings.reading_topic(t) for t in SENSOR_TYPES), settings.topic("deadletter")]
    read_until(settings, topics, f"check-{run_id}", take)
    assert valid == expected, "valid readings around the bad ones did not all arrive"
    assert bridge.process.poll() is None, "bad input stopped the bridge"
    assert bridge.healthy()

    letters = sorted(
        (
            dict(message.headers())["mqtt_topic"].decode(),
            dict(message.headers())["reason"].decode(),
            message.value(),
        )
        for message in dead
    )
    assert len(letters) == len(bad)
    for topic, payload, reason in bad:
        kept = payload[: 512 * 1024]
        assert (topic, reason, kept) in letters, f"{reason} on {topic} not dead-lettered"
    assert all(dict(message.headers())["error"] for message in dead)

    counted = bridge.metrics()
    for reason, count in Counter(reason for _, _, reason in bad).items():
        key = ("smartcity_bridge_mqtt_dead_letters_total", (("reason", reason),))
        assert counted[key] == count
    produced = sum(
        counted[("smartcity_bridge_mqtt_produced_total", (("sensor_type", t),))]
        for t in SENSOR_TYPES
    )
    assert produced == len(readings)
    stop_cleanly(bridge)
    forget_session(mqtt_broker, client_id)


@given(
    outcomes=st.lists(st.booleans(), min_size=1, max_size=60),
    order=st.randoms(use_true_random=False),
)
def test_acks_follow_arrival_order_and_only_delivered(outcomes: list[bool], order) -> None:
    """The ack line, without a broker: deliveries decided in any order, PUBACKs in arrival
    order, each delivered message once, a failed one never, and none ahead of its turn."""
    line = InOrderAcks()
    pending = [line.arrived(mid) for mid in range(1, len(outcomes) + 1)]
    acked: list[int] = []
    failed = 0
    for index in order.sample(range(len(outcomes)), len(outcomes)):
        pending[index].delivered = outcomes[index]
        failed += line.release(acked.append)[1]
        decided = [p.delivered is not None for p in pending]
        head = decided.index(False) if False in decided else len(decided)
        assert acked == [p.mid for p in pending[:head] if p.delivered]
    assert acked == [p.mid for p, ok in zip(pending, outcomes, strict=True) if ok]
    assert failed == outcomes.count(False) and len(line) == 0


def test_unreachable_mqtt_broker_is_one_line(live_settings: Settings, tmp_path: Path) -> None:
    settings, _ = city(live_settings, "mqdown")
    closed = f"127.0.0.1:{free_port()}"
    result = run(
        ["bridge", "mqtt", "--metrics-port", "0"],
        tmp_path,
        timeout=60,
        SMARTCITY_MQTT_BROKER=closed,
        **{k: v for k, v in worker_env(settings).items() if k.startswith("SMARTCITY_")},
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"SMARTCITY_MQTT_BROKER={closed}" in lines[0]
    assert "smartcity services up --mqtt" in lines[0]


def test_missing_mosquitto_names_the_package(tmp_path: Path) -> None:
    with pytest.raises(MosquittoUnavailable, match="apt-get install mosquitto"):
        mosquitto_binary(path=str(tmp_path))


def test_services_up_mqtt_answers_and_down_stops_it(tmp_path: Path) -> None:
    up = run(["services", "up", "--mqtt", "--no-kafka", "--no-s3"], tmp_path)
    assert up.returncode == 0, up.stderr
    exported = dict(
        line.removeprefix("export ").split("=", 1) for line in up.stdout.strip().splitlines()
    )
    assert set(exported) == {"SMARTCITY_MQTT_BROKER"}
    broker = exported["SMARTCITY_MQTT_BROKER"]
    assert _round_trip(broker) == b"hello"

    status = run(["services", "status"], tmp_path)
    assert "mqtt" in status.stdout and status.stdout.count("running") == 1
    pid = orjson.loads((tmp_path / ".runtime" / "services.json").read_bytes())["mqtt"]["pid"]
    assert "mosquitto" in psutil.Process(pid).name()

    down = run(["services", "down"], tmp_path)
    assert down.returncode == 0 and "mqtt" in down.stdout
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    with pytest.raises(ConnectionRefusedError):
        client.connect(*host_port(broker))
    assert run(["services", "status"], tmp_path).stdout.count("running") == 0


def _round_trip(broker: str) -> bytes:
    """Subscribe, publish at QoS 1 and receive it back through the broker."""
    subscribed = threading.Event()
    got: list[bytes] = []
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.on_subscribe = lambda *_: subscribed.set()
    client.on_message = lambda _c, _u, message: got.append(message.payload)
    client.connect(*host_port(broker))
    client.loop_start()
    try:
        client.subscribe("smartcity/check/#", qos=1)
        assert subscribed.wait(10)
        client.publish("smartcity/check/x", b"hello", qos=1).wait_for_publish(10)
        wait_for(lambda: bool(got), "the message back", timeout_s=10)
    finally:
        client.disconnect()
        client.loop_stop()
    return got[0]


@pytest.fixture
def guarded_broker(tmp_path: Path) -> Iterator[str]:
    """A Mosquitto that lets in only the user of its password file, as a deployment's does."""
    passwords = tmp_path / "passwd"
    subprocess.run(
        ["mosquitto_passwd", "-c", "-b", str(passwords), "bridge", "s3cret-Pass"], check=True
    )
    port = free_port()
    config = tmp_path / "mosquitto.conf"
    config.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {passwords}\n"
        f"user {pwd.getpwuid(os.getuid()).pw_name}\n"
    )
    broker = subprocess.Popen(
        [mosquitto_binary(), "-c", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not accepts(port):
            assert time.monotonic() < deadline and broker.poll() is None, "mosquitto did not start"
            time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        broker.terminate()
        broker.wait(timeout=10)


def test_credentials_open_a_guarded_broker_and_a_wrong_one_is_one_line(
    live_settings: Settings, tmp_path: Path, guarded_broker: str
) -> None:
    settings, _ = city(live_settings, "mqauth")
    env = {k: v for k, v in worker_env(settings).items() if k.startswith("SMARTCITY_")}
    env |= {"SMARTCITY_MQTT_BROKER": guarded_broker, "SMARTCITY_MQTT_USERNAME": "bridge"}
    refused = run(
        ["bridge", "mqtt", "--metrics-port", "0"],
        tmp_path,
        timeout=60,
        SMARTCITY_MQTT_PASSWORD="wrong",
        **env,
    )
    assert refused.returncode == 2, refused.stderr
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "refused the connection" in lines[0], refused.stderr
    assert "wrong" not in lines[0]  # the password is never shown
    port = free_port()
    bridge = subprocess.Popen(
        [SMARTCITY, "bridge", "mqtt", "--client-id", "mqauth", "--metrics-port", str(port)],
        env=worker_env(settings)
        | {
            "SMARTCITY_MQTT_BROKER": guarded_broker,
            "SMARTCITY_MQTT_USERNAME": "bridge",
            "SMARTCITY_MQTT_PASSWORD": "s3cret-Pass",
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while not Bridge(bridge, port).healthy():
            assert bridge.poll() is None, bridge.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the bridge never subscribed"
            time.sleep(0.2)
    finally:
        bridge.terminate()
        assert bridge.wait(timeout=60) == 0
