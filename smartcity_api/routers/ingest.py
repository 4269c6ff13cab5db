"""`POST /readings`: sensors that do not speak Kafka post their readings here.

The HTTP side of ingest: the body's format and limits, and a status per outcome. Judging and
producing are `smartcity_api.ingest`'s; the answer waits for Kafka's acknowledgement of every
valid reading, so a 202 means the readings are in the topic, as a producer's own
acknowledgement would.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from smartcity_api.deps import INGEST_SCHEME
from smartcity_api.errors import ApiError
from smartcity_api.ingest import Delivery, Ingest, Rejection
from smartcity_api.models import (
    ErrorResponse,
    IngestAccepted,
    IngestRejected,
    IngestUnconfirmed,
)
from smartcity_api.responses import json_response

router = APIRouter(tags=["ingest"])

MAX_READINGS = 10_000
MAX_BODY_BYTES = 5 * 1024 * 1024
JSON = "application/json"
NDJSON = "application/x-ndjson"
RESEND = "resending the whole request is safe: readings are kept once per (sensor_id, seq)"

REQUEST_BODY = {
    "required": True,
    "description": (
        f"At most {MAX_READINGS:,} readings and {MAX_BODY_BYTES // 2**20} MB. Each reading "
        "follows the wire contract (contracts/sensor-reading.schema.json)."
    ),
    "content": {
        JSON: {
            "schema": {
                "type": "array",
                "items": {"type": "object"},
                "minItems": 1,
                "maxItems": MAX_READINGS,
            }
        },
        NDJSON: {"schema": {"type": "string", "description": "one JSON reading per line"}},
    },
}


def _count(readings: int) -> None:
    if readings == 0:
        raise ApiError(400, "body: no readings; send at least one")
    if readings > MAX_READINGS:
        raise ApiError(
            413, f"body: at most {MAX_READINGS} readings per request, got {readings}; split it"
        )


def json_items(body: bytes) -> list[bytes]:
    """A JSON array's items, each re-encoded to the bytes that are judged and produced."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise ApiError(
            400,
            f"body: malformed JSON at line {error.lineno}, column {error.colno} "
            f"(byte {error.pos}): {error.msg}",
        ) from None
    if not isinstance(parsed, list):
        raise ApiError(400, f"body: must be a JSON array of readings, got {type(parsed).__name__}")
    _count(len(parsed))
    encoded = []
    for index, item in enumerate(parsed):
        try:
            encoded.append(orjson.dumps(item))
        except orjson.JSONEncodeError as error:  # nested deeper than orjson writes
            raise ApiError(
                400, f"body: reading {index} cannot be re-encoded ({error}); send flat objects"
            ) from None
    return encoded


def ndjson_items(body: bytes) -> list[bytes]:
    """One item per line, as sent; a malformed line is that reading's fault, not the body's.
    Blank lines count as (malformed) items so that an index is always a line number - 1."""
    lines = body.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    _count(len(lines))
    return [line.removesuffix(b"\r") for line in lines]


def body_format(content_type: str | None) -> Callable[[bytes], list[bytes]]:
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type == JSON:
        return json_items
    if media_type == NDJSON:
        return ndjson_items
    raise ApiError(
        415, f"Content-Type: send {JSON} (an array) or {NDJSON}, got {content_type or 'none'}"
    )


async def read_body(request: Request) -> bytes:
    """The body, refused as soon as it is known to exceed the limit (never read whole)."""
    too_large = ApiError(413, f"body: at most {MAX_BODY_BYTES} bytes per request; split it")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise too_large
        chunks.append(chunk)
    if not any(chunk.strip() for chunk in chunks):
        raise ApiError(400, "body: empty; send readings as a JSON array or NDJSON")
    return b"".join(chunks)


def _report(detail: str, received: int, accepted: int, rejected: list[Rejection]) -> dict[str, Any]:
    return {
        "detail": detail,
        "received": received,
        "accepted": accepted,
        "rejected": [{"index": r.index, "reason": r.reason, "error": r.error} for r in rejected],
    }


@router.post(
    "/readings",
    status_code=202,
    response_model=IngestAccepted,
    responses={
        400: {"model": ErrorResponse},
        401: {"model": ErrorResponse},
        403: {"model": ErrorResponse},
        413: {"model": ErrorResponse},
        415: {"model": ErrorResponse},
        422: {"model": IngestRejected},
        503: {"model": IngestUnconfirmed},
    },
    openapi_extra={"requestBody": REQUEST_BODY, "security": [{INGEST_SCHEME: []}]},
    summary="Write readings: produced to Kafka, answered once Kafka acknowledged them",
)
async def post_readings(request: Request) -> Any:
    """Invalid readings are listed with their index and reason and not produced; 202 once
    Kafka acknowledged every valid one. On 503, resend the whole request."""
    parse = body_format(request.headers.get("content-type"))
    body = await read_body(request)
    ingest: Ingest = request.app.state.ingest
    delivery = Delivery(asyncio.get_running_loop())

    def submit() -> tuple[int, int, list[Rejection]]:
        items = parse(body)
        valid, rejected = ingest.submit(items, delivery)
        return len(items), valid, rejected

    received, valid, rejected = await run_in_threadpool(submit)
    if valid == 0:
        detail = f"no valid reading: all {received} rejected (see `rejected`)"
        return json_response(_report(detail, received, 0, rejected), 422)
    timeout = ingest.settings.kafka_timeout_s
    await asyncio.wait([delivery.done], timeout=timeout)  # on time-out, left running
    outcome = delivery.outcome(valid)
    if outcome.unconfirmed:
        why = outcome.error or f"no acknowledgement within {timeout:g} s"
        detail = (
            f"Kafka did not confirm {outcome.unconfirmed} of {valid} valid readings ({why}); "
            f"{RESEND}"
        )
        report = _report(detail, received, outcome.acknowledged, rejected)
        return json_response({**report, "unconfirmed": outcome.unconfirmed}, 503)
    detail = f"{valid} readings acknowledged by Kafka, {len(rejected)} rejected"
    return json_response(_report(detail, received, valid, rejected), 202)
