"""Landing rounds: buffered offset ranges become durable files, one round at a time.

A round, per partition with a buffer: its range is committed as the intent in the committed
offset's metadata (fenced: `smartcity_stream.group`; the caller does it, since commits stay
on the consuming thread), written with the names of its files into the progress manifest
too; the rows land as Parquet files named by their offsets, with each partition's detection
checkpoint (`smartcity_stream.checkpoint`); every dead letter and anomaly is acknowledged;
the offsets are committed (the caller again); and only then the new progress is recorded.
The steps before and after the commit run on a landing thread, so that the consuming thread
never waits for the lake unless it chooses to (`Lander.current`), and each step's writes run
side by side on writer threads (an object store answers each after a round trip).

A lake write that fails is retried with backoff until it succeeds (`DurableWrites`);
nothing is committed meanwhile. `Lander.stalled` tells the consuming thread that the step
in flight is held up by the lake (a write failed, or the step has run longer than
`STALL_AFTER_S`: a store that does not answer fails only after its request timeout), so it
can pause its partitions and keep polling instead of waiting (`smartcity_stream.worker`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

from confluent_kafka import TopicPartition
from tenacity import RetryCallState, Retrying, retry_if_exception_type, wait_exponential

from smartcity.lake import Lake
from smartcity_stream import metrics
from smartcity_stream.buffer import PartitionBuffer, TopicPartitionKey
from smartcity_stream.checkpoint import drop_checkpoint, save_checkpoint
from smartcity_stream.landing import LandingFile, anomaly_files, landing_files, write_files
from smartcity_stream.progress import (
    OwnerMark,
    PartitionProgress,
    drop_older_manifests,
    save_progress,
)
from smartcity_stream.publisher import Publisher
from smartcity_stream.totals import WorkerTotals

LAKE_WRITERS = 8
STALL_AFTER_S = 5.0
"""A landing step running this long is held up by the lake, failed write or not: a round of
50,000 readings takes well under a second on a local folder or MinIO."""
T = TypeVar("T")


@dataclass(frozen=True)
class LandingPlan:
    """What one partition's buffered range becomes in the lake."""

    files: list[LandingFile]
    anomaly_files: list[LandingFile]


@dataclass(frozen=True)
class WrittenRound:
    """A round whose intents and files are durable and whose publications are
    acknowledged: what its commit and progress record need."""

    buffers: dict[TopicPartitionKey, PartitionBuffer]
    plans: dict[TopicPartitionKey, LandingPlan]
    sizes: dict[TopicPartitionKey, int]
    started: float

    def offsets(self, progress: dict[TopicPartitionKey, PartitionProgress]) -> list[TopicPartition]:
        """The offsets to commit: each partition's next after its range, under its owner's
        epoch and without intent."""
        return [
            TopicPartition(
                t, p, b.last_offset + 1, metadata=OwnerMark(progress[(t, p)].epoch).encode()
            )
            for (t, p), b in self.buffers.items()
        ]


class DurableWrites:
    """Lake writes (and reads that must succeed), each retried with exponential backoff
    (capped at 10 s) until it succeeds or the worker closes; counts the failed attempts, so
    that a caller can tell the lake is failing while a write is still being retried."""

    def __init__(self, writers: int = LAKE_WRITERS) -> None:
        self._pool = ThreadPoolExecutor(writers, thread_name_prefix="lake-write")
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self.failures = 0
        self.last_error = ""

    def __call__(self, write: Callable[[], T]) -> T:
        """Run `write` here, retried until it succeeds; after `close`, its error is raised."""
        retrying = Retrying(
            retry=retry_if_exception_type(OSError),
            wait=wait_exponential(multiplier=0.2, max=10),
            stop=lambda _: self._closing.is_set(),
            sleep=self._closing.wait,  # a close cuts the backoff short
            before_sleep=self._failed,
            reraise=True,
        )
        return retrying(write)

    def each(self, writes: list[Callable[[], T]]) -> list[T]:
        """Run writes side by side on the writer threads, each retried until it succeeds."""
        return list(self._pool.map(self, writes))

    def _failed(self, state: RetryCallState) -> None:
        metrics.WRITE_ERRORS.inc()
        with self._lock:
            self.failures += 1
            self.last_error = str(state.outcome.exception() if state.outcome else "")

    def close(self) -> None:
        """Stop retrying (a write still failing raises its error), then stop the threads."""
        self._closing.set()
        self._pool.shutdown()


class Lander:
    """Runs the rounds' steps on the landing thread, one step at a time."""

    def __init__(
        self,
        lake: Lake,
        progress: dict[TopicPartitionKey, PartitionProgress],
        publisher: Publisher,
        topic_types: dict[str, str],
        totals: WorkerTotals,
        stall_after_s: float = STALL_AFTER_S,
    ) -> None:
        """`progress`: the owned partitions' progress, the group member's own mapping."""
        self.lake = lake
        self.progress = progress
        self.publisher = publisher
        self.topic_types = topic_types
        self.totals = totals
        self.stall_after_s = stall_after_s
        self.writes = DurableWrites()
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="landing")
        self._current: Future[WrittenRound | None] | None = None
        self._since = 0.0
        self._failures_before = 0
        self._manifest_written: set[TopicPartitionKey] = set()

    @property
    def current(self) -> Future[WrittenRound | None] | None:
        """The step in flight: a round's writes (its result is what to commit), or its
        record after the commit (None)."""
        return self._current

    def start(
        self,
        buffers: dict[TopicPartitionKey, PartitionBuffer],
        checkpoints: dict[TopicPartitionKey, bytes],
    ) -> None:
        """Write a round whose intents are committed, with each partition's detection
        checkpoint after its range; nothing else may be in flight."""
        assert self._current is None, "one round at a time"
        self._submit(partial(self._write_round, buffers, checkpoints))

    def step(self, commit: Callable[[WrittenRound], None]) -> None:
        """Take the finished step (its failure is the worker's). Once a round's files are
        durable, `commit` it (on the caller's thread) and record its progress here."""
        assert self._current is not None and self._current.done()
        running, self._current = self._current, None
        written = running.result()
        if written is not None:
            commit(written)
            self._submit(partial(self._record_round, written))

    def stalled(self) -> bool:
        """Whether the step in flight is held up by the lake: one of its writes failed, or
        it has run longer than `stall_after_s`."""
        current = self._current
        return (
            current is not None
            and not current.done()
            and (
                self.writes.failures > self._failures_before
                or time.monotonic() - self._since > self.stall_after_s
            )
        )

    def stall_reason(self) -> str:
        """Why `stalled` holds: the last write error of the step, or its time."""
        if self.writes.failures > self._failures_before:
            return self.writes.last_error
        return f"no answer for {self.stall_after_s:g} s"

    def _submit(self, step: Callable[[], WrittenRound | None]) -> None:
        self._since, self._failures_before = time.monotonic(), self.writes.failures
        self._current = self._thread.submit(step)

    def _write_round(
        self,
        buffers: dict[TopicPartitionKey, PartitionBuffer],
        checkpoints: dict[TopicPartitionKey, bytes],
    ) -> WrittenRound:
        """The steps of a round before its commit (module docstring). The intent in the
        manifest names the files about to land, so whoever finds the range committed but
        not recorded (the owner died or was fenced in between) records them; the
        checkpoints are durable before the commit, so the committed offset always has one."""
        started = time.perf_counter()
        plans = {tp: self._plan(tp, buffer) for tp, buffer in buffers.items()}
        for tp, buffer in buffers.items():
            self.progress[tp].intend(buffer.first_offset, buffer.last_offset, plans[tp].files)
        self._save_manifests(list(plans))
        files = [
            partial(write_files, self.lake, [*p.files, *p.anomaly_files]) for p in plans.values()
        ]
        states = [
            partial(save_checkpoint, self.lake, t, p, buffers[(t, p)].last_offset + 1, data)
            for (t, p), data in checkpoints.items()
        ]
        sizes = self.writes.each([*files, *states])[: len(files)]
        self.publisher.wait_acknowledged()
        return WrittenRound(buffers, plans, dict(zip(plans, sizes, strict=True)), started)

    def _record_round(self, written: WrittenRound) -> None:
        """After the commit: the partitions' new progress (committed offset, watermark,
        files per hour) replaces their intent."""
        passed = []
        for tp, buffer in written.buffers.items():
            progress = self.progress[tp]
            passed.append(partial(drop_checkpoint, self.lake, *tp, progress.committed_offset))
            progress.committed_offset = buffer.last_offset + 1
            progress.watermark = buffer.watermark or progress.watermark
            progress.settle()
        self._save_manifests(list(written.buffers))
        self.writes.each(passed)
        for tp, plan in written.plans.items():
            rows = sum(file.table.num_rows for file in plan.files)
            self.totals.landed += rows
            self.totals.files += len(plan.files)
            metrics.LANDED.labels(self.topic_types[tp[0]]).inc(rows)
            metrics.LANDED_BYTES.labels(self.topic_types[tp[0]]).inc(written.sizes[tp])
        self.totals.rounds += 1
        self.totals.last_batch_at = time.perf_counter()
        metrics.LANDING_SECONDS.observe(self.totals.last_batch_at - written.started)

    def _save_manifests(self, tps: list[TopicPartitionKey]) -> None:
        """Each partition's manifest into its epoch's object; the first of an epoch then
        removes the earlier epochs' objects."""
        firsts = [tp for tp in tps if tp not in self._manifest_written]
        self.writes.each([partial(save_progress, self.lake, self.progress[tp]) for tp in tps])
        self.writes.each(
            [partial(drop_older_manifests, self.lake, self.progress[tp]) for tp in firsts]
        )
        self._manifest_written.update(firsts)

    def _plan(self, tp: TopicPartitionKey, buffer: PartitionBuffer) -> LandingPlan:
        """The files of a buffered range: readings named by their own offsets per event
        hour, its anomalies by the range's first and last offset."""
        sensor_type, partition = self.topic_types[tp[0]], tp[1]
        table = buffer.table()
        offsets = (buffer.first_offset, buffer.last_offset)
        return LandingPlan(
            landing_files(sensor_type, partition, table) if table is not None else [],
            anomaly_files(sensor_type, partition, offsets, buffer.anomalies),
        )

    def forget(self, keys: list[TopicPartitionKey]) -> None:
        """The partitions went to another owner: a later claim writes a new epoch's first
        manifest again."""
        self._manifest_written.difference_update(keys)

    def close(self) -> None:
        """Stop: a write still retried fails (nothing of its round is committed: it is
        replayed), then the threads end."""
        self.writes.close()
        self._thread.shutdown()
