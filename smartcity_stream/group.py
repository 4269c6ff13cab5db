"""Membership of the consumer group: the consumer, the partitions this worker owns under an
owner epoch, the commits that fence it, pause and resume, lag.

Fencing (`smartcity_stream.progress`, the owner mark): the intent and an owner epoch live
in the metadata of the partition's committed offset, so writing an intent is an offset
commit, which the broker accepts only from a member of the group's current generation. On
assignment a worker reads the mark, takes its intent to replay, and claims the partition by
committing the same offset with the epoch plus one; its manifests go to that epoch's own
object. A worker that lost its partitions without noticing (paused past its session while
the group gave them to another member) is refused at its next commit, intent or offsets,
lands nothing more and stops (`Fenced`): a restart joins the group afresh. Resumed between
an accepted intent and its files, it can only rewrite the files of that same range with the
same rows, which the new owner replays identically; its late manifests go to its old
epoch's object, which no reader takes.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from tenacity import Retrying, retry_if_exception, wait_exponential

from smartcity.kafka import client_config
from smartcity.settings import Settings
from smartcity_stream import metrics
from smartcity_stream.buffer import PartitionBuffer, TopicPartitionKey
from smartcity_stream.progress import OwnerMark, PartitionProgress

log = logging.getLogger("smartcity.stream")

GROUP_ID = "smartcity-stream"
LAG_EVERY_S = 5.0
T = TypeVar("T")
Rebalance = Callable[[Consumer, list[TopicPartition]], None]


class PartitionsLost(RuntimeError):
    """The group took partitions away without a rebalance (the session expired) while rows
    of theirs were detected but not landed or committed: nothing can be committed for them
    any more (the broker refuses it: module docstring, fencing), and the windows and
    baselines already hold those rows, so the worker stops; a restart replays them from the
    last commit with its state starting there too."""


class Fenced(RuntimeError):
    """The group gave this worker's partitions to another member (its session expired while
    it was paused or cut off): the broker refused its commit, so it lands nothing more and
    stops; a restart joins the group again and replays from the last commit."""


class GroupMember:
    """This worker's consumer in the group, and the progress of each partition it owns."""

    def __init__(
        self,
        settings: Settings,
        *,
        group_id: str,
        worker_id: str,
        static_member: bool,
        session_timeout_s: float,
        max_poll_interval_s: float,
        load_progress: Callable[[str, int], PartitionProgress],
    ) -> None:
        """`load_progress`: a partition's newest manifest from the lake, read on claiming it."""
        self.worker_id = worker_id
        self.consumer = Consumer(
            client_config(
                settings,
                **{
                    "group.id": group_id,
                    "enable.auto.commit": False,
                    "auto.offset.reset": "earliest",
                    "max.poll.interval.ms": int(max_poll_interval_s * 1000),
                    "fetch.max.bytes": 104_857_600,
                    "queued.max.messages.kbytes": 262_144,
                    "session.timeout.ms": int(session_timeout_s * 1000),
                    **({"group.instance.id": worker_id} if static_member else {}),
                },
            )
        )
        self.progress: dict[TopicPartitionKey, PartitionProgress] = {}
        self.paused: set[TopicPartitionKey] = set()
        self.assigned_once = False
        self._load_progress = load_progress
        self._last_lag_at = 0.0

    def subscribe(
        self, topics: list[str], on_assign: Rebalance, on_revoke: Rebalance, on_lost: Rebalance
    ) -> None:
        self.consumer.subscribe(topics, on_assign=on_assign, on_revoke=on_revoke, on_lost=on_lost)

    def consume(self, count: int, timeout_s: float) -> list[Message]:
        """Up to `count` messages; the group's callbacks run inside it. Calling it is also
        what keeps this worker in the group (`max.poll.interval.ms`)."""
        return self.consumer.consume(count, timeout=timeout_s)

    def batches(self, messages: list[Message]) -> dict[TopicPartitionKey, list[Message]]:
        """A consume's messages per partition this worker owns, in offset order; errors
        logged (reaching a partition's end is none)."""
        grouped: dict[TopicPartitionKey, list[Message]] = {}
        for message in messages:
            if message.error() is not None:
                if message.error().code() != KafkaError._PARTITION_EOF:
                    log.warning("consume error: %s", message.error())
                continue
            grouped.setdefault((message.topic(), message.partition()), []).append(message)
        return {tp: batch for tp, batch in grouped.items() if tp in self.progress}

    def claim(self, partitions: list[TopicPartition]) -> dict[TopicPartitionKey, tuple[int, int]]:
        """Take the partitions over: the committed offset and its owner mark from the broker,
        the files and watermark from the newest manifest; then commit the same offset under
        a higher epoch, which the previous owner's commits can never overtake. Returns the
        intents the previous owners left, to replay."""
        self.assigned_once = True
        committed = self._retry_commit_call(lambda: self.consumer.committed(partitions, 30))
        claims, intents = [], {}
        for tp in committed:
            key = (tp.topic, tp.partition)
            mark = OwnerMark.decode(tp.metadata)
            progress = self._load_progress(tp.topic, tp.partition)
            progress.epoch = max(mark.epoch, progress.epoch) + 1
            progress.owner = self.worker_id
            progress.committed_offset = tp.offset if tp.offset >= 0 else self._log_start(tp)
            progress.take_over()
            self.progress[key] = progress
            if mark.pending is not None:
                intents[key] = mark.pending
            claims.append(
                TopicPartition(
                    tp.topic,
                    tp.partition,
                    progress.committed_offset,
                    metadata=OwnerMark(progress.epoch, mark.pending).encode(),
                )
            )
        self.commit(claims)
        return intents

    def _log_start(self, tp: TopicPartition) -> int:
        """Where a partition that has no commit yet starts (`auto.offset.reset=earliest`)."""
        low, _ = self.consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), 30)
        return max(low, 0)

    def commit_intents(self, buffers: dict[TopicPartitionKey, PartitionBuffer]) -> None:
        """The fenced step of a round: each range as the intent of its partition's owner
        mark, at the offset still committed (module docstring)."""
        self.commit(
            [
                TopicPartition(
                    t,
                    p,
                    b.first_offset,
                    metadata=OwnerMark(
                        self.progress[(t, p)].epoch, (b.first_offset, b.last_offset)
                    ).encode(),
                )
                for (t, p), b in buffers.items()
            ]
        )

    def commit(self, offsets: list[TopicPartition]) -> None:
        """Commit synchronously, owner marks in the metadata; a commit refused because the
        group moved on without this worker raises `Fenced`."""
        self._retry_commit_call(lambda: self.consumer.commit(offsets=offsets, asynchronous=False))

    def _retry_commit_call(self, call: Callable[[], T]) -> T:
        """Call the group coordinator; while it moves or loads (a broker or a static member
        coming back), retry with backoff instead of dying. A refusal that says this worker
        is no longer the member the group knows is `Fenced`."""
        try:
            for attempt in Retrying(
                retry=retry_if_exception(_coordinator_away),
                wait=wait_exponential(multiplier=0.2, max=10),
                before_sleep=lambda state: log.warning(
                    "commit waits: %s", state.outcome.exception()
                ),
                reraise=True,
            ):
                with attempt:
                    return call()
        except KafkaException as error:
            if _fenced(error):
                log.error("fenced: the group refused this worker's commit (%s)", error)
                raise Fenced(f"the group gave this worker's partitions away: {error}") from None
            raise
        raise AssertionError("unreachable: Retrying reraises")

    def pause(self, keys: set[TopicPartitionKey]) -> None:
        """Stop fetching `keys` (those owned and not paused yet). Kafka drops what it had
        fetched ahead for them and fetches again from the last message handed out."""
        keys = {tp for tp in keys if tp in self.progress} - self.paused
        if keys:
            self.consumer.pause([TopicPartition(t, p) for t, p in keys])
            self.paused |= keys

    def resume_all(self) -> None:
        if self.paused:
            self.consumer.resume([TopicPartition(t, p) for t, p in self.paused])
            self.paused.clear()

    def forget(self, keys: list[TopicPartitionKey]) -> None:
        """The partitions are leaving: resumed first (Kafka keeps an application's pause
        across assignments, so one given back later would stay paused), progress dropped."""
        paused = [TopicPartition(t, p) for t, p in keys if (t, p) in self.paused]
        if paused:
            with contextlib.suppress(KafkaException):  # lost already: nothing to resume
                self.consumer.resume(paused)
            self.paused -= set(keys)
        for key in keys:
            self.progress.pop(key, None)

    def end_of(self, tp: TopicPartitionKey) -> int:
        """The partition's end as the last fetch saw it (-1: not known yet)."""
        _, high = self.consumer.get_watermark_offsets(TopicPartition(*tp), cached=True)
        return int(high)

    def maybe_update_lag(self) -> None:
        now = time.monotonic()
        if now - self._last_lag_at >= LAG_EVERY_S:
            self._last_lag_at = now
            self.update_lag(cached=True)

    def update_lag(self, cached: bool = False) -> int:
        """Messages behind the partitions' ends, as the consumer-lag metric; returns the sum.

        `cached` uses the ends the last fetches reported (no broker round trip: the metric's
        cadence); the idle check asks the broker.
        """
        total = 0
        for (topic, partition), progress in self.progress.items():
            try:
                _, high = self.consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=2, cached=cached
                )
            except KafkaException:
                continue
            if high < 0:
                continue
            lag = max(high - progress.committed_offset, 0)
            metrics.CONSUMER_LAG.labels(topic, str(partition)).set(lag)
            total += lag
        return total

    def close(self) -> None:
        self.consumer.close()


_COORDINATOR_AWAY = frozenset(
    {
        KafkaError._WAIT_COORD,
        KafkaError._TRANSPORT,
        KafkaError._TIMED_OUT,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.NOT_COORDINATOR,
    }
)


# The member this commit speaks for is not the group's any more (or is being replaced).
_FENCED = frozenset(
    {
        KafkaError.ILLEGAL_GENERATION,
        KafkaError.UNKNOWN_MEMBER_ID,
        KafkaError.FENCED_INSTANCE_ID,
        KafkaError.REBALANCE_IN_PROGRESS,
        KafkaError._ASSIGNMENT_LOST,
    }
)


def _cause(error: BaseException) -> KafkaError | None:
    if not isinstance(error, KafkaException) or not error.args:
        return None
    cause = error.args[0]
    return cause if isinstance(cause, KafkaError) else None


def _fenced(error: BaseException) -> bool:
    cause = _cause(error)
    return cause is not None and cause.code() in _FENCED


def _coordinator_away(error: BaseException) -> bool:
    """A commit failed only because the group coordinator is not reachable yet."""
    cause = _cause(error)
    return (
        cause is not None
        and not _fenced(error)
        and (cause.retriable() or cause.code() in _COORDINATOR_AWAY)
    )
