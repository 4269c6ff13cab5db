"""Daily aggregates: one date partition of `daily_<type>_aggregates`, filtered."""

from __future__ import annotations

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
from smartcity_api.responses import error_responses, json_response

router = APIRouter(prefix="/aggregates", tags=["aggregates"])


@router.get(
    "/daily",
    response_model=AggregateList,
    responses=error_responses(404),
    summary="Daily or hourly aggregates of one date",
)
def daily_aggregates(
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
    if sensor_id is not None:
        sensor = known_sensor(reader, sensor_id)
        if sensor["sensor_type"] != sensor_type:
            raise invalid(
                "sensor_id", f"{sensor_id} is a {sensor['sensor_type']} sensor, not {sensor_type}"
            )
    file = reader.partition(table, date)
    if file is None:
        raise not_found(f"date: {table} has no partition {date} (not built yet)")
    where = ds.field("granularity") == granularity
    if district is not None:
        where &= ds.field("district") == district
    if sensor_id is not None:
        where &= ds.field("sensor_id") == sensor_id
    rows = reader.scan([file], columns=None, where=where)
    rows = rows.sort_by(
        [
            ("level", "ascending"),
            ("sensor_id", "ascending"),
            ("district", "ascending"),
            ("period_start", "ascending"),
        ]
    ).to_pylist()
    return json_response(
        {
            "table": table,
            "date": date.isoformat(),
            "granularity": granularity,
            "items": rows,
            "count": len(rows),
        }
    )
