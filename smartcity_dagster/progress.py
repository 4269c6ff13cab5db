"""Which date partitions the stream worker has completed: pure logic for the sensor.

A date is complete when every reading partition's event-time watermark has passed the end
of that date. A date's fingerprint changes when a file lands for it (late data), so a date
that was built already is built again, once, when late data arrives.
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


def complete_dates(
    manifests: list[PartitionProgress], reading_topics: set[str], built: dict[str, str]
) -> dict[str, str]:
    """Dates to (re)build: complete per the watermarks and not yet built with this content.

    `built` maps a date to the fingerprint of its last requested run (the sensor's cursor).
    """
    readings = [m for m in manifests if m.topic in reading_topics]
    if not readings or any(m.watermark is None for m in readings):
        return {}
    if {m.topic for m in readings} != reading_topics:
        return {}
    watermark = min(datetime.fromisoformat(m.watermark.replace("Z", "+00:00")) for m in readings)
    dates = {day for m in readings for day in m.hours}
    due = {}
    for day in sorted(dates):
        end = datetime.combine(date.fromisoformat(day) + timedelta(days=1), datetime.min.time())
        if watermark.replace(tzinfo=None) < end:
            continue
        current = fingerprint(readings, day)
        if built.get(day) != current:
            due[day] = current
    return due
