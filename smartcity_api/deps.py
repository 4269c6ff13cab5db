"""Dependencies shared by the routers: the lake reader, the read key and the ingest key.

They are coroutines because none of them blocks: FastAPI runs a plain `def` dependency in
the threadpool, a hop that costs more than the whole check.
"""

from __future__ import annotations

import secrets
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from pydantic import SecretStr
from starlette.types import Scope

from smartcity.settings import Settings
from smartcity_api.errors import ApiError
from smartcity_api.store import LakeReader

API_KEY_HEADER = "X-API-Key"
_KEY_NAME = API_KEY_HEADER.lower().encode()


def api_key_of(scope: Scope) -> str | None:
    """The request's `X-API-Key`: its first value when repeated, as Starlette's
    `headers.get` reads it. Every key check and the response cache's key use this one
    reading, so an answer is never filed under another key than the one that opened it."""
    given = next((value for name, value in scope["headers"] if name == _KEY_NAME), None)
    return None if given is None else given.decode("latin-1")


async def get_reader(request: Request) -> LakeReader:
    return request.app.state.reader


async def require_api_key(request: Request) -> None:
    """401 unless the header matches; compared in constant time. Open when no key is set.

    It reads the settings and the header from the request itself: each sub-dependency
    costs FastAPI a resolution on every request. `declare_api_key` puts the scheme in the
    OpenAPI document.
    """
    if not api_key_accepted(request.app.state.settings, api_key_of(request.scope)):
        raise ApiError(401, f"{API_KEY_HEADER}: missing or wrong API key")


def api_key_accepted(settings: Settings, given: str | None) -> bool:
    """Whether `given` opens `/api/v1`: any value when no key is set, else the key itself."""
    return settings.api_key is None or key_matches(settings.api_key, given)


def key_matches(key: SecretStr, given: str | None) -> bool:
    """`given` is `key`, compared in constant time so that timing tells nothing of the key."""
    expected = key.get_secret_value().encode()
    return given is not None and secrets.compare_digest(given.encode(), expected)


async def require_ingest_key(request: Request) -> None:
    """Writes need their own key, so that a leaked read key (a dashboard's) cannot inject
    readings. With `SMARTCITY_INGEST_KEY` set the header must be it: the read key gets 403,
    anything else 401. With only the read key set, ingest stays shut (403) rather than
    falling open; with neither set (local development) it is open."""
    settings: Settings = request.app.state.settings
    given = api_key_of(request.scope)
    if settings.ingest_key is None:
        if settings.api_key is not None:
            raise ApiError(
                403,
                f"{API_KEY_HEADER}: ingest is disabled on this server until "
                "SMARTCITY_INGEST_KEY is set (SMARTCITY_API_KEY only reads)",
            )
        return
    if key_matches(settings.ingest_key, given):
        return
    if settings.api_key is not None and key_matches(settings.api_key, given):
        raise ApiError(
            403, f"{API_KEY_HEADER}: this key reads but cannot write; send the ingest key"
        )
    raise ApiError(401, f"{API_KEY_HEADER}: missing or wrong ingest key")


INGEST_SCHEME = "IngestKeyHeader"
"""The security scheme of the write routes; they declare it themselves (`openapi_extra`)."""
SECURITY_SCHEMES = {
    "APIKeyHeader": "Needed on /api/v1/* when the server has SMARTCITY_API_KEY set.",
    INGEST_SCHEME: (
        "Needed on POST /api/v1/readings when the server has SMARTCITY_INGEST_KEY set; "
        "shut (403) when only SMARTCITY_API_KEY is set."
    ),
}


def declare_api_key(app: FastAPI, prefix: str) -> None:
    """Give every operation under `prefix` the API-key security scheme in the OpenAPI
    document, as a `Security` dependency would have; an operation that declares its own
    security (the write routes' ingest key) keeps it."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
            for name, description in SECURITY_SCHEMES.items():
                schemes[name] = {
                    "type": "apiKey",
                    "in": "header",
                    "name": API_KEY_HEADER,
                    "description": description,
                }
            for path, operations in schema["paths"].items():
                for operation in operations.values() if path.startswith(prefix) else ():
                    operation.setdefault("security", [{"APIKeyHeader": []}])
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


ReaderDep = Annotated[LakeReader, Depends(get_reader)]
