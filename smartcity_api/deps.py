"""Dependencies shared by the routers: the lake reader, the settings and the API key check.

They are coroutines because none of them blocks: FastAPI runs a plain `def` dependency in
the threadpool, a hop that costs more than the whole check.
"""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader

from smartcity.settings import Settings
from smartcity_api.errors import ApiError
from smartcity_api.store import LakeReader

_api_key_header = APIKeyHeader(
    name="X-API-Key",
    auto_error=False,
    description="Needed on /api/v1/* when the server has SMARTCITY_API_KEY set.",
)


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_reader(request: Request) -> LakeReader:
    return request.app.state.reader


async def require_api_key(
    settings: Annotated[Settings, Depends(get_settings)],
    given: Annotated[str | None, Security(_api_key_header)] = None,
) -> None:
    """401 unless the header matches; compared in constant time. Open when no key is set."""
    if settings.api_key is None:
        return
    expected = settings.api_key.get_secret_value().encode()
    if given is None or not secrets.compare_digest(given.encode(), expected):
        raise ApiError(401, "X-API-Key: missing or wrong API key")


SettingsDep = Annotated[Settings, Depends(get_settings)]
ReaderDep = Annotated[LakeReader, Depends(get_reader)]
