"""A sensor's reading history: the clean tables where built, the landing beyond them.

A date's `clean_<type>` partition holds the sensor's readings up to some `seq` (its
frontier): the date may have been built while it was still going on. Readings after the
frontier come from the landing files of the hours from the frontier's hour on. Each
sensor's `seq` rises by one per reading, so "clean up to the frontier, landing after it"
covers every reading once, and keeps out what the batch layer rejected. Duplicates in the
landing (a producer retry) are dropped by `seq`, lowest Kafka offset first, as the clean
tables do.

History is served from hour blocks: one sensor's readings of one event hour, merged as
above, ordered by (event_time, seq) and rendered to JSON once. A block is kept (see
`LakeReader.kept`) under the identity of the files it came from, so a page is a binary
search and a join of ready bytes until a file of that hour changes. The files behind it are
kept too, read once per file version and sorted by sensor.

Pages are ordered by (event_time, seq); the cursor is that pair of the last item, so a page
boundary stays put while new readings land.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import cache
from typing import ClassVar

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from smartcity_api.catalog import clean_table
from smartcity_api.errors import invalid
from smartcity_api.models import KAFKA_COLUMNS
from smartcity_api.responses import render_rows
from smartcity_api.store import LakeReader, Partition, StoredFile
from smartcity_stream.landing import EVENT_TIME, landing_schema

HOUR = timedelta(hours=1)
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
ORDER = ["event_time", "seq"]


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


@cache
def reading_columns(sensor_type: str) -> tuple[str, ...]:
    return tuple(f.name for f in landing_schema(sensor_type) if f.name not in KAFKA_COLUMNS)


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


@dataclass(frozen=True)
class SensorRows:
    """A table sorted by sensor, then by `order`, and where each sensor's rows are."""

    table: pa.Table
    ranges: dict[str, tuple[int, int]]

    @classmethod
    def of(cls, table: pa.Table, order: list[str]) -> SensorRows:
        table = table.sort_by([("sensor_id", "ascending"), *((c, "ascending") for c in order)])
        runs = pc.run_end_encode(table.column("sensor_id").combine_chunks())
        ends = runs.run_ends.to_pylist()
        starts = [0, *ends[:-1]]
        ranges = dict(zip(runs.values.to_pylist(), zip(starts, ends, strict=True), strict=True))
        return cls(table.combine_chunks(), ranges)

    @property
    def nbytes(self) -> int:
        return self.table.nbytes

    def rows(self, sensor_id: str) -> pa.Table:
        first, end = self.ranges.get(sensor_id, (0, 0))
        return self.table.slice(first, end - first)


@dataclass(frozen=True)
class Block:
    """One sensor's readings of one event hour, in (event_time, seq) order, as JSON."""

    times_ms: np.ndarray
    seqs: np.ndarray
    items: list[bytes]

    @property
    def nbytes(self) -> int:
        return self.times_ms.nbytes + self.seqs.nbytes + sum(map(len, self.items)) + 64

    def position(self, index: int) -> Position:
        return Position(int(self.times_ms[index]), int(self.seqs[index]))

    def bounds(self, start_ms: int, end_ms: int, after: Position | None) -> tuple[int, int]:
        """The index range of the items in [start, end) that come after `after`."""
        first = int(np.searchsorted(self.times_ms, start_ms, "left"))
        end = int(np.searchsorted(self.times_ms, end_ms, "left"))
        if after is not None:
            same = int(np.searchsorted(self.times_ms, after.event_time_ms, "left"))
            later = int(np.searchsorted(self.times_ms, after.event_time_ms, "right"))
            past = same + int(np.searchsorted(self.seqs[same:later], after.seq, "right"))
            first = max(first, past if same < later else later)
        return first, max(first, end)


@dataclass
class Page:
    """Up to `limit` rendered readings and the position after the last one."""

    items: list[bytes]
    position: Position | None


def _ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


def _render(table: pa.Table) -> Block:
    table = table.sort_by([("event_time", "ascending"), ("seq", "ascending")])
    times = table.column("event_time").cast(pa.int64()).to_numpy()
    seqs = table.column("seq").to_numpy()
    return Block(times, seqs, render_rows(table))


class History:
    """Reads one sensor's readings over a time range from clean tables and the landing."""

    def __init__(self, reader: LakeReader, sensor_type: str, sensor_id: str) -> None:
        self.reader = reader
        self.sensor_type = sensor_type
        self.sensor_id = sensor_id
        self.columns = list(reading_columns(sensor_type))
        self.landed_columns = [*self.columns, "kafka_offset"]

    def _clean(self, partition: Partition) -> pa.Table:
        """The sensor's rows of a clean partition in (event_time, seq) order. A small
        partition is read whole once and shared by all its sensors; a large one (a day at a
        1 s interval) is read a sensor at a time, its row groups pruned by their statistics,
        so memory holds only the sensors asked for."""
        if sum(f.size for f in partition) <= self.reader.whole_read_bytes:
            whole = self.reader.kept(
                ("clean rows", partition),
                lambda: SensorRows.of(self.reader.scan(partition, self.columns), ORDER),
            )
            return whole.rows(self.sensor_id)
        return self.reader.kept(
            ("clean rows", partition, self.sensor_id),
            lambda: self.reader.scan(
                partition, self.columns, ds.field("sensor_id") == self.sensor_id
            ).sort_by([(c, "ascending") for c in ORDER]),
        )

    def _landed(self, file: StoredFile) -> SensorRows:
        def read() -> SensorRows:
            schema = landing_schema(self.sensor_type)
            table = self.reader.scan([file], self.landed_columns, None, schema)
            return SensorRows.of(table, ["kafka_offset"])

        return self.reader.kept(("landed rows", file), read)

    def block(self, day: date, hour: int) -> Block:
        """The sensor's readings of one event hour (see the module's docstring)."""
        clean = self.reader.partition(clean_table(self.sensor_type), day)
        files = self.reader.landing_files(self.sensor_type, day, range(hour, hour + 1))
        key = ("block", self.sensor_id, day, hour, clean, files)
        return self.reader.kept(key, lambda: self._merge(day, hour, clean, files))

    def _merge(
        self, day: date, hour: int, clean: Partition | None, files: tuple[StoredFile, ...]
    ) -> Block:
        hour_ms = _ms(datetime(day.year, day.month, day.day, tzinfo=UTC) + hour * HOUR)
        parts, frontier = [], None
        if clean is not None:
            rows = self._clean(clean)
            if rows.num_rows:
                times = rows.column("event_time").cast(pa.int64()).to_numpy()
                first, end = np.searchsorted(times, [hour_ms, hour_ms + HOUR_MS], "left")
                parts.append(rows.slice(int(first), int(end - first)))
                if int(times[-1]) >= hour_ms + HOUR_MS:
                    return _render(parts[0])  # the frontier lies beyond this hour
                frontier = pc.max(rows.column("seq"))
        landed = [self._landed(f).rows(self.sensor_id) for f in files]
        if landed:
            table = pa.concat_tables(landed).sort_by("kafka_offset").drop_columns(["kafka_offset"])
            if frontier is not None:
                table = table.filter(pc.greater(table.column("seq"), frontier))
            parts.append(table.cast(parts[0].schema) if parts else table)
        if not parts:
            return _render(self.empty())
        return _render(_first_per_seq(pa.concat_tables(parts)))

    def empty(self) -> pa.Table:
        schema = landing_schema(self.sensor_type)
        return pa.schema([schema.field(name) for name in self.columns]).empty_table()

    def _spans(
        self, start: datetime, end: datetime, after: Position | None
    ) -> Iterator[tuple[Block, int, int]]:
        """Each hour block of the range with the index range of its items in the page."""
        start_ms, end_ms = _ms(start), _ms(end)
        if after is not None:
            start = max(start, datetime.fromtimestamp(after.event_time_ms / 1000, UTC))
        for day in event_dates(start, end) if start < end else []:
            for hour in event_hours(day, start, end):
                block = self.block(day, hour)
                yield (block, *block.bounds(start_ms, end_ms, after))

    def page(self, start: datetime, end: datetime, limit: int, after: Position | None) -> Page:
        """Up to `limit` readings in (event_time, seq) order and the cursor after them (None
        when nothing follows)."""
        items: list[bytes] = []
        last: tuple[Block, int] | None = None
        for block, first, stop in self._spans(start, end, after):
            if first == stop:
                continue
            if len(items) == limit and last is not None:
                return Page(items, last[0].position(last[1]))
            taken = block.items[first : min(stop, first + limit - len(items))]
            items.extend(taken)
            last = (block, first + len(taken) - 1)
            if first + len(taken) < stop:
                return Page(items, block.position(last[1]))
        return Page(items, None)

    def count(self) -> int:
        """Readings stored for the sensor over every date, without duplicates: what the
        hour blocks of every date would hold, summed, without building them. A built
        date's clean rows come from its `CleanIndex`; only the landing beyond the
        sensor's frontier is read (as a page of those hours would read it)."""
        days = set(self.reader.partitions(clean_table(self.sensor_type)))
        days |= set(self.reader.landing_dates(self.sensor_type))
        return sum(self._count_day(date.fromisoformat(day)) for day in days)

    def _count_day(self, day: date) -> int:
        clean = self.reader.partition(clean_table(self.sensor_type), day)
        span = self._clean_index(clean, day).spans.get(self.sensor_id) if clean else None
        midnight_ms = _ms(datetime(day.year, day.month, day.day, tzinfo=UTC))
        count = span.count if span else 0
        for hour in range(24):
            if span and span.last_ms >= midnight_ms + (hour + 1) * HOUR_MS:
                continue  # the clean rows reach past this hour: `_merge` reads no landing
            files = self.reader.landing_files(self.sensor_type, day, range(hour, hour + 1))
            if span:
                files = tuple(f for f in files if self._highest_seq(f) > span.frontier)
            seqs = [self._landed(f).rows(self.sensor_id).column("seq") for f in files]
            if seqs:
                landed = pa.chunked_array(seqs, pa.int64())
                if span:
                    landed = landed.filter(pc.greater(landed, span.frontier))
                count += len(pc.unique(landed))
        return count

    def _highest_seq(self, file: StoredFile) -> float:
        """The highest `seq` of a landing file from its footer's statistics (infinity when
        a row group has none): a file wholly at or below a frontier is not read at all."""

        def read() -> Footer:
            with self.reader.lake.filesystem.open_input_file(file.path) as source:
                metadata = pq.ParquetFile(source).metadata
            column = metadata.schema.to_arrow_schema().get_field_index("seq")
            highest = -math.inf
            for group in range(metadata.num_row_groups):
                stats = metadata.row_group(group).column(column).statistics
                if stats is None or not stats.has_min_max:
                    return Footer(math.inf)
                highest = max(highest, stats.max)
            return Footer(highest)

        return self.reader.kept(("footer", file), read).highest_seq

    def _clean_index(self, partition: Partition, day: date) -> CleanIndex:
        return self.reader.kept(
            ("clean index", partition, day),
            lambda: CleanIndex.of(self.reader.scan(partition, INDEX_COLUMNS), day),
        )


INDEX_COLUMNS = ["sensor_id", "seq", "event_time"]


@dataclass(frozen=True)
class Footer:
    """What the count needs of a landing file's footer."""

    highest_seq: float
    nbytes: ClassVar[int] = 64


@dataclass(frozen=True)
class SensorSpan:
    """One sensor's rows in a clean partition: how many lie in the date's hours, the
    highest `seq` (its frontier) and the latest event time (where the landing takes over)."""

    count: int
    frontier: int
    last_ms: int


@dataclass(frozen=True)
class CleanIndex:
    """Each sensor's `SensorSpan` in one clean partition: three columns read once per
    partition version, shared by every sensor's record count."""

    spans: dict[str, SensorSpan]

    @property
    def nbytes(self) -> int:
        return 128 * len(self.spans) + 64

    @classmethod
    def of(cls, table: pa.Table, day: date) -> CleanIndex:
        midnight_ms = _ms(datetime(day.year, day.month, day.day, tzinfo=UTC))
        times = table.column("event_time").cast(pa.timestamp("ms", "UTC")).cast(pa.int64())
        in_day = pc.and_(pc.greater_equal(times, midnight_ms), pc.less(times, midnight_ms + DAY_MS))
        columns = {
            "sensor_id": table.column("sensor_id"),
            "seq": table.column("seq"),
            "time_ms": times,
            "in_day": pc.cast(in_day, pa.int64()),
        }
        grouped = (
            pa.table(columns)
            .group_by("sensor_id", use_threads=False)
            .aggregate([("in_day", "sum"), ("seq", "max"), ("time_ms", "max")])
        )
        rows = zip(
            *(
                grouped.column(name).to_pylist()
                for name in ("sensor_id", "in_day_sum", "seq_max", "time_ms_max")
            ),
            strict=True,
        )
        return cls({sensor: SensorSpan(n, top, last) for sensor, n, top, last in rows})


def _first_per_seq(table: pa.Table) -> pa.Table:
    """The first row of each `seq` (clean rows come first, then landing by offset)."""
    if table.num_rows == 0:
        return table
    numbered = table.append_column("__row", pa.array(range(table.num_rows), pa.int64()))
    firsts = numbered.group_by("seq", use_threads=False).aggregate([("__row", "min")])
    return table.take(firsts.column("__row_min"))
