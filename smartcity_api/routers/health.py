"""Health: is the API usable, and how are the parts it reads from doing.

`down` overall (HTTP 503) only when the lake cannot be read: without it nothing can be
served. Kafka, a stale live state or no materialization yet make the API `degraded`: it
still answers from what the lake holds.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request

from smartcity_api.broker import Broker
from smartcity_api.models import Health, Status
from smartcity_api.responses import json_response
from smartcity_api.store import LakeReader

router = APIRouter(tags=["health"])
LIVE_OK_S = 15.0
LIVE_DEGRADED_S = 300.0


def _component(status: Status, detail: str, **info: Any) -> dict[str, Any]:
    return {"status": status, "detail": detail, "checked_at": datetime.now(UTC), "info": info}


def _lake(reader: LakeReader) -> dict[str, Any]:
    try:
        reader.filesystem_info()
    except OSError as error:
        return _component("down", f"the lake cannot be read: {error}")
    return _component("ok", "reachable", uri=reader.lake.uri)


def _kafka(broker: Broker) -> dict[str, Any]:
    reachable, detail = broker.reachable()
    return _component("ok" if reachable else "down", detail)


def _live(reader: LakeReader) -> dict[str, Any]:
    written = [s["written_at"] for s in reader.live_statuses() if s.get("written_at")]
    if not written:
        return _component("down", "no stream worker has written live state")
    newest = max(datetime.fromisoformat(w) for w in written)
    age = (datetime.now(UTC) - newest).total_seconds()
    status: Status = "ok" if age <= LIVE_OK_S else "degraded" if age <= LIVE_DEGRADED_S else "down"
    return _component(status, f"live state written {age:.1f} s ago", written_at=newest)


def _assets(reader: LakeReader) -> dict[str, Any]:
    last: dict[str, Any] = {}
    for asset in reader.quality_assets():
        dates = reader.quality_dates(asset)
        record = reader.quality_record(asset, dates[-1]) if dates else None
        if record is not None:
            last[asset] = {
                "partition": record.get("partition"),
                "materialized_at": record.get("materialized_at"),
            }
    if not last:
        return _component("degraded", "no asset has been materialized yet")
    return _component("ok", f"{len(last)} asset(s) materialized", last_materialization=last)


@router.get(
    "/health",
    response_model=Health,
    responses={503: {"model": Health, "description": "The lake cannot be read."}},
    summary="Overall status and each dependency's",
)
def health(request: Request) -> Any:
    reader: LakeReader = request.app.state.reader
    lake = _lake(reader)
    components = {"lake": lake, "kafka": _kafka(request.app.state.broker)}
    if lake["status"] == "ok":
        components |= {"live_state": _live(reader), "assets": _assets(reader)}
    statuses = {c["status"] for c in components.values()}
    overall: Status = (
        "down" if lake["status"] == "down" else "ok" if statuses == {"ok"} else "degraded"
    )
    return json_response(
        {"status": overall, "components": components}, 503 if overall == "down" else 200
    )
