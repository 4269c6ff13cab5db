"""The readings lane below FastAPI: it answers only what FastAPI would answer the same way."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from urllib.parse import urlencode

import orjson
import pytest
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st
from pydantic import AwareDatetime, SecretStr, TypeAdapter
from starlette.types import Receive, Scope, Send

from smartcity_api.app import create_app
from smartcity_api.hot_routes import INSTANT, HotRoutes, parse_readings
from smartcity_api.readings import Position
from tests.api_support import CLOSED_PORT, SENSOR, START, ApiLake, asgi_get, unreadable

PATH = f"/api/v1/sensors/{SENSOR}/readings"
TEMPLATE = "/api/v1/sensors/{sensor_id}/readings"
END = START + timedelta(hours=2)
PLAIN = {"start": START.isoformat(), "end": END.isoformat()}


def query(**params: object) -> bytes:
    return urlencode(params).encode()


def test_a_plain_request_is_parsed_with_the_routes_defaults() -> None:
    cursor = Position(1_795_737_600_000, 4).encode()
    request = parse_readings(PATH, query(**PLAIN, limit=50, cursor=cursor))
    assert request is not None
    assert (request.sensor_id, request.start, request.end) == (SENSOR, START, END)
    assert (request.limit, request.after) == (50, Position(1_795_737_600_000, 4))
    default = parse_readings(PATH, query(**PLAIN))
    assert default is not None and (default.limit, default.after) == (1000, None)


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/api/v1/sensors/latest", PLAIN),
        ("/api/v1/sensors/traffic_0001/readings", PLAIN),
        ("/api/v1/sensors/TRAFFIC_0001%0A/readings", PLAIN),
        (PATH, {"start": START.isoformat()}),
        (PATH, PLAIN | {"end": "2026-11-27T02:00:00"}),
        (PATH, PLAIN | {"start": "2026-11-27 00:00:00Z"}),
        (PATH, PLAIN | {"end": START.isoformat()}),
        (PATH, PLAIN | {"end": (START + timedelta(days=32)).isoformat()}),
        (PATH, PLAIN | {"limit": 0}),
        (PATH, PLAIN | {"limit": 10_001}),
        (PATH, PLAIN | {"limit": "007"}),
        (PATH, PLAIN | {"cursor": "nope!"}),
        (PATH, PLAIN | {"cursor": "W" * 201}),
        (PATH, PLAIN | {"sensor_type": "traffic"}),
    ],
)
def test_anything_unusual_or_wrong_is_left_to_fastapi(path: str, params: dict[str, object]) -> None:
    assert parse_readings(path, query(**params)) is None


def test_a_repeated_parameter_is_left_to_fastapi() -> None:
    assert parse_readings(PATH, query(**PLAIN) + b"&limit=5&limit=6") is None


@given(st.from_regex(INSTANT, fullmatch=True))
def test_an_accepted_instant_means_what_pydantic_reads_in_it(text: str) -> None:
    request = parse_readings(PATH, query(start=text, end="9999-12-30T00:00:00Z"))
    try:
        expected = TypeAdapter(AwareDatetime).validate_python(text)
    except ValueError:
        assert request is None
        return
    if request is not None:
        assert request.start == expected


class Recording:
    """The app behind the lane: records that a request reached it."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.calls += 1
        await send({"type": "http.response.start", "status": 299, "headers": []})
        await send({"type": "http.response.body", "body": b""})


def call(
    app: HotRoutes, query_string: bytes, key: bytes | None = None, path: str = PATH
) -> tuple[int, bytes, str]:
    return asgi_get(app, path, query_string, key)


@pytest.mark.integration
def test_the_lane_answers_as_fastapi_does(api_lake: ApiLake, api_client: TestClient) -> None:
    behind = Recording()
    lane = HotRoutes(behind, api_lake.settings, api_client.app.state.reader)
    cursor = None
    for _ in range(3):
        params = PLAIN | {"limit": 70} | ({"cursor": cursor} if cursor else {})
        status, body, route = call(lane, query(**params))
        assert (status, behind.calls, route) == (200, 0, TEMPLATE)
        through_fastapi = api_client.get(PATH, params=params | {"unused": "1"})
        assert through_fastapi.content == body
        cursor = through_fastapi.json()["next_cursor"]
    unknown = PATH.replace(SENSOR, "TRAFFIC_9999")
    status, body, route = call(lane, query(**PLAIN), path=unknown)
    through_fastapi = api_client.get(unknown, params=PLAIN | {"unused": "1"})
    assert (status, route) == (404, TEMPLATE) and through_fastapi.status_code == 404
    assert orjson.loads(body) == through_fastapi.json()
    assert behind.calls == 0


@pytest.mark.integration
@pytest.mark.parametrize("lake", ["closed port", "unreadable folder"])
def test_with_the_lake_down_the_lane_answers_as_the_route(
    api_lake: ApiLake, tmp_path: Path, lake: str
) -> None:
    """The lane sits outside Starlette's exception middleware: an OSError there would be a
    plain-text 500. It must be the route's 503 and JSON detail."""
    if lake == "closed port":
        broken = api_lake.settings.model_copy(update={"s3_endpoint": CLOSED_PORT})
    else:
        broken = api_lake.settings.model_copy(update={"lake_uri": unreadable(tmp_path).as_uri()})
    app = create_app(broken)
    status, body, route = asgi_get(app, PATH, query(**PLAIN))
    with TestClient(app) as client:
        through_fastapi = client.get(PATH, params=PLAIN | {"unused": "1"})
    assert (status, route) == (503, TEMPLATE)
    assert through_fastapi.status_code == 503
    assert orjson.loads(body) == through_fastapi.json()
    assert through_fastapi.json()["detail"].startswith("the lake could not be read")


@pytest.mark.integration
def test_without_the_key_the_lane_steps_aside(api_lake: ApiLake) -> None:
    settings = api_lake.settings.model_copy(update={"api_key": SecretStr("s3cret")})
    behind = Recording()
    lane = HotRoutes(behind, settings, create_app(settings).state.reader)
    assert call(lane, query(**PLAIN), key=b"wrong")[0] == 299
    assert call(lane, query(**PLAIN))[0] == 299
    assert behind.calls == 2
    assert call(lane, query(**PLAIN), key=b"s3cret")[0] == 200
    assert behind.calls == 2
    repeated = [(b"x-api-key", b"wrong")]
    assert asgi_get(lane, PATH, query(**PLAIN), b"s3cret", repeated)[0] == 200, "the first"
    assert asgi_get(lane, PATH, query(**PLAIN), b"wrong", [(b"x-api-key", b"s3cret")])[0] == 299
