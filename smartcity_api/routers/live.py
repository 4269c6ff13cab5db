"""The live stream: Server-Sent Events for the city map, fed from Kafka (see `live_hub`).

The hub is made by the first client of an app (a process that never serves the stream
never opens a consumer) and closed by this router's lifespan, which FastAPI merges into the
app's when the router is included.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from smartcity_api.live_hub import KEEP_ALIVE_S, QUEUE_EVENTS, LiveHub, Subscriber
from smartcity_api.metrics import METRICS, ApiMetrics

MEDIA_TYPE = "text/event-stream"
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
DESCRIPTION = f"""Server-Sent Events (`text/event-stream`, UTF-8); each `data:` line is one
JSON object. Send `X-API-Key` as on every `/api/v1` route (read the stream with `fetch`, since
`EventSource` cannot send headers).

- `event: reading`: a sensor's newest reading, its own JSON as produced (`sensor_id`,
  `sensor_type`, `event_time`, `seq` and the type's measurements); at most one per sensor
  per second, the highest `seq` of that second.
- `event: anomaly`: every anomaly the stream worker publishes, its JSON as published
  (`anomaly_id`, `sensor_id`, `sensor_type`, `kind`, `severity`, `event_time`, `seq`,
  `window_start`, `window_end`, `detected_at`, `values`), as soon as it is on the topic.
- `event: clock`: on connecting, then every second:
  `{{"now": RFC 3339, "watermark": RFC 3339 or null, "lag_s": number or null}}`, the
  newest reading `event_time` this API process has seen on Kafka and `now` minus it.
- `: keep-alive`, a comment line, after {KEEP_ALIVE_S:g} s without anything else.

Only what arrives after connecting is sent. A client that falls {QUEUE_EVENTS:,} events
behind is disconnected (reconnect to resume). With Kafka unreachable the stream still
answers 200 and sends `clock` events (a null watermark if none was ever seen)."""
EXAMPLE = (
    'event: clock\ndata: {"now":"2026-12-04T10:00:00.000412Z",'
    '"watermark":"2026-12-04T09:59:59.900Z","lag_s":0.1}\n\n'
    'event: reading\ndata: {"schema_version":1,"sensor_id":"TRAFFIC_0007",'
    '"sensor_type":"traffic","event_time":"2026-12-04T09:59:59.900Z","seq":17963783999,'
    '"interval_s":0.1,"vehicle_count":3,"average_speed_kmh":41.5,"occupancy_pct":8.2,'
    '"congestion_level":"low"}\n\n'
)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    hub: LiveHub | None = getattr(app.state, "live_hub", None)
    if hub is not None:
        hub.close()


router = APIRouter(prefix="/live", tags=["live"], lifespan=lifespan)


class EventStreamResponse(StreamingResponse):
    """The client's events; it leaves the hub however the response ends (the client closed
    the connection, was dropped, or the server is stopping)."""

    def __init__(self, hub: LiveHub, subscriber: Subscriber) -> None:
        super().__init__(subscriber.events(), media_type=MEDIA_TYPE, headers=HEADERS)
        self.hub = hub
        self.subscriber = subscriber

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.hub.unsubscribe(self.subscriber)


def hub_of(request: Request) -> LiveHub:
    state = request.app.state
    hub: LiveHub | None = getattr(state, "live_hub", None)
    if hub is None:
        metrics: ApiMetrics = request.scope[METRICS]
        hub = state.live_hub = LiveHub(state.settings, metrics.live_clients, metrics.live_dropped)
    return hub


@router.get(
    "/stream",
    summary="Live readings, anomalies and a clock, as Server-Sent Events",
    description=DESCRIPTION,
    response_class=StreamingResponse,
    responses={200: {"content": {MEDIA_TYPE: {"schema": {"type": "string"}, "example": EXAMPLE}}}},
)
async def live_stream(request: Request) -> EventStreamResponse:
    hub = hub_of(request)
    return EventStreamResponse(hub, hub.subscribe())
