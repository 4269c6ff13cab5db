"""Bad input is a 4xx whose message names the parameter and what is allowed; never a 500.

`ApiError` is raised by handlers for what the type system cannot see (an unknown sensor, a
reversed range); request validation errors are rewritten from pydantic's list into one line
per parameter; an unreachable store or broker is a 503 that says which.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from smartcity.kafka import BrokerUnreachable
from smartcity.registry import RegistryUnavailable
from smartcity_api.responses import json_response

log = logging.getLogger(__name__)


class ApiError(Exception):
    """A request the API cannot answer, with the status and the one-line reason."""

    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail


def not_found(detail: str) -> ApiError:
    return ApiError(404, detail)


def invalid(parameter: str, message: str) -> ApiError:
    return ApiError(422, f"{parameter}: {message}")


def _describe(error: dict[str, Any]) -> str:
    location = [str(part) for part in error.get("loc", ()) if part not in ("query", "path")]
    name = ".".join(location) or "request"
    message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    given = error.get("input")
    if error.get("type") == "missing":
        return f"{name}: required"
    shown = repr(given) if isinstance(given, str | int | float) else None
    return f"{name}: {message}" + (f", got {shown}" if shown is not None else "")


async def _validation(_: Request, exc: Exception) -> Any:
    assert isinstance(exc, RequestValidationError)
    return json_response({"detail": "; ".join(_describe(e) for e in exc.errors())}, 422)


async def _http(_: Request, exc: Exception) -> Any:
    assert isinstance(exc, HTTPException)
    return json_response({"detail": str(exc.detail)}, exc.status_code, headers=exc.headers)


def _api_error(exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return json_response({"detail": exc.detail}, exc.status_code)


def _unavailable(exc: Exception) -> Response:
    return json_response({"detail": f"a dependency is unavailable: {exc}"}, 503)


def _storage(exc: Exception) -> Response:
    log.warning("lake read failed: %s", exc)
    return json_response({"detail": f"the lake could not be read: {exc}"}, 503)


DOMAIN: dict[type[Exception], Callable[[Exception], Response]] = {
    ApiError: _api_error,
    BrokerUnreachable: _unavailable,
    RegistryUnavailable: _unavailable,
    OSError: _storage,
}
"""The answers to what handlers raise, shared by FastAPI's exception handlers and by the
lanes in front of FastAPI (`hot_routes`), so that both answer an error the same way."""


def error_response(exc: Exception) -> Response | None:
    """The answer to `exc`, looked up along its class's MRO as Starlette looks up its
    handlers; None for an exception no handler takes (a bug: a 500)."""
    for kind in type(exc).__mro__:
        if kind in DOMAIN:
            return DOMAIN[kind](exc)
    return None


def _as_handler(
    answer: Callable[[Exception], Response],
) -> Callable[[Request, Exception], Awaitable[Response]]:
    """A coroutine: Starlette runs a plain function handler in the threadpool."""

    async def handle(_: Request, exc: Exception) -> Response:
        return answer(exc)

    return handle


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(HTTPException, _http)
    for kind, answer in DOMAIN.items():
        app.add_exception_handler(kind, _as_handler(answer))
