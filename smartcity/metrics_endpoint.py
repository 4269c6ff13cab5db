"""`/metrics` and `/healthz` on one port, for the platform's long-running processes that are
not web servers themselves (the stream worker, the MQTT bridge)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import orjson
from prometheus_client import CollectorRegistry, make_wsgi_app


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes every few seconds are not worth a log line."""


def serve(
    registry: CollectorRegistry, host: str, port: int, health: Callable[[], dict[str, Any]]
) -> WSGIServer:
    """Serve `registry` at `/metrics` and `health()` at `/healthz` (503 unless its status is
    ok) on `port` (0: a free one) in a daemon thread."""
    metrics_app = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        if environ.get("PATH_INFO") == "/healthz":
            status = health()
            code = "200 OK" if status.get("status") == "ok" else "503 Service Unavailable"
            start_response(code, [("Content-Type", "application/json")])
            return [orjson.dumps(status)]
        return metrics_app(environ, start_response)

    server = make_server(host, port, app, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
