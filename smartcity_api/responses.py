"""JSON responses rendered with orjson: fast, NaN as null, times in RFC 3339 with `Z`.

Handlers return plain dicts and lists built from Arrow rows, or bytes rendered earlier and
kept; validating thousands of rows through pydantic models per request would cost more than
reading them. The declared response models still describe (and the schemathesis test still
checks) the shape.
"""

from __future__ import annotations

from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
from fastapi.responses import JSONResponse, Response

from smartcity_api.models import ErrorResponse

RFC3339_Z = "%Y-%m-%dT%H:%M:%SZ"
JSON_OPTIONS = orjson.OPT_UTC_Z | orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


class OrjsonResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        return render(content)


def json_response(
    content: Any, status_code: int = 200, headers: dict[str, str] | None = None
) -> OrjsonResponse:
    return OrjsonResponse(content, status_code=status_code, headers=headers)


def rfc3339_text(times: pa.ChunkedArray) -> pa.ChunkedArray:
    """Timestamps as the text orjson writes for them (whole seconds bare, others with
    microseconds, `Z`), computed in Arrow: making a Python datetime per row first is most of
    the cost of rendering rows."""
    whole = pc.equal(pc.floor_temporal(times, unit="second"), times)
    seconds = pc.strftime(pc.cast(times, pa.timestamp("s", "UTC"), safe=False), format=RFC3339_Z)
    if pc.all(whole).as_py() is not False:
        return seconds
    micros = pc.strftime(pc.cast(times, pa.timestamp("us", "UTC")), format=RFC3339_Z)
    return pc.if_else(whole, seconds, micros)


def render_rows(table: pa.Table) -> list[bytes]:
    """Each row of `table` as the JSON object `render` would make of it."""
    for index, field in enumerate(table.schema):
        if pa.types.is_timestamp(field.type) and field.type.tz in ("UTC", "+00:00"):
            table = table.set_column(index, field.name, rfc3339_text(table.column(index)))
    return [orjson.dumps(row, option=JSON_OPTIONS) for row in table.to_pylist()]


def render(content: Any) -> bytes:
    """`content` as the JSON bytes `json_response` would send, for responses kept ready."""
    return orjson.dumps(content, option=JSON_OPTIONS)


def rendered_response(body: bytes) -> Response:
    """A response whose JSON is already rendered (see `render`, `with_items`)."""
    return Response(body, media_type="application/json")


def with_items(fields: dict[str, Any], items: list[bytes]) -> bytes:
    """`fields` plus `"items": [...]` from items rendered one by one beforehand."""
    return b"".join((render(fields)[:-1], b',"items":[', b",".join(items), b"]}"))


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for the error codes a route can answer."""
    return {code: {"model": ErrorResponse} for code in codes}
