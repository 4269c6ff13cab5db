"""Daily aggregates: one date partition of `daily_<type>_aggregates`, filtered."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import pyarrow.dataset as ds
from fastapi import APIRouter, Query

from smartcity_api.catalog import aggregates_table
from smartcity_api.deps import ReaderDep
from smartcity_api.errors import invalid, not_found
from smartcity_api.models import AggregateList
from smartcity_api.params import (
    DateRequired,
    DistrictFilter,
    SensorIdFilter,
    SensorTypeRequired,
    known_sensor,
)
from smartcity_api.responses import (
    error_responses,
    render_rows,
    rendered_response,
    with_items,
)
from smartcity_api.serving import answer
from smartcity_api.store import LakeReader, Partition

router = APIRouter(prefix="/aggregates", tags=["aggregates"])
ROW_ORDER = [
    ("level", "ascending"),
    ("sensor_id", "ascending"),
    ("district", "ascending"),
    ("period_start", "ascending"),
]


@router.get(
    "/daily",
    response_model=AggregateList,
    responses=error_responses(404),
    summary="Daily or hourly aggregates of one date",
)
async def daily_aggregates(
    reader: ReaderDep,
    date: DateRequired,
    sensor_type: SensorTypeRequired,
    district: DistrictFilter = None,
    sensor_id: SensorIdFilter = None,
    granularity: Annotated[
        Literal["day", "hour"],
        Query(description="One row per day or per hour of the date.", examples=["day"]),
    ] = "day",
) -> Any:
    """Sensor-level and district-level rows; `sensor_id` keeps that sensor's rows,
    `district` the rows of that district (both levels)."""
    table = aggregates_table(sensor_type)

    def rows() -> bytes:
        if sensor_id is not None:
            sensor = known_sensor(reader, sensor_id)
            if sensor["sensor_type"] != sensor_type:
                raise invalid(
                    "sensor_id",
                    f"{sensor_id} is a {sensor['sensor_type']} sensor, not {sensor_type}",
                )
        partition = reader.partition(table, date)
        if partition is None:
            raise not_found(f"date: {table} has no partition {date} (not built yet)")
        key = ("aggregates", partition, granularity, district, sensor_id)
        return reader.kept(key, lambda: _render(reader, partition, query))

    query = AggregatesQuery(table, date, granularity, district, sensor_id)
    return rendered_response(await answer(rows))


@dataclass(frozen=True)
class AggregatesQuery:
    table: str
    date: datetime.date
    granularity: str
    district: str | None
    sensor_id: str | None


def _render(reader: LakeReader, partition: Partition, query: AggregatesQuery) -> bytes:
    """The matching rows of the partition, sorted, as the response's JSON."""
    where = ds.field("granularity") == query.granularity
    if query.district is not None:
        where &= ds.field("district") == query.district
    if query.sensor_id is not None:
        where &= ds.field("sensor_id") == query.sensor_id
    rows = reader.scan(partition, columns=None, where=where).sort_by(ROW_ORDER)
    fields = {
        "table": query.table,
        "date": query.date.isoformat(),
        "granularity": query.granularity,
        "count": rows.num_rows,
    }
    return with_items(fields, render_rows(rows))
