"""The progress manifest (for the Dagster sensor) and the owner mark (for fencing).

The manifest: one small JSON object per topic-partition and owner epoch under
`landing/_progress/`, replaced whole at every landing round: committed offset, event-time
watermark, landed files per hour, and the intent of the round in hand (its offset range).

The owner mark: the metadata of the partition's committed offset in Kafka, holding the
owner epoch and the intent. It is the authority; the manifest mirrors it for readers.
Fencing rests on two facts:
- The broker accepts an offset commit only from a member of the group's current
  generation, so a worker that lost a partition (paused past its session, a zombie) can
  no longer commit an intent: it never lands a range the new owner lands differently. The
  new owner reads the mark on assignment, replays exactly its intent (the same file names)
  and claims the partition by committing the same offset with the epoch plus one.
- An object store without conditional writes cannot refuse a late write, so each epoch
  writes its own manifest object (`p<N>.json` for epoch 0, `p<N>.e<epoch>.json` after) and
  readers take the highest epoch of each partition: a zombie's late manifest lands in an
  object nobody reads.
The new owner misses no file an earlier owner landed: it starts from the highest manifest
it finds, whose intent names the round's files and was written before the round's commit,
which itself precedes the new owner's assignment. An intent the broker shows committed is
settled into the files per hour (`take_over`), one not committed is replayed.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from smartcity.lake import Lake
from smartcity.layout import PROGRESS, progress_key
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
    epoch: int = 0
    owner: str = ""
    pending_files: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)

    def intend(self, first: int, last: int, files: Iterable[LandingFile]) -> None:
        """The range about to land, and its reading files."""
        self.pending_first, self.pending_last = first, last
        self.pending_files = {}
        _add_files(self.pending_files, files)

    def settle(self) -> None:
        """The intent's range is committed: its files count as landed (replays replace,
        never add)."""
        for day, hours in self.pending_files.items():
            for hour, files in hours.items():
                self.hours.setdefault(day, {}).setdefault(hour, {}).update(files)
        for day in sorted(self.hours)[:-KEEP_DAYS]:
            del self.hours[day]
        self.pending_first = self.pending_last = None
        self.pending_files = {}

    def take_over(self) -> None:
        """For a new owner, once `committed_offset` is the broker's: an intent the previous
        owner committed but did not record is settled (its files are durable); one it did
        not commit is dropped (the owner mark's intent is replayed into the same files)."""
        if self.pending_last is not None and self.committed_offset > self.pending_last:
            self.settle()
        self.pending_first = self.pending_last = None
        self.pending_files = {}

    def as_json(self) -> bytes:
        data: dict[str, Any] = {
            "topic": self.topic,
            "partition": self.partition,
            "committed_offset": self.committed_offset,
            "watermark": self.watermark,
            "pending": None
            if self.pending_first is None
            else {
                "first": self.pending_first,
                "last": self.pending_last,
                "files": self.pending_files,
            },
            "hours": self.hours,
            "epoch": self.epoch,
            "owner": self.owner,
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
            pending_files=pending.get("files", {}),
            hours=data.get("hours", {}),
            updated_at=data.get("updated_at", ""),
            epoch=data.get("epoch", 0),
            owner=data.get("owner", ""),
        )


def _add_files(hours: dict[str, dict[str, dict[str, int]]], files: Iterable[LandingFile]) -> None:
    """Count files and rows per date and hour, by file name."""
    for file in files:
        hour = hours.setdefault(file.day, {}).setdefault(f"{file.hour:02d}", {})
        hour[file.key.rsplit("/", 1)[1]] = file.table.num_rows


def read_progress(lake: Lake, key: str, attempts: int = 5) -> PartitionProgress:
    """One manifest. On S3 a read races the worker's next replacement of it: the client
    asks the object's size first, so a manifest that grew in between comes back cut at the
    old size. Such a read is taken again."""
    for _ in range(attempts - 1):
        with contextlib.suppress(orjson.JSONDecodeError):
            return PartitionProgress.from_json(lake.read_bytes(key))
        time.sleep(0.05)
    return PartitionProgress.from_json(lake.read_bytes(key))


def manifest_key(topic: str, partition: int, epoch: int) -> str:
    """The manifest object of one owner epoch (epoch 0: the key of unfenced writers)."""
    key = progress_key(topic, partition)
    return key if epoch == 0 else f"{key.removesuffix('.json')}.e{epoch}.json"


def _epoch_of(key: str) -> tuple[str, int]:
    """(the partition's epoch-0 key, the epoch) of a manifest object's key."""
    folder, _, name = key.rpartition("/")
    stem, _, epoch = name.removesuffix(".json").partition(".e")
    return (f"{folder}/{stem}.json", int(epoch)) if epoch.isdigit() else (key, 0)


def _newest_keys(lake: Lake, prefix: str) -> dict[str, tuple[int, str]]:
    """Per partition (its epoch-0 key) under `prefix`: the highest epoch and its object."""
    newest: dict[str, tuple[int, str]] = {}
    for info in lake.list_files(prefix):
        if not info.path.endswith(".json"):
            continue
        key = info.path.removeprefix(lake.root + "/")
        base, epoch = _epoch_of(key)
        if epoch >= newest.get(base, (-1, ""))[0]:
            newest[base] = (epoch, key)
    return newest


def load_progress(lake: Lake, topic: str, partition: int) -> PartitionProgress:
    """The partition's manifest of the highest epoch (a fresh one when there is none)."""
    base = progress_key(topic, partition)
    found = _read_newest(lake, base.rsplit("/", 1)[0], lambda key: key == base)
    return found[0] if found else PartitionProgress(topic, partition)


def _read_newest(
    lake: Lake, prefix: str, wanted: Callable[[str], bool], attempts: int = 5
) -> list[PartitionProgress]:
    """The newest manifest of each partition under `prefix` (by its epoch-0 key) that is
    `wanted`. A new owner deletes older epochs' objects, so one listed may be gone when
    read: the listing is then taken again."""

    def read() -> list[PartitionProgress]:
        newest = _newest_keys(lake, prefix).items()
        return [read_progress(lake, key) for base, (_, key) in newest if wanted(base)]

    for _ in range(attempts - 1):
        with contextlib.suppress(OSError):
            return read()
        time.sleep(0.05)
    return read()


def save_progress(lake: Lake, progress: PartitionProgress) -> None:
    key = manifest_key(progress.topic, progress.partition, progress.epoch)
    lake.write_bytes(key, progress.as_json())


def drop_older_manifests(lake: Lake, progress: PartitionProgress) -> None:
    """Delete the manifests of earlier epochs of the partition, once its own is written
    (only the highest is read; a zombie may still leave one behind, which is never read)."""
    base = progress_key(progress.topic, progress.partition)
    for info in lake.list_files(base.rsplit("/", 1)[0]):
        partition, epoch = _epoch_of(info.path.removeprefix(lake.root + "/"))
        if info.path.endswith(".json") and partition == base and epoch < progress.epoch:
            with contextlib.suppress(FileNotFoundError):
                lake.filesystem.delete_file(info.path)


def load_all_progress(lake: Lake) -> list[PartitionProgress]:
    """Every partition's manifest of its highest epoch (what the Dagster sensor reads)."""
    return _read_newest(lake, PROGRESS, lambda _: True)


@dataclass(frozen=True)
class OwnerMark:
    """The owner epoch and intent kept in the metadata of a partition's committed offset."""

    epoch: int = 0
    pending: tuple[int, int] | None = None

    def encode(self) -> str:
        return orjson.dumps({"epoch": self.epoch, "pending": self.pending}).decode()

    @classmethod
    def decode(cls, metadata: str | None) -> OwnerMark:
        """The mark of a commit's metadata; none (no commit yet, or a commit by another
        client) is epoch 0 without intent."""
        try:
            data = orjson.loads(metadata or "")
        except orjson.JSONDecodeError:
            return cls()
        if not isinstance(data, dict):
            return cls()
        pending = data.get("pending")
        return cls(int(data.get("epoch", 0)), tuple(pending) if pending else None)
