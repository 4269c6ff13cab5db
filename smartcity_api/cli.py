"""`smartcity api`: serve the REST API with uvicorn."""

from __future__ import annotations

import typer
import uvicorn

from smartcity.cli_support import friendly_errors, settings_or_exit

HTTP_PROTOCOL = "smartcity_api.transport:GatheringHttpToolsProtocol"
"""uvicorn's httptools protocol, each response sent in one system call (see `transport`)."""
GRACEFUL_SHUTDOWN_S = 5
"""How long a stop waits for responses in flight before cancelling them: a live stream
(`/api/v1/live/stream`) never ends by itself, and uvicorn would otherwise wait for it forever."""


@friendly_errors
def api(
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8000, min=0, max=65535, help="Port to listen on."),
    workers: int = typer.Option(1, min=1, max=64, help="Worker processes."),
) -> None:
    """Serve the REST API (docs at /docs, health at /health, metrics at /metrics)."""
    settings_or_exit()  # a wrong setting stops here with one line, not in every worker
    uvicorn.run(
        "smartcity_api.app:from_environment",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        http=HTTP_PROTOCOL,
        access_log=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
    )
