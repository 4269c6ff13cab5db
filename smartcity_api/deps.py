"""Dependencies shared by the routers: the lake reader and the API key check.

They are coroutines because none of them blocks: FastAPI runs a plain `def` dependency in
the threadpool, a hop that costs more than the whole check.
"""

from __future__ import annotations

import secrets
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request

from smartcity.settings import Settings
from smartcity_api.errors import ApiError
from smartcity_api.store import LakeReader

API_KEY_HEADER = "X-API-Key"


async def get_reader(request: Request) -> LakeReader:
    return request.app.state.reader


async def require_api_key(request: Request) -> None:
    """401 unless the header matches; compared in constant time. Open when no key is set.

    It reads the settings and the header from the request itself: each sub-dependency
    costs FastAPI a resolution on every request. `declare_api_key` puts the scheme in the
    OpenAPI document.
    """
    if not api_key_accepted(request.app.state.settings, request.headers.get(API_KEY_HEADER)):
        raise ApiError(401, f"{API_KEY_HEADER}: missing or wrong API key")


def api_key_accepted(settings: Settings, given: str | None) -> bool:
    """Whether `given` opens `/api/v1`: any value when no key is set, else the key itself."""
    if settings.api_key is None:
        return True
    expected = settings.api_key.get_secret_value().encode()
    return given is not None and secrets.compare_digest(given.encode(), expected)


def declare_api_key(app: FastAPI, prefix: str) -> None:
    """Give every operation under `prefix` the API-key security scheme in the OpenAPI
    document, as a `Security` dependency would have."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
            schemes["APIKeyHeader"] = {
                "type": "apiKey",
                "in": "header",
                "name": API_KEY_HEADER,
                "description": "Needed on /api/v1/* when the server has SMARTCITY_API_KEY set.",
            }
            for path, operations in schema["paths"].items():
                for operation in operations.values() if path.startswith(prefix) else ():
                    operation["security"] = [{"APIKeyHeader": []}]
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


ReaderDep = Annotated[LakeReader, Depends(get_reader)]
