"""What waits to land: per topic-partition, detected rows held until a landing round is due.

Detection runs on every short consume, but landing costs the same per round whatever its
size (a Parquet file per partition and event hour, two progress manifests per partition, a
synchronous commit), so the rows are gathered here and land together: when the buffers hold
`LandingPolicy.max_messages` messages in all, or the oldest has waited `max_age_s`. A buffer
covers one contiguous offset range of its partition, first to last message (valid or not),
which becomes the landing intent, so a replay after a crash lands the same range again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

TopicPartitionKey = tuple[str, int]


@dataclass(frozen=True)
class LandingPolicy:
    """When buffered rows land: enough messages in hand, or the oldest waited long enough."""

    max_messages: int = 50_000
    max_age_s: float = 1.0


@dataclass
class PartitionBuffer:
    """One partition's consumed range since its last landing, detection already done."""

    first_offset: int
    last_offset: int
    opened_at: float
    messages: int = 0
    tables: list[pa.Table] = field(default_factory=list)
    anomalies: list[dict[str, Any]] = field(default_factory=list)
    watermark: str | None = None

    def table(self) -> pa.Table | None:
        """The valid rows of the whole range in offset order (None: not one valid row)."""
        return pa.concat_tables(self.tables).combine_chunks() if self.tables else None


class LandingBuffers:
    """The buffers of the partitions in hand, and the decision when they land."""

    def __init__(self, policy: LandingPolicy) -> None:
        self.policy = policy
        self._buffers: dict[TopicPartitionKey, PartitionBuffer] = {}

    def add(
        self,
        tp: TopicPartitionKey,
        offsets: tuple[int, int],
        now: float,
        *,
        table: pa.Table | None,
        anomalies: list[dict[str, Any]],
        watermark: str | None,
    ) -> None:
        """Append the next consumed segment of `tp` (`offsets`: its first and last message)."""
        buffer = self._buffers.get(tp)
        if buffer is None:
            buffer = self._buffers[tp] = PartitionBuffer(offsets[0], offsets[1], now)
        elif offsets[0] <= buffer.last_offset:
            raise ValueError(f"{tp}: offset {offsets[0]} not after {buffer.last_offset}")
        buffer.last_offset = offsets[1]
        buffer.messages += offsets[1] - offsets[0] + 1
        if table is not None and table.num_rows:
            buffer.tables.append(table)
        buffer.anomalies += anomalies
        buffer.watermark = watermark or buffer.watermark

    def due(self, now: float) -> bool:
        """Whether a landing round is due: see `landing_due`."""
        return landing_due(
            self._messages(),
            min((b.opened_at for b in self._buffers.values()), default=None),
            now,
            self.policy,
        )

    def full(self) -> bool:
        """Whether the buffers hold `max_messages` in all: the worker is behind, not live."""
        return self._messages() >= self.policy.max_messages

    def _messages(self) -> int:
        return sum(b.messages for b in self._buffers.values())

    def take(
        self, tps: list[TopicPartitionKey] | None = None
    ) -> dict[TopicPartitionKey, PartitionBuffer]:
        """Remove and return the buffers of `tps` (all when None) that hold anything."""
        keys = list(self._buffers) if tps is None else [tp for tp in tps if tp in self._buffers]
        return {tp: self._buffers.pop(tp) for tp in keys}

    def clear(self) -> None:
        """Forget every buffer: nothing of it was committed, so it is consumed again."""
        self._buffers.clear()

    def __contains__(self, tp: object) -> bool:
        return tp in self._buffers

    def __len__(self) -> int:
        return len(self._buffers)


def landing_due(messages: int, oldest_at: float | None, now: float, policy: LandingPolicy) -> bool:
    """A round is due when the buffers hold `max_messages` messages in all (memory and
    replay stay bounded) or the oldest buffer opened `max_age_s` ago (progress reaches the
    lake and the Dagster sensor about once a second at the live rate)."""
    if oldest_at is None:
        return False
    return messages >= policy.max_messages or now - oldest_at >= policy.max_age_s
