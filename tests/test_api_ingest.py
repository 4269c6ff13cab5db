"""`POST /api/v1/readings` against the real Kafka broker and S3 lake.

The promises about the server (202 only once Kafka has every valid reading, limits, keys)
are tested over a real socket against `smartcity api`; what is only routing (a key
configuration of its own, an unreachable broker) through httpx's ASGI transport. What a 202
promised is read back from the topics.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pyarrow as pa
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from simulator.faults import FAULT_KINDS, FaultConfig, Message
from simulator.registry import build_registry
from smartcity.kafka import client_config
from smartcity.lake import Lake
from smartcity.registry import import_registry
from smartcity.services.processes import free_port
from smartcity.settings import SENSOR_TYPES, Settings
from smartcity_api.app import create_app
from tests.api_support import serve_api
from tests.simulator_support import NOV_27_MS, simulate
from tests.stream_support import isolated, worker_env

pytestmark = pytest.mark.integration
INGEST_KEY = "ingest-key-0123456789"
READ_KEY = "read-key-0123456789"
INACTIVE = "ENERGY_0007"
URL = "/api/v1/readings"
NDJSON = {"Content-Type": "application/x-ndjson", "X-API-Key": INGEST_KEY}
JSON = {"Content-Type": "application/json", "X-API-Key": INGEST_KEY}
CODES = {kind: FAULT_KINDS.index(kind) + 1 for kind in FAULT_KINDS}
REASONS = {
    CODES["malformed"]: "malformed_json",
    CODES["missing_field"]: "out_of_contract",
    CODES["wrong_type"]: "out_of_contract",
    CODES["out_of_range"]: "out_of_contract",
    CODES["unknown_sensor"]: "unknown_sensor",
}
BROKEN = ",".join(f"{kind}=0.03" for kind in ("missing_field", "wrong_type", "out_of_range"))


@pytest.fixture(scope="module")
def city(live_settings: Settings) -> Settings:
    """Topics and a lake of this module's own, with the default city minus one sensor."""
    settings = isolated(live_settings, "ingest")
    table = build_registry().table()
    active = pa.array([sensor != INACTIVE for sensor in table.column("sensor_id").to_pylist()])
    table = table.set_column(table.schema.get_field_index("active"), "active", active)
    import_registry(Lake.from_settings(settings), table)
    return settings


@pytest.fixture(scope="module")
def server(city: Settings) -> Iterator[str]:
    """`smartcity api` with both a read key and an ingest key."""
    env = worker_env(city) | {"SMARTCITY_API_KEY": READ_KEY, "SMARTCITY_INGEST_KEY": INGEST_KEY}
    with serve_api(env) as served:
        yield served.base
    assert "Application shutdown complete" in served.log, served.log[-2000:]  # producer closed


def messages(
    seed: int, interval_ms: int, steps: int, faults: str = "", start_ms: int = NOV_27_MS
) -> list[Message]:
    """Simulated messages of all types but the inactive sensor's; faulty ones beside their
    reading."""
    by_type, _ = simulate(steps, interval_ms, start_ms, seed=seed, faults=FaultConfig.parse(faults))
    every = [message for sensor_type in SENSOR_TYPES for message in by_type[sensor_type]]
    return [message for message in every if message[0] != INACTIVE.encode()]


def json_array(values: list[bytes]) -> bytes:
    return b"[" + b",".join(values) + b"]"


def canonical(value: bytes) -> bytes:
    """What a JSON array's item becomes on the wire: re-encoded by orjson."""
    return orjson.dumps(orjson.loads(value))


def in_topics(settings: Settings) -> Counter[tuple[bytes, bytes]]:
    """Every (key, value) in the reading topics, read from the start to the end offsets."""
    consumer = Consumer(
        client_config(
            settings,
            **{"group.id": f"ingest-test-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False},
        )
    )
    partitions = [
        TopicPartition(settings.reading_topic(sensor_type), partition, OFFSET_BEGINNING)
        for sensor_type in SENSOR_TYPES
        for partition in range(settings.topic_partitions)
    ]
    left = {}
    for tp in partitions:
        low, high = consumer.get_watermark_offsets(tp, timeout=10)
        if high > low:
            left[(tp.topic, tp.partition)] = high - 1
    consumer.assign(partitions)
    seen: Counter[tuple[bytes, bytes]] = Counter()
    deadline = time.monotonic() + 60
    while left:
        assert time.monotonic() < deadline, f"partitions not read to their end: {left}"
        for message in consumer.consume(10_000, timeout=1):
            assert message.error() is None, message.error()
            seen[(message.key(), message.value())] += 1
            place = (message.topic(), message.partition())
            if left.get(place, -1) <= message.offset():
                left.pop(place, None)
    consumer.close()
    return seen


def post(base: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(f"{base}{URL}", content=body, headers=headers, timeout=60)


def asgi_post(app: Any, body: bytes, headers: dict[str, str]) -> httpx.Response:
    """One POST through the app in process; its producer (if one was made) closed after."""

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            return await client.post(URL, content=body, headers=headers)

    try:
        return asyncio.run(call())
    finally:
        app.state.ingest.close()


def test_accepted_readings_are_in_kafka_once(server: str, city: Settings) -> None:
    sent = messages(seed=7, interval_ms=30_000, steps=20)
    response = post(server, json_array([m[1] for m in sent]), JSON)
    assert response.status_code == 202, response.text
    body = response.json()
    assert (body["received"], body["accepted"], body["rejected"]) == (len(sent), len(sent), [])
    topics = in_topics(city)
    for key, value, _, _ in sent:
        assert topics[(key, canonical(value))] == 1


def test_invalid_items_are_listed_and_not_produced(server: str, city: Settings) -> None:
    sent = messages(seed=11, interval_ms=10_000, steps=12, faults=BROKEN + ",unknown_sensor=0.03")
    intact = [(value, seq) for _, value, seq, code in sent if code == 0]
    overflow = intact[0][0].replace(b'"seq":%d' % intact[0][1], b'"seq":%d' % 2**70)
    huge = orjson.loads(intact[1][0]) | {"note": "x" * 70_000}  # extra fields pass the contract
    values = [m[1] for m in sent] + [overflow, orjson.dumps(huge), b"17"]
    response = post(server, json_array(values), JSON)
    assert response.status_code == 202, response.text
    body = response.json()
    expected = {i: REASONS[code] for i, (_, _, _, code) in enumerate(sent) if code}
    n = len(sent)
    expected |= {n: "integer_overflow", n + 1: "too_large", n + 2: "out_of_contract"}
    assert {r["index"]: r["reason"] for r in body["rejected"]} == expected
    assert all(r["error"] for r in body["rejected"])
    assert body["accepted"] == len(values) - len(expected) and body["received"] == len(values)
    topics = in_topics(city)
    for index, (key, value, _, code) in enumerate(sent):
        assert topics[(key, canonical(value))] == (0 if index in expected else 1), code
    assert not any(len(value) > 60_000 for _, value in topics)


def test_ndjson_lines_are_items_and_a_bad_line_is_its_own_fault(
    server: str, city: Settings
) -> None:
    sent = messages(seed=23, interval_ms=5_000, steps=10, faults=BROKEN + ",malformed=0.05")
    lines = [m[1] for m in sent]
    lines.insert(5, b"")  # a blank line is an item too, so that index = line number - 1
    body = b"\n".join(line + b"\r" if i % 2 else line for i, line in enumerate(lines)) + b"\n"
    response = post(server, body, NDJSON)
    assert response.status_code == 202, response.text
    rejected = {r["index"]: r["reason"] for r in response.json()["rejected"]}
    expected = {i + (i >= 5): REASONS[code] for i, (_, _, _, code) in enumerate(sent) if code}
    assert rejected == expected | {5: "malformed_json"}
    topics = in_topics(city)
    for key, value, _, code in sent:
        assert topics[(key, value)] == (0 if code else 1)


def test_unknown_and_inactive_sensors_alone_are_422(server: str, city: Settings) -> None:
    sent = messages(seed=5, interval_ms=60_000, steps=1, start_ms=NOV_27_MS + 3_600_000)
    energy = next(orjson.loads(value) for key, value, _, _ in sent if key.startswith(b"ENERGY"))
    inactive = orjson.dumps(energy | {"sensor_id": INACTIVE})
    unknown = orjson.loads(sent[0][1]) | {"sensor_id": "TRAFFIC_0999"}
    response = post(server, json_array([inactive, orjson.dumps(unknown)]), JSON)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["accepted"] == 0 and body["received"] == 2
    assert [(r["index"], r["reason"]) for r in body["rejected"]] == [
        (0, "unknown_sensor"),
        (1, "unknown_sensor"),
    ]
    assert INACTIVE in body["rejected"][0]["error"]
    assert not any(key in (INACTIVE.encode(), b"TRAFFIC_0999") for key, _ in in_topics(city))


def test_a_resent_batch_is_produced_again_never_answered_from_a_cache(
    server: str, city: Settings
) -> None:
    sent = messages(seed=3, interval_ms=15_000, steps=2, start_ms=NOV_27_MS + 7_200_000)
    body = b"\n".join(m[1] for m in sent)
    assert [post(server, body, NDJSON).status_code for _ in range(2)] == [202, 202]
    topics = in_topics(city)
    assert {topics[(key, value)] for key, value, _, _ in sent} == {2}


def test_limits(server: str) -> None:
    reading = messages(seed=1, interval_ms=60_000, steps=1)[0][1]
    too_many = post(server, json_array([reading] * 10_001), JSON)
    assert too_many.status_code == 413 and "10000 readings" in too_many.json()["detail"]
    too_many_lines = post(server, b"{}\n" * 10_001, NDJSON)
    assert too_many_lines.status_code == 413
    too_big = post(server, b"[" + b" " * (5 * 1024 * 1024) + b"]", JSON)
    assert too_big.status_code == 413 and "bytes" in too_big.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds while reading
        yield b"["
        for _ in range(6):
            yield b" " * (1024 * 1024)
        yield b"]"

    streamed = httpx.post(f"{server}{URL}", content=chunks(), headers=JSON, timeout=60)
    assert streamed.status_code == 413


@pytest.mark.parametrize(
    ("content_type", "status"),
    [("text/plain", 415), ("application/xml", 415), (None, 415), ("application/json", 202)],
)
def test_content_types(server: str, content_type: str | None, status: int) -> None:
    reading = messages(seed=2, interval_ms=60_000, steps=1, start_ms=NOV_27_MS + 9_000_000)[0][1]
    headers = {"X-API-Key": INGEST_KEY} | ({"Content-Type": content_type} if content_type else {})
    response = post(server, json_array([reading]), headers)
    assert response.status_code == status, response.text
    if status == 415:
        assert "application/x-ndjson" in response.json()["detail"]


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b'[{"a": 1},\n {"b": }]', "line 2, column 8 (byte 18)"),
        (b'[{"seq": 1}', "line 1, column 12 (byte 11)"),
        (b"[1e400]", "line 1, column 2"),
        (b"[1, " + b'{"a":' * 300 + b"1" + b"}" * 300 + b"]", "reading 1 cannot be re-encoded"),
        (b'{"sensor_id": "TRAFFIC_0001"}', "must be a JSON array"),
        (b"[]", "no readings"),
        (b"", "empty"),
        (b"  \n", "empty"),
    ],
)
def test_bad_bodies_are_400_naming_the_place(server: str, body: bytes, detail: str) -> None:
    response = post(server, body, JSON)
    assert response.status_code == 400, response.text
    assert detail in response.json()["detail"]


def test_keys(server: str) -> None:
    """The server has both keys: only the ingest key writes, and it does not read."""
    body = json_array([b"{}"])
    plain = {"Content-Type": "application/json"}
    assert post(server, body, plain).status_code == 401
    assert post(server, body, plain | {"X-API-Key": INGEST_KEY[:-1] + "x"}).status_code == 401
    read = post(server, body, plain | {"X-API-Key": READ_KEY})
    assert read.status_code == 403 and "reads but cannot write" in read.json()["detail"]
    assert post(server, body, JSON).status_code == 422  # the key passes; the reading does not
    sensors = f"{server}/api/v1/sensors"
    assert httpx.get(sensors, headers={"X-API-Key": INGEST_KEY}).status_code == 401
    assert httpx.get(sensors, headers={"X-API-Key": READ_KEY}).status_code == 200


def test_a_read_key_alone_keeps_ingest_shut(city: Settings) -> None:
    app = create_app(city.model_copy(update={"api_key": READ_KEY}))
    for key in (READ_KEY, INGEST_KEY, None):
        headers = {"Content-Type": "application/json"} | ({"X-API-Key": key} if key else {})
        response = asgi_post(app, json_array([b"{}"]), headers)
        assert response.status_code == 403
        assert "SMARTCITY_INGEST_KEY" in response.json()["detail"]


def test_no_keys_at_all_is_open(city: Settings) -> None:
    sent = messages(seed=9, interval_ms=20_000, steps=3, start_ms=NOV_27_MS + 10_800_000)
    app = create_app(city)
    response = asgi_post(
        app, json_array([m[1] for m in sent]), {"Content-Type": "application/json"}
    )
    assert response.status_code == 202, response.text
    topics = in_topics(city)
    assert {topics[(key, canonical(value))] for key, value, _, _ in sent} == {1}


def test_unreachable_kafka_is_503_with_the_count(city: Settings) -> None:
    nowhere = city.model_copy(
        update={"kafka_bootstrap": f"127.0.0.1:{free_port()}", "kafka_timeout_s": 1.0}
    )
    sent = messages(seed=13, interval_ms=60_000, steps=1)
    values = [m[1] for m in sent] + [b'{"sensor_id": 1}']
    response = asgi_post(create_app(nowhere), json_array(values), JSON)
    assert response.status_code == 503, response.text
    body = response.json()
    assert (body["unconfirmed"], body["accepted"]) == (len(sent), 0)
    assert [r["index"] for r in body["rejected"]] == [len(sent)]
    assert f"did not confirm {len(sent)} of {len(sent)}" in body["detail"]
    assert "resending the whole request is safe" in body["detail"]


def test_no_registry_is_503_naming_what_to_do(live_settings: Settings) -> None:
    """Without a registry every reading would be an unknown sensor: the API says what is
    missing instead of refusing good readings one by one."""
    empty = isolated(live_settings, "ing-noreg")
    sent = messages(seed=21, interval_ms=60_000, steps=1)
    response = asgi_post(create_app(empty), json_array([m[1] for m in sent]), JSON)
    assert response.status_code == 503, response.text
    assert "smartcity sensors import" in response.json()["detail"]


def test_openapi_declares_the_route_and_its_key() -> None:
    schema = create_app(Settings(_env_file=None)).openapi()
    operation = schema["paths"][URL]["post"]
    assert operation["security"] == [{"IngestKeyHeader": []}]
    assert set(operation["requestBody"]["content"]) == {
        "application/json",
        "application/x-ndjson",
    }
    documented = {code: answer["content"] for code, answer in operation["responses"].items()}
    assert set(documented) == {"202", "400", "401", "403", "413", "415", "422", "503"}
    assert schema["components"]["securitySchemes"]["IngestKeyHeader"]["name"] == "X-API-Key"
    assert schema["paths"]["/api/v1/sensors"]["get"]["security"] == [{"APIKeyHeader": []}]
