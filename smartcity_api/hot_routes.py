"""One sensor's readings answered below FastAPI when the request is plainly well formed.

FastAPI's routing, parameter validation and dependency resolution cost about 450 µs a
request, four times the page itself once its hour blocks are in memory (see `readings`):
at a thousand requests a second that overhead alone is half a core. This layer takes a
readings request only in the plain form clients send (the documented parameters, each at
most once, timestamps in RFC 3339, the right API key), gives it the meaning FastAPI would,
and answers with the route's own `readings_page`. Anything else (an unknown parameter, an
unusual spelling, a reversed range, a bad cursor) goes on to FastAPI untouched. What
`readings_page` raises (an unknown sensor, a lake that cannot be read) is answered here by
the same `errors.error_response` FastAPI's exception handlers use, so the status and body
are the route's: this layer sits outside Starlette's exception middleware, where an
exception would otherwise become a plain-text 500.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Receive, Scope, Send

from smartcity.settings import Settings
from smartcity_api.deps import api_key_accepted, api_key_of
from smartcity_api.errors import ApiError, error_response
from smartcity_api.metrics import ROUTE_TEMPLATE
from smartcity_api.params import (
    DEFAULT_LIMIT,
    MAX_CURSOR,
    MAX_LIMIT,
    SENSOR_ID_PATTERN,
    checked_range,
)
from smartcity_api.readings import Position
from smartcity_api.routers.sensors import readings_page
from smartcity_api.serving import answer
from smartcity_api.store import LakeReader

READINGS_PATH = re.compile(r"/api/v1/sensors/([^/]+)/readings")
READINGS_TEMPLATE = "/api/v1/sensors/{sensor_id}/readings"
SENSOR_ID = re.compile(SENSOR_ID_PATTERN)
INSTANT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?(Z|[+-]\d\d:\d\d)")
COUNT = re.compile(r"[1-9]\d{0,4}")
PARAMETERS = frozenset({"start", "end", "limit", "cursor"})


@dataclass(frozen=True)
class ReadingsRequest:
    sensor_id: str
    start: datetime
    end: datetime
    limit: int
    after: Position | None


def _instant(text: str) -> datetime | None:
    if INSTANT.fullmatch(text) is None:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def parse_readings(path: str, query_string: bytes) -> ReadingsRequest | None:
    """The request, if it is a plain, valid readings request; else None (FastAPI's turn).

    The query is split as Starlette splits it; a repeated parameter is left to FastAPI.
    """
    match = READINGS_PATH.fullmatch(path)
    if match is None or SENSOR_ID.fullmatch(match[1]) is None:
        return None
    pairs = parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)
    params = dict(pairs)
    if len(params) != len(pairs) or not params.keys() <= PARAMETERS:
        return None
    start, end = _instant(params.get("start", "")), _instant(params.get("end", ""))
    limit, cursor = params.get("limit", str(DEFAULT_LIMIT)), params.get("cursor")
    if start is None or end is None or COUNT.fullmatch(limit) is None:
        return None
    if int(limit) > MAX_LIMIT or (cursor is not None and len(cursor) > MAX_CURSOR):
        return None
    try:
        start, end = checked_range(start, end)
        after = Position.decode(cursor) if cursor is not None else None
    except ApiError:
        return None
    return ReadingsRequest(match[1], start, end, int(limit), after)


class HotRoutes:
    """ASGI middleware in front of FastAPI for the plain readings requests."""

    def __init__(self, app: ASGIApp, settings: Settings, reader: LakeReader) -> None:
        self.app = app
        self.settings = settings
        self.reader = reader

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        request = parse_readings(scope["path"], scope["query_string"])
        if request is None or not api_key_accepted(self.settings, api_key_of(scope)):
            await self.app(scope, receive, send)
            return
        scope[ROUTE_TEMPLATE] = READINGS_TEMPLATE
        try:
            body = await answer(lambda: self._page(request))
        except Exception as exc:
            failure = error_response(exc)
            if failure is None:
                raise
            await failure(scope, receive, send)
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-length", str(len(body)).encode()),
                    (b"content-type", b"application/json"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    def _page(self, request: ReadingsRequest) -> bytes:
        return readings_page(
            self.reader,
            request.sensor_id,
            request.start,
            request.end,
            request.limit,
            request.after,
        )
