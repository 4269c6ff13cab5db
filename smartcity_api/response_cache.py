"""A micro-cache of whole answers: the same GET of a hot route within a second is answered
from memory without going through FastAPI's routing, validation and dependencies.

Dashboards poll the same few URLs (the latest readings of a type, a date's aggregates, the
last hour of a sensor) many times a second; FastAPI's per-request work costs more than the
answer itself, which is already kept in memory (see `store`). An answer is reused for at
most `ttl_s` (the live state's own cadence), only when it was a 200 in one body, and only
for the same path, query string and API key (its first value, which is what auth reads),
so nothing is served to a caller who could not have had it. CORS headers are added outside
it, per request.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from cachetools import TTLCache
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from smartcity_api.deps import api_key_of
from smartcity_api.metrics import ROUTE_TEMPLATE, route_template

CACHEABLE = re.compile(r"^/api/v1/(sensors/latest|sensors/[^/]+/readings|aggregates/daily)$")
MAX_BYTES = 64 << 20


@dataclass(frozen=True)
class Answer:
    start: Message
    body: bytes
    route: str


class ResponseCache:
    def __init__(
        self, app: ASGIApp, ttl_s: float, timer: Callable[[], float] = time.monotonic
    ) -> None:
        self.app = app
        self.ttl_s = ttl_s
        self.answers: TTLCache[tuple[str, bytes, str | None], Answer] = TTLCache(
            MAX_BYTES, ttl_s, timer, getsizeof=lambda answer: len(answer.body) + 512
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            self.ttl_s <= 0
            or scope["type"] != "http"
            or scope["method"] != "GET"
            or not CACHEABLE.match(scope["path"])
        ):
            await self.app(scope, receive, send)
            return
        key = (scope["path"], scope["query_string"], api_key_of(scope))
        answer = self.answers.get(key)
        if answer is not None:
            scope[ROUTE_TEMPLATE] = answer.route
            await send(answer.start)
            await send({"type": "http.response.body", "body": answer.body})
            return
        messages: list[Message] = []

        async def keep(message: Message) -> None:
            messages.append(message)
            await send(message)

        await self.app(scope, receive, keep)
        if (
            len(messages) == 2
            and messages[0]["status"] == 200
            and not messages[1].get("more_body", False)
        ):
            answer = Answer(messages[0], messages[1].get("body", b""), route_template(scope))
            if len(answer.body) < MAX_BYTES // 16:
                self.answers[key] = answer
