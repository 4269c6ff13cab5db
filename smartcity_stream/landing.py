"""Raw landing: valid readings to Parquet, one file per event hour and Kafka partition.

The landing columns are derived from the contract, plus the Kafka partition and offset of
each row, so the batch layer can prove what it has and deduplicate a replay.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from smartcity.contract import reading_schema
from smartcity.lake import Lake
from smartcity.layout import anomaly_landing_key, landing_key
from smartcity_stream.anomalies import anomaly_table

EVENT_TIME = pa.timestamp("ms", tz="UTC")
_ARROW_TYPES = {"integer": pa.int64(), "number": pa.float64(), "string": pa.string()}
_COMMON = ("sensor_id", "sensor_type", "event_time", "seq", "interval_s")
_HOUR_MS = 3_600_000
_MS_TEXT = len("2026-11-27T08:15:00.000Z")
"""The longest event time the lake's precision holds as it is: more fractional digits than
three (the contract takes up to nine) are cut before the parse, which takes no more."""


def _arrow_type(spec: dict[str, Any]) -> pa.DataType:
    if "enum" in spec:
        return pa.string()
    kinds = spec["type"] if isinstance(spec["type"], list) else [spec["type"]]
    return _ARROW_TYPES[next(kind for kind in kinds if kind != "null")]


@cache
def landing_schema(sensor_type: str) -> pa.Schema:
    """Contract fields of `sensor_type` in a fixed order, then the Kafka coordinates."""
    contract = reading_schema()
    branch = next(
        b["then"]["properties"]
        for b in contract["allOf"]
        if b["if"]["properties"]["sensor_type"]["const"] == sensor_type
    )
    fields = [
        pa.field("sensor_id", pa.string(), nullable=False),
        pa.field("sensor_type", pa.string(), nullable=False),
        pa.field("event_time", EVENT_TIME, nullable=False),
        pa.field("seq", pa.int64(), nullable=False),
        pa.field("interval_s", pa.float64()),
    ]
    fields += [
        pa.field(name, _arrow_type(spec)) for name, spec in branch.items() if name not in _COMMON
    ]
    fields += [
        pa.field("kafka_partition", pa.int32(), nullable=False),
        pa.field("kafka_offset", pa.int64(), nullable=False),
    ]
    return pa.schema(fields)


@dataclass(frozen=True)
class LandingFile:
    """One file of the landing: where it goes and the rows it holds."""

    key: str
    day: str
    hour: int
    partition: int
    table: pa.Table


@cache
def _wire_struct(sensor_type: str) -> pa.StructType:
    """The landing fields as a struct, event time still the string the wire carries."""
    return pa.struct(
        [
            pa.field(field.name, pa.string(), nullable=False)
            if field.name == "event_time"
            else field
            for field in landing_schema(sensor_type)
        ]
    )


def rows_to_table(sensor_type: str, rows: list[dict[str, Any]]) -> pa.Table:
    """Readings (already valid) with `kafka_partition`/`kafka_offset` into the landing schema.

    Converted in C++ as one struct array (each dict's fields looked up by name, other keys
    ignored), then the event times parsed: no Python loop per field or per row.
    """
    table = pa.Table.from_struct_array(pa.array(rows, type=_wire_struct(sensor_type)))
    field = landing_schema(sensor_type).field("event_time")
    index = table.schema.get_field_index("event_time")
    return table.set_column(index, field, parse_event_times(table.column(index)))


def parse_event_times(texts: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    """Contract event times (RFC 3339, `Z`, 0 to 9 fractional digits) as `EVENT_TIME`.

    Arrow's parse takes at most the target unit's digits, so digits past the millisecond
    are cut from the text first: truncation (a floor, whatever the year), never a rounding
    that could carry a reading into the next second, hour or date. Only a batch that holds
    such a time pays for the regex; a year outside 1677-2262 (a bad clock, for the clock
    guard to refuse) still parses, which a detour through nanoseconds would not.
    """
    if len(texts) and pc.max(pc.binary_length(texts)).as_py() > _MS_TEXT:
        texts = pc.replace_substring_regex(texts, pattern=r"(\.\d{3})\d+", replacement=r"\1")
    return pc.cast(texts, EVENT_TIME)


def split_by_hour(table: pa.Table) -> Iterable[tuple[str, int, pa.Table]]:
    """(date, hour, rows) groups of a table by event time, in offset order."""
    hours = table.column("event_time").to_numpy().view(np.int64) // _HOUR_MS
    distinct = np.unique(hours).tolist()
    for hour in distinct:
        start = datetime.fromtimestamp(hour * _HOUR_MS / 1000, UTC)
        rows = table if len(distinct) == 1 else table.filter(pa.array(hours == hour))
        yield start.strftime("%Y-%m-%d"), start.hour, rows


def landing_files(sensor_type: str, partition: int, table: pa.Table) -> list[LandingFile]:
    """The files a segment of one partition becomes: keys from the rows' own offsets."""
    files = []
    for day, hour, rows in split_by_hour(table):
        offsets = rows.column("kafka_offset")
        first, last = pc.min(offsets).as_py(), pc.max(offsets).as_py()
        key = landing_key(sensor_type, day, hour, partition, first, last)
        files.append(LandingFile(key, day, hour, partition, rows))
    return files


def write_files(lake: Lake, files: Iterable[LandingFile]) -> int:
    """Write every file; returns the bytes written."""
    return sum(lake.write_parquet(file.key, file.table) for file in files)


def anomaly_files(
    sensor_type: str, partition: int, offsets: tuple[int, int], anomalies: list[dict[str, Any]]
) -> list[LandingFile]:
    """The segment's anomalies, named by the segment's source offsets: a replay overwrites."""
    if not anomalies:
        return []
    files = []
    for day, hour, rows in split_by_hour(anomaly_table(anomalies)):
        key = anomaly_landing_key(sensor_type, day, hour, partition, *offsets)
        files.append(LandingFile(key, day, hour, partition, rows))
    return files
