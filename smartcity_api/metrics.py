"""Prometheus metrics of the API itself, recorded by a pure ASGI middleware.

Labels use the route's template (`/api/v1/sensors/{sensor_id}`), never the raw path, so
the number of series stays bounded whatever clients send. Each app has its own registry,
so several apps in one process (the tests) do not collide.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

UNMATCHED = "unmatched"
ROUTE_TEMPLATE = "smartcity.route_template"
"""Scope key under which an answer served without routing names its route."""
METRICS = "smartcity.metrics"
"""Scope key under which the middleware hands the app's `ApiMetrics` to the routes that record
figures of their own (the live stream's clients)."""
EVENT_STREAM = b"text/event-stream"
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


class CheckFailures(Collector):
    """Failed asset checks as the batch layer's alert sensor counted them in the lake: the
    API is the long-running process that can serve them to Prometheus."""

    def __init__(self, counts: Callable[[], dict[str, int]]) -> None:
        self.counts = counts

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "smartcity_dagster_asset_check_failures",
            "Failed asset check evaluations, by asset, check and severity.",
            labels=["asset", "check", "severity"],
        )
        for key, count in self.counts().items():
            asset, check, severity = key.split("/", 2)
            family.add_metric([asset, check, severity], count)
        yield family


class ApiMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "smartcity_api_requests",
            "HTTP requests answered, by route template, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.seconds = Histogram(
            "smartcity_api_request_seconds",
            "Time to answer a request, by route template.",
            ["route"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.live_clients = Gauge(
            "smartcity_api_live_clients",
            "Clients connected to the live stream (GET /api/v1/live/stream).",
            registry=self.registry,
        )
        self.live_dropped = Counter(
            "smartcity_api_live_dropped_clients",
            "Live-stream clients disconnected because they fell a whole queue behind.",
            registry=self.registry,
        )


def route_template(scope: Scope) -> str:
    """The matched route's full path template, prefixes of included routers included.

    FastAPI >= 0.16x keeps included routers nested: `scope["route"]` is then the route as
    declared in its router (`/sensors/{sensor_id}`), and the full template is on the
    effective route context it records in `scope["fastapi"]`.
    """
    if ROUTE_TEMPLATE in scope:
        return str(scope[ROUTE_TEMPLATE])
    context = scope.get("fastapi", {}).get("effective_route_context")
    effective = getattr(context, "path", None)
    if isinstance(effective, str):
        return effective
    route = scope.get("route")
    return route.path if isinstance(route, Route) else UNMATCHED


def is_event_stream(start: Message) -> bool:
    return any(
        name == b"content-type" and value.startswith(EVENT_STREAM)
        for name, value in start.get("headers", ())
    )


class MetricsMiddleware:
    """Counts and times every HTTP request by route template and status.

    An event stream is timed to its head: how long it then stays open is the client's
    choice, and counting hours of it in the latency histogram would raise the p95 alert.
    """

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope[METRICS] = self.metrics
        started = time.perf_counter()
        status = 500
        elapsed: float | None = None

        async def send_with_status(message: Message) -> None:
            nonlocal status, elapsed
            if message["type"] == "http.response.start":
                status = message["status"]
                if is_event_stream(message):
                    elapsed = time.perf_counter() - started
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            name = route_template(scope)
            self.metrics.requests.labels(name, scope["method"], str(status)).inc()
            if elapsed is None:
                elapsed = time.perf_counter() - started
            self.metrics.seconds.labels(name).observe(elapsed)
