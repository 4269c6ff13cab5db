"""Query and path parameters shared by the routers, each documented with an example."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Annotated

from fastapi import Path, Query
from pydantic import AwareDatetime

from smartcity.contract import reading_schema
from smartcity.settings import SensorType
from smartcity_api.errors import ApiError, invalid, not_found
from smartcity_api.store import LakeReader

SENSOR_ID_PATTERN: str = reading_schema()["properties"]["sensor_id"]["pattern"]
"""The contract's pattern: anything else (a '/', '..', a space) is a 422, not a lookup."""

MAX_LIMIT = 10_000
DEFAULT_LIMIT = 1000
MAX_CURSOR = 200
MAX_RANGE = timedelta(days=31)
EXAMPLE_SENSOR = "TRAFFIC_0001"
EXAMPLE_DATE = "2026-11-27"

SensorIdPath = Annotated[
    str,
    Path(
        description="A sensor id of the registry, as in the wire contract.",
        pattern=SENSOR_ID_PATTERN,
        examples=[EXAMPLE_SENSOR],
    ),
]
SensorIdFilter = Annotated[
    str | None,
    Query(
        description="Only this sensor.",
        pattern=SENSOR_ID_PATTERN,
        examples=[EXAMPLE_SENSOR],
    ),
]
SensorTypeFilter = Annotated[
    SensorType | None, Query(description="Only sensors of this type.", examples=["traffic"])
]
SensorTypeRequired = Annotated[
    SensorType, Query(description="The sensor type of the table.", examples=["traffic"])
]
DistrictFilter = Annotated[
    str | None,
    Query(
        description="Only sensors of this district (as in the registry).",
        min_length=1,
        max_length=100,
        examples=["Mitte"],
    ),
]
DateRequired = Annotated[
    date, Query(description="The event date (UTC) of the partition.", examples=[EXAMPLE_DATE])
]
Start = Annotated[
    AwareDatetime,
    Query(
        description="Start of the time range (inclusive), RFC 3339 with a time zone.",
        examples=["2026-11-27T00:00:00Z"],
    ),
]
End = Annotated[
    AwareDatetime,
    Query(
        description="End of the time range (exclusive), RFC 3339 with a time zone; at most "
        "31 days after `start`.",
        examples=["2026-11-27T01:00:00Z"],
    ),
]


def limit_param(maximum: int = MAX_LIMIT) -> object:
    return Query(
        ge=1,
        le=maximum,
        description=f"At most this many items (1..{maximum}).",
        examples=[100],
    )


def checked_range(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """A forward range of at most `MAX_RANGE`, else a 422 naming `end`."""
    if end <= start:
        raise invalid("end", f"must be after start ({start.isoformat()}), got {end.isoformat()}")
    if end - start > MAX_RANGE:
        raise invalid("end", f"the range may span at most {MAX_RANGE.days} days")
    return start, end


def known_sensor(reader: LakeReader, sensor_id: str) -> dict[str, object]:
    """The registry row of `sensor_id`, or a 404."""
    sensor = reader.sensors().get(sensor_id)
    if sensor is None:
        raise not_found(f"sensor_id: no sensor {sensor_id!r} in the registry")
    return sensor


def reject_path_characters(sensor_id: str) -> ApiError:
    """For URLs whose sensor id segment smuggled in a '/' (or more segments)."""
    return invalid("sensor_id", f"must match {SENSOR_ID_PATTERN}, got {sensor_id!r}")
