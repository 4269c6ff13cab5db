"""Detection state checkpointed to the lake with each landing round, per topic-partition.

What a partition's readings have taught detection (its sensors' baselines, runs and open
episodes; its watermark and open windows) is exported at the moment its buffer is taken to
land, when the state is exactly that after the range's last message, and written with the
round's files, before its offsets are committed. Each checkpoint is named by the next
offset to detect, so the state for the committed offset is always there: the round that
committed it wrote it first. A worker that claims the partition (a restart, a rebalance)
restores that one and goes on from the committed offset as if nothing had stopped: the
same baselines, the same episodes, the same anomaly ids. A checkpoint ahead of the
committed offset is a round that never committed: its replay writes the same key again.

One object per partition and offset, JSON compressed with zstd: a week-old sensor's state
is about 6 KB of JSON, mostly its hour-of-week expectations. The previous one goes once
a commit has moved past it.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import orjson
import pyarrow as pa

from smartcity.lake import Lake
from smartcity.layout import checkpoint_dir, checkpoint_key

CODEC = "zstd"


@dataclass(frozen=True)
class Checkpoint:
    """A partition's detection state after every message before `offset`."""

    offset: int
    windows: dict[str, Any]
    sensors: dict[str, dict[str, Any]]

    def encode(self) -> bytes:
        """Compressed JSON. Taken on the consuming thread: arrays of the live state are
        copied here, never serialized later while detection changes them."""
        data = orjson.dumps(
            {"offset": self.offset, "windows": self.windows, "sensors": self.sensors},
            option=orjson.OPT_SERIALIZE_NUMPY,
        )
        sink = pa.BufferOutputStream()
        with pa.CompressedOutputStream(sink, CODEC) as out:
            out.write(data)
        return sink.getvalue().to_pybytes()

    @classmethod
    def decode(cls, raw: bytes) -> Checkpoint:
        with pa.CompressedInputStream(pa.BufferReader(raw), CODEC) as source:
            data = orjson.loads(source.read())
        return cls(data["offset"], data["windows"], data["sensors"])


def save_checkpoint(lake: Lake, topic: str, partition: int, offset: int, data: bytes) -> None:
    lake.write_bytes(checkpoint_key(topic, partition, offset), data)


def load_checkpoint(lake: Lake, topic: str, partition: int, offset: int) -> Checkpoint | None:
    """The partition's state at `offset` (None: there is none, as on a first start), after
    removing those before it, which no claim can need any more."""
    wanted = checkpoint_key(topic, partition, offset)
    found = None
    for info in lake.list_files(checkpoint_dir(topic, partition)):
        key = info.path.removeprefix(lake.root + "/")
        if key == wanted:
            found = Checkpoint.decode(lake.read_bytes(key))
        elif _offset_of(key) < offset:
            with contextlib.suppress(FileNotFoundError):
                lake.filesystem.delete_file(info.path)
    return found


def drop_checkpoint(lake: Lake, topic: str, partition: int, offset: int) -> None:
    """Remove the state at `offset`, once a commit has moved past it."""
    with contextlib.suppress(FileNotFoundError):
        lake.filesystem.delete_file(lake.path(checkpoint_key(topic, partition, offset)))


def _offset_of(key: str) -> int:
    name = key.rsplit("/", 1)[1]
    digits = name.removeprefix("o").split(".", 1)[0]
    return int(digits) if digits.isdigit() else -1
