"""Which date partitions the stream worker has completed: pure logic for the sensor.

A date is complete when every reading partition that can still bring readings for it has
moved its event-time watermark past the end of that date (`horizon`). A date's fingerprint
changes when a file lands for it (late data), so a date that was built already is built
again, once, when late data arrives.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import date, datetime, timedelta

from smartcity_stream.progress import PartitionProgress


def fingerprint(manifests: Iterable[PartitionProgress], day: str) -> str:
    parts = sorted(
        f"{m.topic}/{m.partition}/{hour}/{name}={rows}"
        for m in manifests
        for hour, files in m.hours.get(day, {}).items()
        for name, rows in files.items()
    )
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _instant(watermark: str) -> datetime:
    return datetime.fromisoformat(watermark.replace("Z", "+00:00")).replace(tzinfo=None)


def horizon(manifests: list[PartitionProgress], reading_topics: set[str]) -> datetime | None:
    """The instant (naive UTC) before which every reading partition's data is complete;
    None when no date can be called complete.

    A partition with a watermark bounds the horizon by it. A partition without one has
    landed no reading so far: all it consumed was dead-lettered, exactly as if it had
    carried nothing, and a partition that carried nothing has no manifest at all and
    bounds nothing. So it is bound by its topic instead: the same devices' clocks feed
    every partition of a topic (the producer keys by sensor), and a reading it brings later
    for a date its topic's other partitions have passed is late data, which lands and
    changes the date's fingerprint, so the date is built again, as for late data on any
    partition. What cannot be judged holds every date back: a topic none of whose
    partitions has a watermark (nothing shows where its clock stands), and a partition
    landing its first range (rows of unknown dates are being written).
    """
    readings = [m for m in manifests if m.topic in reading_topics]
    if any(m.watermark is None and m.pending_first is not None for m in readings):
        return None
    marks: dict[str, list[datetime]] = {topic: [] for topic in reading_topics}
    for m in readings:
        if m.watermark is not None:
            marks[m.topic].append(_instant(m.watermark))
    if not all(marks.values()):
        return None
    return min(min(instants) for instants in marks.values())


def day_end(day: str) -> datetime:
    return datetime.combine(date.fromisoformat(day) + timedelta(days=1), datetime.min.time())


def complete_dates(manifests: list[PartitionProgress], reading_topics: set[str]) -> dict[str, str]:
    """Every date complete per the watermarks, with the fingerprint of its landed files."""
    limit = horizon(manifests, reading_topics)
    if limit is None:
        return {}
    readings = [m for m in manifests if m.topic in reading_topics]
    dates = {day for m in readings for day in m.hours}
    return {day: fingerprint(readings, day) for day in sorted(dates) if day_end(day) <= limit}
