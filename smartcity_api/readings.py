"""A sensor's reading history: the clean tables where built, the landing beyond them.

A date's `clean_<type>` partition holds the sensor's readings up to some `seq` (its
frontier): the date may have been built while it was still going on. Readings after the
frontier come from the landing files of the hours from the frontier's hour on. Each
sensor's `seq` rises by one per reading, so "clean up to the frontier, landing after it"
covers every reading once, and keeps out what the batch layer rejected. Duplicates in the
landing (a producer retry) are dropped by `seq`, lowest Kafka offset first, as the clean
tables do.

Pages are ordered by (event_time, seq); the cursor is that pair of the last item, so a page
boundary stays put while new readings land.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import orjson
import pyarrow as pa
import pyarrow.dataset as ds

from smartcity_api.catalog import clean_table
from smartcity_api.errors import invalid
from smartcity_api.models import KAFKA_COLUMNS
from smartcity_api.store import LakeReader
from smartcity_stream.landing import EVENT_TIME, landing_schema

HOUR = timedelta(hours=1)


@dataclass(frozen=True)
class Position:
    """Where a page ended: the (event_time, seq) of its last reading."""

    event_time_ms: int
    seq: int

    def encode(self) -> str:
        raw = orjson.dumps([self.event_time_ms, self.seq])
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, cursor: str) -> Position:
        try:
            padded = cursor + "=" * (-len(cursor) % 4)
            event_time_ms, seq = orjson.loads(base64.urlsafe_b64decode(padded.encode()))
            if isinstance(event_time_ms, int) and isinstance(seq, int):
                return cls(event_time_ms, seq)
        except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError):
            pass
        raise invalid("cursor", "not a cursor returned by this API (pass next_cursor as is)")


def reading_columns(sensor_type: str) -> list[str]:
    return [f.name for f in landing_schema(sensor_type) if f.name not in KAFKA_COLUMNS]


def _timestamp(value: datetime) -> pa.Scalar:
    return pa.scalar(value.astimezone(UTC), EVENT_TIME)


def between(start: datetime, end: datetime) -> ds.Expression:
    """Rows whose `event_time` lies in [start, end)."""
    return (ds.field("event_time") >= _timestamp(start)) & (
        ds.field("event_time") < _timestamp(end)
    )


def event_dates(start: datetime, end: datetime) -> list[date]:
    first, last = start.astimezone(UTC).date(), (end - timedelta(milliseconds=1)).astimezone(UTC)
    return [first + timedelta(days=n) for n in range((last.date() - first).days + 1)]


def event_hours(day: date, start: datetime, end: datetime) -> range:
    """Event hours of `day` that overlap [start, end)."""
    midnight = datetime(day.year, day.month, day.day, tzinfo=UTC)
    first = max(0, int((start - midnight) // HOUR))
    last = min(23, int((end - timedelta(milliseconds=1) - midnight) // HOUR))
    return range(first, last + 1)


class History:
    """Reads one sensor's readings over a time range from clean tables and the landing."""

    def __init__(self, reader: LakeReader, sensor_type: str, sensor_id: str) -> None:
        self.reader = reader
        self.sensor_type = sensor_type
        self.sensor_id = sensor_id
        self.columns = reading_columns(sensor_type)

    def frontier(self, day: date) -> tuple[datetime, int] | None:
        """(event_time, seq) of this sensor's last reading in the day's clean table."""
        frontiers = self.reader.derived(
            ("frontiers", self.sensor_type, day), lambda: self._frontiers(day)
        )
        return frontiers.get(self.sensor_id)

    def _frontiers(self, day: date) -> dict[str, tuple[datetime, int]]:
        """Every sensor's frontier in one scan of two columns (shared by all requests)."""
        file = self.reader.partition(clean_table(self.sensor_type), day)
        if file is None:
            return {}
        table = self.reader.scan([file], ["sensor_id", "event_time", "seq"])
        last = table.group_by("sensor_id").aggregate([("seq", "max"), ("event_time", "max")])
        return {
            row["sensor_id"]: (row["event_time_max"], row["seq_max"]) for row in last.to_pylist()
        }

    def day(self, day: date, start: datetime, end: datetime, after: Position | None) -> pa.Table:
        """The sensor's readings of one date in [start, end) after `after`, deduplicated."""
        where = (ds.field("sensor_id") == self.sensor_id) & between(start, end)
        if after is not None:
            when = pa.scalar(after.event_time_ms, pa.int64()).cast(EVENT_TIME)
            where &= (ds.field("event_time") > when) | (
                (ds.field("event_time") == when) & (ds.field("seq") > after.seq)
            )
        parts = []
        landing_from, landing_where = start, where
        clean = self.reader.partition(clean_table(self.sensor_type), day)
        if clean is not None:
            parts.append(self.reader.scan([clean], self.columns, where))
            frontier = self.frontier(day)
            if frontier is not None:
                landing_from = max(start, frontier[0].replace(minute=0, second=0, microsecond=0))
                landing_where = where & (ds.field("seq") > frontier[1])
        files = self.reader.landing_files(
            self.sensor_type, day, event_hours(day, landing_from, end)
        )
        landed = self.reader.scan(
            files, [*self.columns, "kafka_offset"], landing_where, landing_schema(self.sensor_type)
        )
        landed = landed.sort_by("kafka_offset").drop_columns(["kafka_offset"])
        parts.append(landed.cast(parts[0].schema) if parts else landed)
        return _first_per_seq(pa.concat_tables(parts))

    def page(
        self, start: datetime, end: datetime, limit: int, after: Position | None
    ) -> tuple[pa.Table, Position | None]:
        """Up to `limit` readings in (event_time, seq) order and the cursor after them."""
        if after is not None:
            start = max(start, datetime.fromtimestamp(after.event_time_ms / 1000, UTC))
        found: list[pa.Table] = []
        rows = 0
        for day in event_dates(start, end) if start < end else []:
            table = self.day(day, start, end, after)
            found.append(table)
            rows += table.num_rows
            if rows > limit:
                break
        if not found:
            return self.empty(), None
        table = pa.concat_tables(found).sort_by([("event_time", "ascending"), ("seq", "ascending")])
        if table.num_rows <= limit:
            return table, None
        table = table.slice(0, limit)
        last = table.slice(limit - 1).to_pylist()[0]
        return table, Position(int(last["event_time"].timestamp() * 1000), last["seq"])

    def empty(self) -> pa.Table:
        schema = landing_schema(self.sensor_type)
        return pa.schema([schema.field(name) for name in self.columns]).empty_table()

    def count(self) -> int:
        """Readings stored for the sensor over every date, without duplicates."""
        days = set(self.reader.partitions(clean_table(self.sensor_type)))
        days |= set(self.reader.landing_dates(self.sensor_type))
        total = 0
        for day in sorted(days):
            midnight = datetime.fromisoformat(day).replace(tzinfo=UTC)
            total += self.day(
                midnight.date(), midnight, midnight + timedelta(days=1), None
            ).num_rows
        return total


def _first_per_seq(table: pa.Table) -> pa.Table:
    """The first row of each `seq` (clean rows come first, then landing by offset)."""
    if table.num_rows == 0:
        return table
    numbered = table.append_column("__row", pa.array(range(table.num_rows), pa.int64()))
    firsts = numbered.group_by("seq", use_threads=False).aggregate([("__row", "min")])
    return table.take(firsts.column("__row_min"))
