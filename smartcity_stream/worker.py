"""The stream worker: its parts wired together, and the loop that drives them.

Each consume is short (`poll_timeout_s`, 10 ms at the live rate; up to `batch_size`
messages when behind), and its messages go straight through detection, one segment per
partition (`smartcity_stream.detection`: bad messages to the dead-letter topic with the
reason, windows, rules, anomalies published, live state). The valid rows then wait in a
buffer per topic-partition (`smartcity_stream.buffer`) until a landing round is due
(`land_messages` in all, or the oldest waited `land_after_s`). A round
(`smartcity_stream.rounds`) commits its ranges as fenced intents
(`smartcity_stream.group`), lands them as files named by their offsets, waits until every
publication (`smartcity_stream.publisher`) is acknowledged, commits the offsets, and only
then records the new progress. Its steps run on a landing thread; the commits are made
here, between two consumes. A round due by age lands while detection goes on; a round due
by size (the worker is behind: detection and landing side by side contend for the GIL), a
replayed intent (`smartcity_stream.replay`), a rebalance and the exit wait for theirs.

Waiting for the lake never stops the consuming for long (`_await`): while a landing step is
held up (a write failing and retried with backoff, or no answer for `STALL_AFTER_S`), the
worker pauses its partitions and goes on consuming, which keeps it in its group however
long the storage is away; it resumes them once the step is through, and nothing was
committed meanwhile. SIGTERM and `--until-idle` land everything in hand, commit and leave.

A crash anywhere before the commit replays from the last committed offset, and detection
goes on from the checkpoint the round that committed it wrote (`smartcity_stream.checkpoint`),
restored on every assignment: the replayed range finds the same anomalies under the same
ids, published again (readers deduplicate them by id); rows are not landed twice. A worker
taking a partition with an intent over holds its messages back until it has that exact
range, then detects and lands it at once, so the replay rewrites the same file names. A
rebalance lands what the revoked partitions have in hand before they go.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from collections.abc import Iterator
from concurrent.futures import Future, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from confluent_kafka import Consumer, Message, Producer, TopicPartition

from smartcity.lake import Lake
from smartcity.metrics_endpoint import serve
from smartcity.registry import RegistryFollower
from smartcity.settings import SENSOR_TYPES, Settings
from smartcity_stream import metrics
from smartcity_stream.buffer import (
    LandingBuffers,
    LandingPolicy,
    PartitionBuffer,
    TopicPartitionKey,
)
from smartcity_stream.checkpoint import load_checkpoint
from smartcity_stream.clock_guard import ClockGuard
from smartcity_stream.detection import SegmentDetector
from smartcity_stream.group import GROUP_ID, GroupMember, PartitionsLost
from smartcity_stream.live import LiveState
from smartcity_stream.progress import PartitionProgress, load_progress
from smartcity_stream.publisher import Publisher
from smartcity_stream.replay import Replays
from smartcity_stream.reporting import Reporter
from smartcity_stream.rounds import Lander, WrittenRound
from smartcity_stream.rules import RuleConfig, RuleEngine
from smartcity_stream.sensors import SensorFollower
from smartcity_stream.totals import WorkerTotals
from smartcity_stream.windows import TumblingWindows

log = logging.getLogger("smartcity.stream")

UNASSIGNED_PATIENCE_S = 60.0
STALL_CHECK_S = 0.1
"""How often a wait for the lake looks whether it is held up, and how long each consume
takes while it is."""


@dataclass(frozen=True)
class WorkerOptions:
    # A reading waits in the consume call before detection sees it, so the consume window
    # is short; `batch_size` caps a consume when the worker is behind. Landing has fixed
    # costs per round (a Parquet file per partition and hour, the progress records, a
    # synchronous commit), so rows gather until `land_messages` in all or `land_after_s`.
    batch_size: int = 50_000
    poll_timeout_s: float = 0.01
    land_messages: int = 50_000
    land_after_s: float = 1.0
    window_s: float = 60.0
    allowed_lateness_s: float = 30.0
    live_every_s: float = 1.0
    until_idle_s: float | None = None
    group_id: str = GROUP_ID
    worker_id: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    static_member: bool = False
    # Kafka's default: long enough to ride out a broker's SIGKILL (the controller fences it
    # after 9 s, then the group's coordinator moves and loads it); a shorter session makes
    # every member lose its partitions then. A dead worker's partitions wait this long.
    session_timeout_s: float = 45.0
    # Longest the loop may go without a consume before the group drops the worker. It
    # consumes on while the lake is away; what can still hold it is a rebalance callback
    # landing what it has in hand (no consume is allowed there). Tests shorten it.
    max_poll_interval_s: float = 900.0
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = None
    rules: RuleConfig = field(default_factory=RuleConfig)
    # How far a reading's event time may lie after / before its broker timestamp before it
    # is a bad clock's (`smartcity_stream.clock_guard`); None: the settings' bounds.
    event_time_ahead_s: float | None = None
    event_time_behind_s: float | None = None
    # librdkafka settings over the producer's own (`publish.worker_producer`).
    producer_settings: dict[str, Any] = field(default_factory=dict)


class StreamWorker:
    """One member of the `smartcity-stream` consumer group."""

    def __init__(
        self,
        settings: Settings,
        sensors: dict[str, dict[str, Any]],
        options: WorkerOptions,
        registry: RegistryFollower | None = None,
    ) -> None:
        """`sensors` are the active sensors; with `registry`, the worker follows it and
        takes a newly imported version into the same mapping (the rules share it)."""
        self.settings = settings
        self.options = options
        self.sensors = sensors
        self.lake = Lake.from_settings(settings)
        self.topic_types = {settings.reading_topic(t): t for t in SENSOR_TYPES}
        self.totals = WorkerTotals()
        self.live = LiveState(options.worker_id)
        self.buffers = LandingBuffers(LandingPolicy(options.land_messages, options.land_after_s))
        self.replays = Replays()
        self.group = GroupMember(
            settings,
            group_id=options.group_id,
            worker_id=options.worker_id,
            static_member=options.static_member,
            session_timeout_s=options.session_timeout_s,
            max_poll_interval_s=options.max_poll_interval_s,
            load_progress=self._load_progress,
        )
        self.publisher = Publisher(settings, self.totals, options.producer_settings)
        self.detector = SegmentDetector(
            sensors,
            ClockGuard(
                settings.event_time_ahead_s
                if options.event_time_ahead_s is None
                else options.event_time_ahead_s,
                settings.event_time_behind_s
                if options.event_time_behind_s is None
                else options.event_time_behind_s,
            ),
            TumblingWindows(options.window_s, options.allowed_lateness_s),
            RuleEngine(options.rules, sensors),
            self.live,
            self.publisher,
            self.totals,
        )
        self.lander = Lander(
            self.lake, self.group.progress, self.publisher, self.topic_types, self.totals
        )
        self.reporter = Reporter(
            self.lake,
            self.live,
            self.totals,
            self.group.progress,
            options.worker_id,
            options.live_every_s,
        )
        self.follower = SensorFollower(sensors, registry)
        self.stopping = False
        self._last_message_at = time.monotonic()
        # Messages a consume returned while the loop waited for the lake: taken next.
        self._stash: list[Message] = []
        self._rebalancing = False

    @property
    def producer(self) -> Producer:
        """The publisher's producer (a test wraps it to watch its queue)."""
        return self.publisher.producer

    @producer.setter
    def producer(self, producer: Producer) -> None:
        self.publisher.producer = producer

    def request_stop(self, *_: object) -> None:
        """SIGTERM/SIGINT: land what is in hand, commit, and leave."""
        self.stopping = True

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)

    def run(self) -> WorkerTotals:
        self.lake.ensure_root()
        server = None
        if self.options.metrics_port is not None:
            server = serve(
                metrics.REGISTRY,
                self.options.metrics_host,
                self.options.metrics_port,
                self.reporter.health,
            )
            self.metrics_port = server.server_port
        self.group.subscribe(
            list(self.topic_types), self._on_assign, self._on_revoke, self._on_lost
        )
        try:
            while not self.stopping:
                messages = self._next_messages()
                if messages:
                    self._last_message_at = time.monotonic()
                    if self.totals.first_batch_at is None:
                        self.totals.first_batch_at = time.perf_counter()
                    self.take(messages)
                elif self._idle_long_enough():
                    break
                for tp, batch, replay in self.replays.release(self.group.end_of):
                    self._take_segment(tp, batch, replay)
                if (step := self.lander.current) is not None and step.done():
                    self._step_round()
                if self.buffers.full():
                    self.land()
                elif self.buffers.due(time.monotonic()):
                    self._start_round()
                self.reporter.maybe_flush()
                self.group.maybe_update_lag()
                self.follower.follow()
            self.land()
        finally:
            self.buffers.clear()  # after a failure nothing more lands: it is replayed
            self.lander.close()
            self.reporter.close()
            self.follower.close()
            self.group.close()
            self.publisher.close()
            if server is not None:
                server.shutdown()
        return self.totals

    def _next_messages(self) -> list[Message]:
        if self._stash:
            stash, self._stash = self._stash, []
            return stash
        return self.group.consume(self.options.batch_size, self.options.poll_timeout_s)

    def _idle_long_enough(self) -> bool:
        """Idle: no message for `until_idle_s` and nothing left to read in the partitions held.

        A group still settling (no assignment yet) or a coordinator still loading (messages
        there but none fetched) is not idleness; the worker waits for it up to a minute.
        Rows still to land are not either: the lag is asked of the broker only once they
        are committed (asking at every short consume slows the landing thread's commit).
        """
        idle = self.options.until_idle_s
        if idle is None or time.monotonic() - self._last_message_at < idle:
            return False
        if len(self.buffers) or self.lander.current is not None:
            return False
        if self.group.update_lag() > 0 or not self.group.assigned_once:
            return time.monotonic() - self._last_message_at >= max(idle, UNASSIGNED_PATIENCE_S)
        return True

    def take(self, messages: list[Message]) -> None:
        """Detect on one consumed batch at once; its rows wait in the buffers to land."""
        started = time.perf_counter()
        for tp, batch, replay in self.replays.segments(self.group.batches(messages)):
            self._take_segment(tp, batch, replay)
        self.publisher.poll()
        metrics.BATCH_SECONDS.observe(time.perf_counter() - started)

    def _take_segment(self, tp: TopicPartitionKey, batch: list[Message], replay: bool) -> None:
        """Detect on a segment and buffer what it leaves; a replayed intent lands at once."""
        if tp not in self.group.progress:
            return  # revoked while an earlier segment of the batch landed
        detected = self.detector.detect(tp, self.topic_types[tp[0]], batch)
        self.buffers.add(
            tp,
            (batch[0].offset(), batch[-1].offset()),
            time.monotonic(),
            table=detected.table,
            anomalies=detected.anomalies,
            watermark=detected.watermark,
        )
        if replay:
            self.land([tp])

    def land(self, tps: list[TopicPartitionKey] | None = None) -> None:
        """Land the buffers of `tps` (all when None) now, after the round in flight: for a
        round due by size, a replayed intent, a rebalance and the exit."""
        self._finish_round()
        buffers = self.buffers.take(tps)
        if buffers:
            self._start(buffers)
            self._finish_round()

    def _start_round(self) -> None:
        """Hand every buffer to the landing thread, so detection goes on while the lake and
        the broker answer; a round still running is finished first (one round at a time
        keeps commits in order and what waits in memory bounded)."""
        self._finish_round()
        buffers = self.buffers.take()
        if buffers:
            self._start(buffers)

    def _start(self, buffers: dict[TopicPartitionKey, PartitionBuffer]) -> None:
        """Commit the round's intents here (from the landing thread, a synchronous commit
        was seen to wait out minutes while this thread consumed), then write it there. The
        buffers were just taken, nothing detected since: detection's state is exactly that
        after their ranges, which is what each partition's checkpoint keeps."""
        checkpoints = {
            tp: self.detector.checkpoint(tp, b.last_offset + 1) for tp, b in buffers.items()
        }
        self.group.commit_intents(buffers)
        self.lander.start(buffers, checkpoints)

    def _finish_round(self) -> None:
        """Take the round in flight, if any, through to its end."""
        while (step := self.lander.current) is not None:
            self._await(step)
            if self.lander.current is step:  # not taken on by a rebalance meanwhile
                self._step_round()

    def _step_round(self) -> None:
        self.lander.step(self._commit_round)

    def _commit_round(self, written: WrittenRound) -> None:
        self._commit(written.offsets(self.group.progress))

    def _commit(self, offsets: list[TopicPartition]) -> None:
        """Commit a round's offsets synchronously, fenced (`GroupMember.commit`)."""
        self.group.commit(offsets)

    def _await(self, step: Future[Any]) -> None:
        """Wait for a landing step. While the lake holds it up (`Lander.stalled`), every
        partition in hand is paused and the consumer polled on, so the worker stays in its
        group however long the storage is away; what a consume still returns (a partition
        assigned meanwhile) is taken once the step is through. Inside a rebalance callback,
        where no consume is allowed, it only waits."""
        warned = False
        while not step.done():
            if self._rebalancing or not self.lander.stalled():
                wait([step], timeout=STALL_CHECK_S)
                continue
            if not warned:
                warned = True
                log.warning(
                    "landing held up by the lake (%s): %d partitions paused while it retries",
                    self.lander.stall_reason(),
                    len(self.group.progress),
                )
            self.group.pause(set(self.group.progress))
            self._stash += self.group.consume(self.options.batch_size, STALL_CHECK_S)
            self.reporter.maybe_flush()
            self.group.maybe_update_lag()
        if self.group.paused:
            log.info("the lake answers again: %d partitions resumed", len(self.group.paused))
            self.group.resume_all()

    @contextmanager
    def _in_rebalance(self) -> Iterator[None]:
        self._rebalancing = True
        try:
            yield
        finally:
            self._rebalancing = False

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        with self._in_rebalance():
            self._last_message_at = time.monotonic()
            log.info("assigned %s", ", ".join(f"{tp.topic}/{tp.partition}" for tp in partitions))
            if partitions:
                for tp, intent in self.group.claim(partitions).items():
                    self.replays.expect(tp, intent)
                for tp in partitions:
                    self._restore((tp.topic, tp.partition))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """A rebalance takes partitions away: what they have in hand lands and is committed
        first, so the next owner goes on from there (a range still held back for an intent
        is left for it to replay)."""
        with self._in_rebalance():
            log.info("revoked %s", ", ".join(f"{tp.topic}/{tp.partition}" for tp in partitions))
            keys = [(tp.topic, tp.partition) for tp in partitions]
            self.land(keys)
            self._forget(keys)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        with self._in_rebalance():
            log.warning("lost %s", ", ".join(f"{tp.topic}/{tp.partition}" for tp in partitions))
            keys = [(tp.topic, tp.partition) for tp in partitions]
            unlanded = self.buffers.take(keys)
            self._forget(keys)
            if unlanded or self.lander.current is not None:
                names = ", ".join(f"{t}/{p}" for t, p in keys)
                raise PartitionsLost(f"partitions {names} lost with rows not landed or committed")

    def _restore(self, tp: TopicPartitionKey) -> None:
        """Detection goes on from the claimed partition's checkpoint at its committed offset;
        without one (a first start) its baselines start learning."""
        offset = self.group.progress[tp].committed_offset
        checkpoint = self.lander.writes(partial(load_checkpoint, self.lake, *tp, offset))
        if checkpoint is None:
            log.info("%s/%d: no detection checkpoint at offset %d", *tp, offset)
            return
        self.detector.restore(tp, checkpoint)
        log.info(
            "%s/%d: detection restored at offset %d (%d sensors)",
            *tp,
            offset,
            len(checkpoint.sensors),
        )

    def _forget(self, keys: list[TopicPartitionKey]) -> None:
        self.group.forget(keys)
        self.lander.forget(keys)
        for key in keys:
            self.replays.forget(key)
            self.detector.forget(key)
        gone = set(keys)
        self._stash = [m for m in self._stash if (m.topic(), m.partition()) not in gone]

    def _load_progress(self, topic: str, partition: int) -> PartitionProgress:
        """A partition's newest manifest, read again while the lake fails: a claim cannot
        go on without it."""
        return self.lander.writes(partial(load_progress, self.lake, topic, partition))
