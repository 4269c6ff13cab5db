"""The micro-cache of hot answers: what it reuses, for how long, and what it never keeps."""

from __future__ import annotations

import pytest
from pydantic import SecretStr
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from smartcity_api.app import create_app
from smartcity_api.response_cache import ResponseCache
from tests.api_support import SENSOR, ApiLake, asgi_get

LATEST = "/api/v1/sensors/latest"
READINGS = "/api/v1/sensors/{sensor_id}/readings"


class Counting:
    """An app answering `status` with a body naming how many calls it has had."""

    def __init__(self, status: int = 200) -> None:
        self.calls = 0
        self.status = status

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.calls += 1
        scope["route"] = Route(READINGS, endpoint=lambda _: None)
        await send({"type": "http.response.start", "status": self.status, "headers": []})
        await send({"type": "http.response.body", "body": b"call %d" % self.calls})


def get(
    app: ResponseCache, path: str, query: bytes = b"", key: bytes | None = None
) -> tuple[bytes, str]:
    _, body, route = asgi_get(app, path, query, key)
    return body, route


def test_the_same_get_within_the_ttl_is_answered_once() -> None:
    now = [0.0]
    inner = Counting()
    app = ResponseCache(inner, ttl_s=1.0, timer=lambda: now[0])
    assert get(app, LATEST, b"sensor_type=traffic")[0] == b"call 1"
    now[0] = 0.9
    assert get(app, LATEST, b"sensor_type=traffic")[0] == b"call 1"
    assert get(app, LATEST, b"sensor_type=energy")[0] == b"call 2"
    assert get(app, LATEST, b"sensor_type=traffic", key=b"other")[0] == b"call 3"
    now[0] = 1.5
    assert get(app, LATEST, b"sensor_type=traffic")[0] == b"call 4"


def test_errors_other_routes_and_a_zero_ttl_are_never_reused() -> None:
    failing = ResponseCache(Counting(404), ttl_s=60)
    assert [get(failing, LATEST)[0] for _ in range(2)] == [b"call 1", b"call 2"]
    other = ResponseCache(Counting(), ttl_s=60)
    assert [get(other, "/api/v1/anomalies")[0] for _ in range(2)] == [b"call 1", b"call 2"]
    off = ResponseCache(Counting(), ttl_s=0)
    assert [get(off, LATEST)[0] for _ in range(2)] == [b"call 1", b"call 2"]


def test_a_reused_answer_keeps_its_route_for_the_metrics() -> None:
    app = ResponseCache(Counting(), ttl_s=60)
    first = get(app, "/api/v1/sensors/TRAFFIC_0001/readings")
    again = get(app, "/api/v1/sensors/TRAFFIC_0001/readings")
    assert first == again == (b"call 1", READINGS)


def test_a_repeated_key_header_is_read_by_its_first_value() -> None:
    app = ResponseCache(Counting(), ttl_s=60)
    assert get(app, LATEST, key=b"a")[0] == b"call 1"
    assert asgi_get(app, LATEST, b"", b"a", [(b"x-api-key", b"b")])[1] == b"call 1"
    assert asgi_get(app, LATEST, b"", b"b", [(b"x-api-key", b"a")])[1] == b"call 2"


@pytest.mark.integration
def test_an_answer_is_never_served_to_another_key(api_lake: ApiLake) -> None:
    """Auth and the cache read the same (first) value of a repeated `X-API-Key`: an answer
    opened by the key is not filed under a guess sent beside it."""
    settings = api_lake.settings.model_copy(
        update={"api_key": SecretStr("s3cret"), "api_response_cache_s": 60.0}
    )
    app = create_app(settings)
    for path, query in [
        (LATEST, b""),
        (
            f"/api/v1/sensors/{SENSOR}/readings",
            b"start=2026-11-27T00:00:00Z&end=2026-11-27T00:10:00Z",
        ),
    ]:
        assert asgi_get(app, path, query, b"s3cret", [(b"x-api-key", b"guess")])[0] == 200
        assert asgi_get(app, path, query, b"guess")[0] == 401
        assert asgi_get(app, path, query, b"guess", [(b"x-api-key", b"s3cret")])[0] == 401
        assert asgi_get(app, path, query, b"s3cret")[0] == 200
