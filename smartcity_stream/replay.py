"""Replaying an intent: the exact offset range an earlier owner meant to land, landed alone.

A partition taken over with an intent in its owner mark (`smartcity_stream.progress`)
may already have some of that range's files in the lake, named by the offsets of their
rows. So the new owner holds the partition's messages back until it has the intent's whole
range, then detects and lands that range on its own, which rewrites the same file names
instead of adding others; what follows the range goes on as usual. If the partition ends
short of the range (its end as the last fetch saw it), what there is lands.
"""

from __future__ import annotations

from collections.abc import Callable

from confluent_kafka import Message

from smartcity_stream.buffer import TopicPartitionKey

Segment = tuple[TopicPartitionKey, list[Message], bool]
"""A partition, its messages in offset order, and whether they are a replayed intent (to
land alone, at once)."""


class Replays:
    """The intents still to replay, and the messages held back for each."""

    def __init__(self) -> None:
        self.intents: dict[TopicPartitionKey, tuple[int, int]] = {}
        self.held: dict[TopicPartitionKey, list[Message]] = {}

    def expect(self, tp: TopicPartitionKey, intent: tuple[int, int]) -> None:
        """`tp` was taken over with the intent (first, last offset)."""
        self.intents[tp] = intent

    def segments(self, batches: dict[TopicPartitionKey, list[Message]]) -> list[Segment]:
        """The segments of one consume (per partition, in offset order) in the order to
        detect them: an intent's exact range first, once all of it is in hand, then what
        follows it; a partition still short of its intent's end gives none."""
        segments = []
        for tp, batch in batches.items():
            intent = self.intents.get(tp)
            if intent is None:
                segments.append((tp, batch, False))
                continue
            batch = self.held.pop(tp, []) + batch
            if batch[0].offset() != intent[0]:
                del self.intents[tp]  # committed already; only its progress record was lost
                segments.append((tp, batch, False))
            elif batch[-1].offset() < intent[1]:
                self.held[tp] = batch
            else:
                del self.intents[tp]
                segments.append((tp, [m for m in batch if m.offset() <= intent[1]], True))
                if rest := [m for m in batch if m.offset() > intent[1]]:
                    segments.append((tp, rest, False))
        return segments

    def release(self, end_of: Callable[[TopicPartitionKey], int]) -> list[Segment]:
        """The held ranges whose partition has nothing more to give: `end_of(tp)`, the
        partition's end as last seen (negative: unknown), is right after them."""
        released = []
        for tp, batch in list(self.held.items()):
            end = end_of(tp)
            if 0 <= end <= batch[-1].offset() + 1:
                del self.held[tp], self.intents[tp]
                released.append((tp, batch, True))
        return released

    def forget(self, tp: TopicPartitionKey) -> None:
        """The partition went to another owner, who replays its intent itself."""
        self.intents.pop(tp, None)
        self.held.pop(tp, None)
