"""The operator's live city map: the page built from `web/` by `make web`, served at `/map`.

Open like `/docs`: the page holds no data itself, and its calls to `/api/v1` carry the API
key. The bundle lives in the package (`smartcity_api/map/`, package data), so an installed
API serves it with nothing fetched from elsewhere at run time.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from smartcity_api.errors import ApiError, not_found

router = APIRouter(tags=["map"], include_in_schema=False)
BUNDLE = Path(__file__).resolve().parents[1] / "map"
INDEX = "index.html"
# Vite names each asset by its content hash: a new build is new names, so assets are kept
# for good and the page itself is checked each time.
ASSET_CACHING = "public, max-age=31536000, immutable"
PAGE_CACHING = "no-cache"


def _bundle() -> Path:
    if not (BUNDLE / INDEX).is_file():
        raise ApiError(503, "map: the page is not built; `make web` builds it")
    return BUNDLE


@router.get("/map")
async def map_page() -> FileResponse:
    return FileResponse(_bundle() / INDEX, headers={"Cache-Control": PAGE_CACHING})


@router.get("/map/{path:path}")
async def map_file(path: str) -> FileResponse:
    """A file of the bundle; `/map/` is the page too. Nothing outside the bundle is served."""
    root = _bundle()
    if path in ("", INDEX):
        return await map_page()
    found = (root / path).resolve()
    if not found.is_relative_to(root) or not found.is_file():
        raise not_found(f"path: no file {path!r} in the map's bundle")
    return FileResponse(found, headers={"Cache-Control": ASSET_CACHING})
