"""Anomalies: the batch layer's `anomaly_events` where built, the stream's landing beyond."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, datetime
from typing import Annotated, Any, Literal

import orjson
import pyarrow as pa
import pyarrow.dataset as ds
from fastapi import APIRouter, Query

from smartcity_api.catalog import ANOMALY_EVENTS
from smartcity_api.deps import ReaderDep
from smartcity_api.models import AnomalyList
from smartcity_api.params import (
    DEFAULT_LIMIT,
    DistrictFilter,
    End,
    SensorIdFilter,
    Start,
    checked_range,
    limit_param,
)
from smartcity_api.readings import between, event_dates, event_hours
from smartcity_api.responses import error_responses, json_response
from smartcity_api.store import LakeReader, Partition, StoredFile
from smartcity_stream.anomalies import ANOMALY_SCHEMA

router = APIRouter(prefix="/anomalies", tags=["anomalies"])
Source = Literal["stream", "batch", "all"]
SOURCES: dict[str, set[str]] = {
    "stream": {"stream", "both"},
    "batch": {"batch", "both"},
    "all": {"stream", "batch", "both"},
}
STREAM_LANDING = "anomalies"
FILE_READERS = 8
"""Landing files read at once on a miss: each is a few small requests to the store."""


@dataclass(frozen=True)
class Events:
    """A built date's `anomaly_events` rows and every `anomaly_id` they hold, read once per
    partition version (see `LakeReader.kept`): a request filters them in memory."""

    table: pa.Table
    ids: frozenset[str]

    @property
    def nbytes(self) -> int:
        return self.table.nbytes + 64 * len(self.ids)


def _events(reader: LakeReader, partition: Partition) -> Events:
    def read() -> Events:
        table = reader.scan(partition, None)
        return Events(table, frozenset(table.column("anomaly_id").to_pylist()))

    return reader.kept(("anomaly events", partition), read)


def _landed(reader: LakeReader, file: StoredFile) -> pa.Table:
    """A landing file of the stream's anomalies; immutable, so read once."""
    return reader.kept(
        ("landed anomalies", file),
        lambda: reader.scan([file], ANOMALY_SCHEMA.names, None, ANOMALY_SCHEMA),
    )


def _one_day(
    reader: LakeReader,
    day: date,
    start: datetime,
    end: datetime,
    where: ds.Expression,
    source: Source,
) -> list[dict[str, Any]]:
    """The anomaly events of a built date, plus stream anomalies it does not hold yet."""
    in_range = where & between(start, end)
    rows: list[dict[str, Any]] = []
    known: set[str] = set()
    partition = reader.partition(ANOMALY_EVENTS, day)
    if partition is not None:
        events = _events(reader, partition)
        known = set(events.ids)
        rows = list(
            {
                r["anomaly_id"]: r
                for r in events.table.filter(in_range).to_pylist()
                if r.get("source") in SOURCES[source]
            }.values()
        )
    if source == "batch":
        return rows
    files = reader.landing_files(STREAM_LANDING, day, event_hours(day, start, end))
    sensors = reader.sensors()
    with ThreadPoolExecutor(FILE_READERS) as pool:
        landed = list(pool.map(lambda file: _landed(reader, file), files))
    for table in landed:
        for row in table.filter(in_range).to_pylist():
            if row["anomaly_id"] not in known:
                known.add(row["anomaly_id"])
                district = sensors.get(row["sensor_id"], {}).get("district")
                rows.append({**row, "district": district, "source": "stream"})
    return rows


@router.get(
    "",
    response_model=AnomalyList,
    responses=error_responses(),
    summary="Anomalies in a time range",
)
def anomalies(
    reader: ReaderDep,
    start: Start,
    end: End,
    kind: Annotated[
        str | None,
        Query(description="Only this kind.", pattern=r"^[a-z_]{1,64}$", examples=["high_volume"]),
    ] = None,
    severity: Annotated[
        str | None,
        Query(description="Only this severity.", pattern=r"^[a-z_]{1,32}$", examples=["high"]),
    ] = None,
    sensor_id: SensorIdFilter = None,
    district: DistrictFilter = None,
    source: Annotated[
        Source,
        Query(
            description="`stream` (detected live), `batch` (found by the batch layer) or "
            "`all`; an anomaly both found has source `both`.",
            examples=["all"],
        ),
    ] = "all",
    limit: Annotated[int, limit_param()] = DEFAULT_LIMIT,
) -> Any:
    """Ordered by event time."""
    start, end = checked_range(start, end)
    where = ds.scalar(True)
    for column, value in (("kind", kind), ("severity", severity), ("sensor_id", sensor_id)):
        if value is not None:
            where &= ds.field(column) == value
    rows = [
        row
        for day in event_dates(start, end)
        for row in _one_day(reader, day, start, end, where, source)
        if district is None or row.get("district") == district
    ]
    rows.sort(key=lambda row: (row["event_time"], row["anomaly_id"]))
    for row in rows[:limit]:
        row["values"] = orjson.loads(row["values"]) if row.get("values") else None
    return json_response(
        {"items": rows[:limit], "count": min(len(rows), limit), "truncated": len(rows) > limit}
    )
