"""The progress manifest: what the worker has made durable, for the Dagster sensor.

One small JSON object per topic-partition under `landing/_progress/`, replaced whole at
every commit. It also carries the worker's intent for the batch in hand: the offset range
it is about to land. A worker that takes the partition over after a crash reads the intent
and lands exactly that range again first, so the replay rewrites the same file names.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from smartcity.lake import Lake
from smartcity.layout import progress_key
from smartcity_stream.landing import LandingFile

KEEP_DAYS = 40


@dataclass
class PartitionProgress:
    """Durable state of one topic-partition."""

    topic: str
    partition: int
    committed_offset: int = 0
    watermark: str | None = None
    pending_first: int | None = None
    pending_last: int | None = None
    hours: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)
    updated_at: str = ""

    def record(self, files: Iterable[LandingFile]) -> None:
        """Count landed files and rows per date and hour (replays replace, never add)."""
        for file in files:
            hour = self.hours.setdefault(file.day, {}).setdefault(f"{file.hour:02d}", {})
            hour[file.key.rsplit("/", 1)[1]] = file.table.num_rows
        for day in sorted(self.hours)[:-KEEP_DAYS]:
            del self.hours[day]

    def as_json(self) -> bytes:
        data: dict[str, Any] = {
            "topic": self.topic,
            "partition": self.partition,
            "committed_offset": self.committed_offset,
            "watermark": self.watermark,
            "pending": None
            if self.pending_first is None
            else {"first": self.pending_first, "last": self.pending_last},
            "hours": self.hours,
            "updated_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
        }
        return orjson.dumps(data)

    @classmethod
    def from_json(cls, raw: bytes) -> PartitionProgress:
        data = orjson.loads(raw)
        pending = data.get("pending") or {}
        return cls(
            topic=data["topic"],
            partition=data["partition"],
            committed_offset=data["committed_offset"],
            watermark=data.get("watermark"),
            pending_first=pending.get("first"),
            pending_last=pending.get("last"),
            hours=data.get("hours", {}),
            updated_at=data.get("updated_at", ""),
        )


def read_progress(lake: Lake, key: str, attempts: int = 5) -> PartitionProgress:
    """One manifest. On S3 a read races the worker's next replacement of it: the client
    asks the object's size first, so a manifest that grew in between comes back cut at the
    old size. Such a read is taken again."""
    for _ in range(attempts - 1):
        with contextlib.suppress(orjson.JSONDecodeError):
            return PartitionProgress.from_json(lake.read_bytes(key))
        time.sleep(0.05)
    return PartitionProgress.from_json(lake.read_bytes(key))


def load_progress(lake: Lake, topic: str, partition: int) -> PartitionProgress:
    key = progress_key(topic, partition)
    if not lake.exists(key):
        return PartitionProgress(topic, partition)
    return read_progress(lake, key)


def save_progress(lake: Lake, progress: PartitionProgress) -> None:
    lake.write_bytes(progress_key(progress.topic, progress.partition), progress.as_json())


def load_all_progress(lake: Lake) -> list[PartitionProgress]:
    """Every partition's manifest (what the Dagster sensor reads)."""
    from smartcity.layout import PROGRESS

    return [
        read_progress(lake, info.path.removeprefix(lake.root + "/"))
        for info in lake.list_files(PROGRESS)
        if info.path.endswith(".json")
    ]
