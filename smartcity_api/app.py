"""The FastAPI application: `create_app(settings)`, or `from_environment()` for uvicorn.

The app reads the lake and the stream worker's live state directly; it never runs Dagster
jobs or consumes Kafka per request. `/`, `/health`, `/metrics`, the docs and the map are open;
everything under `/api/v1` needs the API key when one is configured, except the one write
route, `POST /api/v1/readings`, which needs the ingest key (`deps.require_ingest_key`).
"""

from __future__ import annotations

import gc
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import RedirectResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from smartcity.settings import Settings, load_settings
from smartcity_api import __version__, errors
from smartcity_api.broker import Broker
from smartcity_api.deps import declare_api_key, require_api_key, require_ingest_key
from smartcity_api.hot_routes import HotRoutes
from smartcity_api.ingest import Ingest
from smartcity_api.metrics import ApiMetrics, CheckFailures, MetricsMiddleware
from smartcity_api.models import Root
from smartcity_api.response_cache import ResponseCache
from smartcity_api.responses import OrjsonResponse, error_responses, json_response
from smartcity_api.routers import (
    aggregates,
    anomalies,
    export,
    health,
    ingest,
    live,
    quality,
    sensors,
    statistics,
)
from smartcity_api.routers import map as city_map
from smartcity_api.store import LakeReader

API_PREFIX = "/api/v1"
SWITCH_INTERVAL_S = 0.0005
DESCRIPTION = """Sensors, reading history, aggregates, anomalies, data quality and
statistics of the smartcity platform, read from the lake and the stream worker's live state.
When the server has `SMARTCITY_API_KEY` set, `/api/v1/*` needs it in the `X-API-Key` header;
`POST /api/v1/readings` writes readings and needs `SMARTCITY_INGEST_KEY` there instead.
Errors are `{"detail": "<parameter>: <what is wrong and what is allowed>"}`."""


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """At shutdown, readings still queued for Kafka get their chance to be delivered."""
    yield
    app.state.ingest.close()


def create_app(settings: Settings) -> FastAPI:
    app = FastAPI(
        title="smartcity API",
        version=__version__,
        description=DESCRIPTION,
        default_response_class=OrjsonResponse,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.reader = LakeReader(settings)
    app.state.ingest = Ingest(settings, app.state.reader.lake)
    app.state.broker = Broker(settings)
    metrics = ApiMetrics()
    metrics.registry.register(CheckFailures(app.state.reader.check_failures))
    errors.install(app)

    for module in (sensors, aggregates, anomalies, quality, statistics, export, live):
        app.include_router(
            module.router,
            prefix=API_PREFIX,
            dependencies=[Depends(require_api_key)],
            responses=error_responses(401, 422, 503),
        )
    app.include_router(ingest.router, prefix=API_PREFIX, dependencies=[Depends(require_ingest_key)])
    app.include_router(health.router)
    app.include_router(city_map.router)
    declare_api_key(app, API_PREFIX)

    @app.get(
        "/",
        response_model=Root,
        tags=["meta"],
        summary="What this service is",
        responses={307: {"description": "A browser (`Accept: text/html`) goes to the map"}},
    )
    async def root(request: Request) -> Any:
        if "text/html" in request.headers.get("accept", ""):
            return RedirectResponse("/map", status_code=307)
        return json_response(
            {
                "name": "smartcity API",
                "version": __version__,
                "docs": "/docs",
                "openapi": "/openapi.json",
                "health": "/health",
                "metrics": "/metrics",
            }
        )

    @app.get(
        "/metrics",
        tags=["meta"],
        summary="Prometheus metrics of the API",
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {}}}},
    )
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(HotRoutes, settings=settings, reader=app.state.reader)
    app.add_middleware(ResponseCache, ttl_s=settings.api_response_cache_s)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET"],
            allow_headers=["X-API-Key"],
        )
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app


def from_environment() -> FastAPI:
    """The factory uvicorn calls in each worker process (`--factory`).

    What start-up built (modules, the app and its routes) is then frozen out of the garbage
    collector's generations: a full collection would otherwise walk all of it in the middle
    of requests, a pause of tens of milliseconds at a thousand requests a second.

    The interpreter's switch interval is shortened for the same reason: reads and renders
    that miss the cache run in the threadpool, and with the default 5 ms a thread holding
    the GIL keeps the event loop, and every request waiting on it, from running for that
    long at a time.
    """
    app = create_app(load_settings())
    gc.freeze()
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    return app
