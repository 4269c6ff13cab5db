"""Sensors: the registry, the live latest readings, one sensor, and its reading history."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

import pyarrow as pa
import pyarrow.compute as pc
from fastapi import APIRouter, Query

from smartcity_api.deps import ReaderDep
from smartcity_api.errors import not_found
from smartcity_api.models import (
    KAFKA_COLUMNS,
    LatestList,
    LatestReading,
    ReadingPage,
    SensorDetail,
    SensorPage,
)
from smartcity_api.params import (
    DEFAULT_LIMIT,
    MAX_CURSOR,
    DistrictFilter,
    End,
    SensorIdPath,
    SensorTypeFilter,
    Start,
    checked_range,
    known_sensor,
    limit_param,
    reject_path_characters,
)
from smartcity_api.readings import History, Position
from smartcity_api.responses import (
    error_responses,
    json_response,
    render_rows,
    rendered_response,
    with_items,
)
from smartcity_api.serving import answer
from smartcity_api.store import LakeReader

router = APIRouter(prefix="/sensors", tags=["sensors"])


@dataclass(frozen=True)
class LiveLatest:
    """The live latest readings with each sensor's district, each row rendered once.

    It is rebuilt every second; the answers of `latest` pick their rows from it, so a
    second's worth of requests with any filters renders each reading once.
    """

    table: pa.Table
    items: list[bytes]
    types: list[str]
    districts: list[str | None]

    def rendered(self, sensor_type: str | None, district: str | None, limit: int) -> bytes:
        items = [
            item
            for item, its_type, its_district in zip(
                self.items, self.types, self.districts, strict=True
            )
            if sensor_type in (None, its_type) and district in (None, its_district)
        ][:limit]
        return with_items({"count": len(items)}, items)


def _live_latest(reader: LakeReader) -> LiveLatest:
    def build() -> LiveLatest:
        registry = reader.registry()
        found = reader.latest().drop_columns(list(KAFKA_COLUMNS))
        places = pc.index_in(found.column("sensor_id"), value_set=registry.column("sensor_id"))
        table = found.append_column("district", registry.column("district").take(places))
        types = table.column("sensor_type").to_pylist()
        return LiveLatest(table, render_rows(table), types, table.column("district").to_pylist())

    return reader.live_view("latest rendered", build)


@router.get("", response_model=SensorPage, summary="The sensor registry")
def list_sensors(
    reader: ReaderDep,
    sensor_type: SensorTypeFilter = None,
    district: DistrictFilter = None,
    offset: Annotated[
        int, Query(ge=0, le=1_000_000, description="Skip this many sensors.", examples=[0])
    ] = 0,
    limit: Annotated[int, limit_param(1000)] = 100,
) -> Any:
    """Sensors in id order, filtered by type and district; `offset`/`limit` pages."""
    table = reader.registry()
    if sensor_type is not None:
        table = table.filter(pc.field("sensor_type") == sensor_type)
    if district is not None:
        table = table.filter(pc.field("district") == district)
    table = table.sort_by("sensor_id")
    page = table.slice(offset, limit).to_pylist()
    return json_response({"items": page, "total": table.num_rows, "offset": offset, "limit": limit})


@router.get("/latest", response_model=LatestList, summary="Latest reading per sensor")
async def latest_readings(
    reader: ReaderDep,
    sensor_type: SensorTypeFilter = None,
    district: DistrictFilter = None,
    limit: Annotated[int, limit_param()] = DEFAULT_LIMIT,
) -> Any:
    """From the stream worker's live state (about a second old), in sensor id order."""

    def body() -> bytes:
        return _live_latest(reader).rendered(sensor_type, district, limit)

    key = ("latest", sensor_type, district, limit)
    return rendered_response(await answer(lambda: reader.live_view(key, body)))


@router.get(
    "/{sensor_id}",
    response_model=SensorDetail,
    responses=error_responses(404),
    summary="One sensor: metadata, latest reading, record count",
)
def sensor_detail(reader: ReaderDep, sensor_id: SensorIdPath) -> Any:
    sensor = known_sensor(reader, sensor_id)
    latest = _latest_of(reader, sensor_id)
    history = History(reader, str(sensor["sensor_type"]), sensor_id)
    count = reader.derived(("count", sensor_id), history.count)
    return json_response({"sensor": sensor, "latest": latest, "record_count": count})


def _latest_of(reader: LakeReader, sensor_id: str) -> dict[str, Any] | None:
    found = _live_latest(reader).table.filter(pc.field("sensor_id") == sensor_id).to_pylist()
    return found[0] if found else None


@router.get(
    "/{sensor_id}/latest",
    response_model=LatestReading,
    responses=error_responses(404),
    summary="A sensor's latest reading",
)
def sensor_latest(reader: ReaderDep, sensor_id: SensorIdPath) -> Any:
    """From the stream worker's live state (about a second old); 404 until a first reading
    of the sensor has been taken, so a client can poll it after sending one."""
    known_sensor(reader, sensor_id)
    latest = _latest_of(reader, sensor_id)
    if latest is None:
        raise not_found(f"sensor_id: no reading of {sensor_id} in the live state yet")
    return json_response(latest)


@router.get(
    "/{sensor_id}/readings",
    response_model=ReadingPage,
    responses=error_responses(404),
    summary="A sensor's reading history",
)
async def sensor_readings(
    reader: ReaderDep,
    sensor_id: SensorIdPath,
    start: Start,
    end: End,
    limit: Annotated[int, limit_param()] = DEFAULT_LIMIT,
    cursor: Annotated[
        str | None,
        Query(
            description="`next_cursor` of the previous page; omit for the first page.",
            max_length=MAX_CURSOR,
            examples=["WzE3OTU3Mzc2MDAwMDAsMF0"],
        ),
    ] = None,
) -> Any:
    """Readings in [start, end) ordered by (event_time, seq): clean tables where built, the
    landing for what is not, without duplicates."""
    start, end = checked_range(start, end)
    after = Position.decode(cursor) if cursor is not None else None
    return rendered_response(
        await answer(lambda: readings_page(reader, sensor_id, start, end, limit, after))
    )


def readings_page(
    reader: LakeReader,
    sensor_id: str,
    start: datetime,
    end: datetime,
    limit: int,
    after: Position | None,
) -> bytes:
    """The rendered page of `sensor_readings`, also served below FastAPI by `hot_routes`."""
    sensor = known_sensor(reader, sensor_id)
    history = History(reader, str(sensor["sensor_type"]), sensor_id)
    page = history.page(start, end, limit, after)
    fields = {
        "sensor_id": sensor_id,
        "sensor_type": sensor["sensor_type"],
        "count": len(page.items),
        "next_cursor": page.position.encode() if page.position else None,
    }
    return with_items(fields, page.items)


@router.get("/{sensor_id:path}", include_in_schema=False)
def sensor_with_path_characters(sensor_id: str) -> Any:
    """A sensor id that smuggled in a '/' (encoded or not) is bad input, not a missing page."""
    raise reject_path_characters(sensor_id.removesuffix("/readings"))
