"""Bad input is a 4xx whose message names the parameter and what is allowed; never a 500.

`ApiError` is raised by handlers for what the type system cannot see (an unknown sensor, a
reversed range); request validation errors are rewritten from pydantic's list into one line
per parameter; an unreachable store or broker is a 503 that says which.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

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


async def _api_error(_: Request, exc: Exception) -> Any:
    assert isinstance(exc, ApiError)
    return json_response({"detail": exc.detail}, exc.status_code)


async def _http(_: Request, exc: Exception) -> Any:
    assert isinstance(exc, HTTPException)
    return json_response({"detail": str(exc.detail)}, exc.status_code, headers=exc.headers)


async def _unavailable(_: Request, exc: Exception) -> Any:
    return json_response({"detail": f"a dependency is unavailable: {exc}"}, 503)


async def _storage(_: Request, exc: Exception) -> Any:
    log.warning("lake read failed: %s", exc)
    return json_response({"detail": f"the lake could not be read: {exc}"}, 503)


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(HTTPException, _http)
    app.add_exception_handler(BrokerUnreachable, _unavailable)
    app.add_exception_handler(RegistryUnavailable, _unavailable)
    app.add_exception_handler(OSError, _storage)
