"""The stream worker's loop: detect on every short consume, land in rounds, commit after.

Each consume is short (`poll_timeout_s`, 10 ms at the live rate; up to `batch_size`
messages when behind), and its messages go straight through detection: decode and check
every message (bad ones to the dead-letter topic with the reason), windows, rules, anomalies
published, live state. The valid rows then wait in a buffer per topic-partition
(`smartcity_stream.buffer`) until a landing round is due (`land_messages` in all, or the
oldest waited `land_after_s`). A round, per partition: commit the buffered offset range as
the intent in the committed offset's metadata (fenced: below), write it with the names of
its files into the progress manifest too, land the rows as Parquet files named by their
offsets, wait until every dead letter and anomaly is acknowledged, commit the offsets
synchronously, and only then record the new progress. Rounds run one at a time on a landing
thread, so detection never waits for the lake (an object store takes a round trip per
write), except when a round is due while the previous one still runs; the commits are made
on the consuming thread, between two consumes.

A crash anywhere before the commit replays from the last committed offset, and detection
state, being in memory, starts again with it: anomalies and dead letters of the replayed
range are published again (an anomaly keeps its id, so readers deduplicate it), rows are not
landed twice. A worker taking a partition with an intent over holds its messages back until
it has that exact range, then detects and lands it at once, so the replay rewrites the same
file names. A rebalance lands what the revoked partitions have in hand before they go;
SIGTERM and `--until-idle` land everything in hand before the worker leaves.

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

import logging
import os
import signal
import socket
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar

import numpy as np
import orjson
import pyarrow as pa
from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)
from tenacity import Retrying, retry_if_exception, retry_if_exception_type, wait_exponential

from smartcity.contract import ContractError, ReadingDecoder
from smartcity.ingest import produce
from smartcity.kafka import client_config
from smartcity.lake import Lake
from smartcity.metrics_endpoint import serve
from smartcity.registry import RegistryFollower
from smartcity.settings import SENSOR_TYPES, Settings
from smartcity_stream import clock_guard, metrics
from smartcity_stream.buffer import (
    LandingBuffers,
    LandingPolicy,
    PartitionBuffer,
    TopicPartitionKey,
)
from smartcity_stream.columns import Readings
from smartcity_stream.landing import (
    LandingFile,
    anomaly_files,
    landing_files,
    rows_to_table,
    write_files,
)
from smartcity_stream.live import LiveSnapshot, LiveState, latest_per_sensor
from smartcity_stream.progress import (
    OwnerMark,
    PartitionProgress,
    drop_older_manifests,
    load_progress,
    save_progress,
)
from smartcity_stream.publish import TRUNCATED, dead_letter, message_limit, worker_producer
from smartcity_stream.rules import MEASURES, Finding, RuleConfig, RuleEngine
from smartcity_stream.windows import TumblingWindows, WindowView

log = logging.getLogger("smartcity.stream")

GROUP_ID = "smartcity-stream"
UNASSIGNED_PATIENCE_S = 60.0
LAG_EVERY_S = 5.0
LAKE_WRITERS = 8
T = TypeVar("T")


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
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = None
    rules: RuleConfig = field(default_factory=RuleConfig)
    # How far a reading's event time may lie after / before its broker timestamp before it
    # is a bad clock's (`smartcity_stream.clock_guard`); None: the settings' bounds.
    event_time_ahead_s: float | None = None
    event_time_behind_s: float | None = None
    # librdkafka settings over the producer's own (`publish.worker_producer`).
    producer_settings: dict[str, Any] = field(default_factory=dict)


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


@dataclass
class WorkerTotals:
    consumed: int = 0
    landed: int = 0
    dead_letters: int = 0
    anomalies: int = 0
    late: int = 0
    rounds: int = 0
    files: int = 0
    by_reason: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    # perf_counter when the first batch arrived and when the last round was committed: the
    # span a throughput figure divides by (start-up and the idle wait at the end excluded).
    first_batch_at: float | None = None
    last_batch_at: float | None = None


class DeliveryFailed(RuntimeError):
    """The broker did not acknowledge a dead letter or an anomaly; the range is replayed."""


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
        self.registry = registry
        self.lake = Lake.from_settings(settings)
        self.decoder = ReadingDecoder()
        self.clocks = clock_guard.ClockGuard(
            settings.event_time_ahead_s
            if options.event_time_ahead_s is None
            else options.event_time_ahead_s,
            settings.event_time_behind_s
            if options.event_time_behind_s is None
            else options.event_time_behind_s,
        )
        self.windows = TumblingWindows(options.window_s, options.allowed_lateness_s)
        self.rules = RuleEngine(options.rules, sensors)
        self.live = LiveState(options.worker_id)
        self.totals = WorkerTotals()
        self.topic_types = {settings.reading_topic(t): t for t in SENSOR_TYPES}
        self.progress: dict[TopicPartitionKey, PartitionProgress] = {}
        self.buffers = LandingBuffers(LandingPolicy(options.land_messages, options.land_after_s))
        # Per partition taken over with an intent: its range, and the messages held back
        # until that whole range is in hand.
        self.intents: dict[TopicPartitionKey, tuple[int, int]] = {}
        self.held: dict[TopicPartitionKey, list[Message]] = {}
        self._lander = ThreadPoolExecutor(1, thread_name_prefix="landing")
        self._writers = ThreadPoolExecutor(LAKE_WRITERS, thread_name_prefix="lake-write")
        self._round: Future[WrittenRound | None] | None = None
        self._manifest_written: set[TopicPartitionKey] = set()
        self._live_writer = ThreadPoolExecutor(1, thread_name_prefix="live")
        self._live_write: Future[None] | None = None
        self.stopping = False
        self._delivery_errors: list[str] = []
        self._last_message_at = time.monotonic()
        self._last_live_at = 0.0
        self._assigned_once = False
        self._last_lag_at = 0.0
        self.consumer = Consumer(
            client_config(
                settings,
                **{
                    "group.id": options.group_id,
                    "enable.auto.commit": False,
                    "auto.offset.reset": "earliest",
                    "max.poll.interval.ms": 900_000,
                    "fetch.max.bytes": 104_857_600,
                    "queued.max.messages.kbytes": 262_144,
                    "session.timeout.ms": int(options.session_timeout_s * 1000),
                    **({"group.instance.id": options.worker_id} if options.static_member else {}),
                },
            )
        )
        self.dead_letter_limit = message_limit(settings, settings.topic("deadletter"))
        self.producer = worker_producer(settings, self.dead_letter_limit, options.producer_settings)

    def request_stop(self, *_: object) -> None:
        """SIGTERM/SIGINT: land what is in hand, commit, and leave."""
        self.stopping = True

    def run(self) -> WorkerTotals:
        self.lake.ensure_root()
        server = None
        if self.options.metrics_port is not None:
            server = serve(
                metrics.REGISTRY, self.options.metrics_host, self.options.metrics_port, self.health
            )
            self.metrics_port = server.server_port
        self.consumer.subscribe(
            list(self.topic_types),
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        try:
            while not self.stopping:
                messages = self.consumer.consume(
                    self.options.batch_size, timeout=self.options.poll_timeout_s
                )
                if messages:
                    self._last_message_at = time.monotonic()
                    if self.totals.first_batch_at is None:
                        self.totals.first_batch_at = time.perf_counter()
                    self.take(messages)
                elif self._idle_long_enough():
                    break
                if self.held:
                    self._release_held()
                if self._round is not None and self._round.done():
                    self._step_round()
                if self.buffers.full():
                    self.land()
                elif self.buffers.due(time.monotonic()):
                    self._start_round()
                self._maybe_flush_live()
                self._maybe_update_lag()
                self._follow_registry()
            self.land()
        finally:
            self.buffers.clear()  # after a failure nothing more lands: it is replayed
            self._lander.shutdown()
            self._writers.shutdown()
            self._live_writer.shutdown()
            self._maybe_flush_live(force=True)
            self.consumer.close()
            self.producer.flush(10)
            if server is not None:
                server.shutdown()
        return self.totals

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)

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
        if len(self.buffers) or self._round is not None:
            return False
        if self._update_lag() > 0 or not self._assigned_once:
            return time.monotonic() - self._last_message_at >= max(idle, UNASSIGNED_PATIENCE_S)
        return True

    def _follow_registry(self) -> None:
        """A newly imported registry version replaces the sensors in place, so readings of
        new sensors are taken from the next batch on, without a restart."""
        if self.registry is not None and self.registry.refresh():
            self.sensors.clear()
            self.sensors.update(self.registry.current.active_sensors())
            log.info("sensor registry version %d in force", self.registry.current.version)

    def _maybe_update_lag(self) -> None:
        now = time.monotonic()
        if now - self._last_lag_at >= LAG_EVERY_S:
            self._last_lag_at = now
            self._update_lag(cached=True)

    def _update_lag(self, cached: bool = False) -> int:
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

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._last_message_at = time.monotonic()
        self._assigned_once = self._assigned_once or bool(partitions)
        log.info("assigned %s", ", ".join(f"{tp.topic}/{tp.partition}" for tp in partitions))
        if partitions:
            self._claim(partitions)

    def _claim(self, partitions: list[TopicPartition]) -> None:
        """Take the partitions over: the committed offset and its owner mark from the broker,
        the files and watermark from the newest manifest; then commit the same offset under
        a higher epoch, which the previous owner's commits can never overtake."""
        committed = self._retry_commit_call(lambda: self.consumer.committed(partitions, 30))
        claims = []
        for tp in committed:
            key = (tp.topic, tp.partition)
            mark = OwnerMark.decode(tp.metadata)
            progress = load_progress(self.lake, tp.topic, tp.partition)
            progress.epoch = max(mark.epoch, progress.epoch) + 1
            progress.owner = self.options.worker_id
            progress.committed_offset = tp.offset if tp.offset >= 0 else self._log_start(tp)
            progress.take_over()
            self.progress[key] = progress
            if mark.pending is not None:
                self.intents[key] = mark.pending
            claims.append(
                TopicPartition(
                    tp.topic,
                    tp.partition,
                    progress.committed_offset,
                    metadata=OwnerMark(progress.epoch, mark.pending).encode(),
                )
            )
        self._commit_marks(claims)

    def _log_start(self, tp: TopicPartition) -> int:
        """Where a partition that has no commit yet starts (`auto.offset.reset=earliest`)."""
        low, _ = self.consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), 30)
        return max(low, 0)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """A rebalance takes partitions away: what they have in hand lands and is committed
        first, so the next owner goes on from there (a range still held back for an intent
        is left for it to replay)."""
        log.info("revoked %s", ", ".join(f"{tp.topic}/{tp.partition}" for tp in partitions))
        keys = [(tp.topic, tp.partition) for tp in partitions]
        self.land(keys)
        self._forget(keys)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.warning("lost %s", ", ".join(f"{tp.topic}/{tp.partition}" for tp in partitions))
        keys = [(tp.topic, tp.partition) for tp in partitions]
        unlanded = self.buffers.take(keys)
        self._forget(keys)
        if unlanded or self._round is not None:
            names = ", ".join(f"{t}/{p}" for t, p in keys)
            raise PartitionsLost(f"partitions {names} lost with rows not landed or committed")

    def _forget(self, keys: list[TopicPartitionKey]) -> None:
        for key in keys:
            self._manifest_written.discard(key)
            self.progress.pop(key, None)
            self.intents.pop(key, None)
            self.held.pop(key, None)

    def take(self, messages: list[Message]) -> None:
        """Detect on one consumed batch at once; its rows wait in the buffers to land."""
        started = time.perf_counter()
        for tp, batch, replay in self._segments(messages):
            self._detect_segment(tp, batch)
            if replay:
                self.land([tp])
        self.producer.poll(0)
        metrics.BATCH_SECONDS.observe(time.perf_counter() - started)

    def _segments(
        self, messages: list[Message]
    ) -> list[tuple[TopicPartitionKey, list[Message], bool]]:
        """(partition, messages, replays an intent) in the order to detect them: an intent's
        exact range first, once all of it is in hand, then what follows it."""
        grouped: dict[TopicPartitionKey, list[Message]] = {}
        for message in messages:
            if message.error() is not None:
                if message.error().code() != KafkaError._PARTITION_EOF:
                    log.warning("consume error: %s", message.error())
                continue
            grouped.setdefault((message.topic(), message.partition()), []).append(message)
        segments = []
        for tp, batch in grouped.items():
            if tp not in self.progress:
                continue
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

    def _release_held(self) -> None:
        """Land a range held back for an intent short of its end when the partition has
        nothing more to give (its end, as the last fetch saw it, is right after it)."""
        for tp, batch in list(self.held.items()):
            _, high = self.consumer.get_watermark_offsets(TopicPartition(*tp), cached=True)
            if 0 <= high <= batch[-1].offset() + 1:
                del self.held[tp], self.intents[tp]
                self._detect_segment(tp, batch)
                self.land([tp])

    def _detect_segment(self, tp: TopicPartitionKey, batch: list[Message]) -> None:
        """Check each message, run windows and rules; the valid rows join the partition's
        buffer with the segment's anomalies."""
        sensor_type = self.topic_types[tp[0]]
        decode, sensors, partition = self.decoder.decode, self.sensors, tp[1]
        rows: list[dict[str, Any]] = []
        accepted: list[Message] = []
        for message in batch:
            try:
                reading = decode(message.value() or b"")
            except ContractError as error:
                self._dead_letter(message, error.reason, str(error))
                continue
            if reading["sensor_type"] != sensor_type:
                self._dead_letter(message, "wrong_topic", f"{reading['sensor_type']} on {tp[0]}")
                continue
            if reading["sensor_id"] not in sensors:
                self._dead_letter(
                    message,
                    "unknown_sensor",
                    f"{reading['sensor_id']} is not an active sensor of the registry",
                )
                continue
            reading["kafka_partition"] = partition
            reading["kafka_offset"] = message.offset()
            rows.append(reading)
            accepted.append(message)
        self.totals.consumed += len(batch)
        metrics.CONSUMED.labels(tp[0]).inc(len(batch))
        table, anomalies, watermark = None, [], None
        if rows:
            table, rows, broker = self._refuse_bad_clocks(
                rows_to_table(sensor_type, rows), rows, accepted
            )
        if table is not None:
            readings = Readings.from_table(sensor_type, table, rows)
            anomalies = self._detect(
                tp, readings, clock_guard.advance_ms(readings.event_ms, broker)
            )
            watermark = _iso(max(self.windows.watermark_ms(tp), 0))
        self.buffers.add(
            tp,
            (batch[0].offset(), batch[-1].offset()),
            time.monotonic(),
            table=table,
            anomalies=anomalies,
            watermark=watermark,
        )

    def _refuse_bad_clocks(
        self, table: pa.Table, rows: list[dict[str, Any]], messages: list[Message]
    ) -> tuple[pa.Table | None, list[dict[str, Any]], np.ndarray]:
        """Dead-letter the readings dated too far from their broker timestamps; the table
        (None if no reading is left), readings and broker timestamps of the rest
        (`smartcity_stream.clock_guard`)."""
        broker = np.fromiter(map(clock_guard.broker_ms, messages), np.int64, len(messages))
        event_ms = table.column("event_time").to_numpy().view(np.int64)
        refused = self.clocks.out_of_range(event_ms, broker)
        if not refused.any():
            return table, rows, broker
        for row in np.flatnonzero(refused).tolist():
            reading = rows[row]
            error = self.clocks.error(reading["event_time"], int(event_ms[row]), int(broker[row]))
            self._dead_letter(messages[row], clock_guard.REASON, error)
        kept = ~refused
        return (
            table.filter(pa.array(kept)) if kept.any() else None,
            [row for row, keep in zip(rows, kept.tolist(), strict=True) if keep],
            broker[kept],
        )

    def _start_round(self) -> None:
        """Hand every buffer to the landing thread, so detection goes on while the lake and
        the broker answer; a round still running is finished first (one round at a time
        keeps commits in order and what waits in memory bounded). Its intents are committed
        here first: commits stay on this thread (from the landing thread, a synchronous
        commit was seen to wait out minutes while this thread consumed).

        Only for a round due by age (the worker keeps up, a reading's latency counts): a
        round due by size (the worker is behind) lands on this thread, since a landing
        thread and its writers contending for the GIL with detection cost the consuming
        thread a quarter of its rate."""
        self._finish_round()
        buffers = self.buffers.take()
        self._commit_intents(buffers)
        self._round = self._lander.submit(self._write_round, buffers)

    def _finish_round(self) -> None:
        """Take the round in flight, if any, through to its end."""
        while self._round is not None:
            self._step_round()

    def _step_round(self) -> None:
        """Wait for the round's current step (its failure is the worker's). Once its files
        are durable, commit it here and record its progress on the landing thread."""
        assert self._round is not None
        running, self._round = self._round, None
        written = running.result()
        if written is not None:
            self._commit(written.offsets(self.progress))
            self._round = self._lander.submit(self._record_round, written)

    def land(self, tps: list[TopicPartitionKey] | None = None) -> None:
        """Land the buffers of `tps` (all when None) now, after the round in flight: for a
        replayed intent, a rebalance and the exit."""
        self._finish_round()
        buffers = self.buffers.take(tps)
        if buffers:
            self._commit_intents(buffers)
            written = self._write_round(buffers)
            self._commit(written.offsets(self.progress))
            self._record_round(written)

    def _commit_intents(self, buffers: dict[TopicPartitionKey, PartitionBuffer]) -> None:
        """The fenced step of a round: each range as the intent of its partition's owner
        mark, at the offset still committed (module docstring)."""
        self._commit_marks(
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

    def _write_round(self, buffers: dict[TopicPartitionKey, PartitionBuffer]) -> WrittenRound:
        """The steps of a round before its commit (module docstring); the writes of each
        step run side by side (an object store answers each after a round trip). The intent
        in the manifest names the files about to land, so whoever finds the range committed
        but not recorded (the owner died or was fenced in between) records them."""
        started = time.perf_counter()
        plans = {tp: self._plan(tp, buffer) for tp, buffer in buffers.items()}
        for tp, buffer in buffers.items():
            self.progress[tp].intend(buffer.first_offset, buffer.last_offset, plans[tp].files)
        self._save_manifests(list(plans))
        sizes = self._durably_each(
            [partial(write_files, self.lake, [*p.files, *p.anomaly_files]) for p in plans.values()]
        )
        self._publish_and_wait()
        return WrittenRound(buffers, plans, dict(zip(plans, sizes, strict=True)), started)

    def _record_round(self, written: WrittenRound) -> None:
        """After the commit: the partitions' new progress (committed offset, watermark,
        files per hour) replaces their intent."""
        for tp, buffer in written.buffers.items():
            progress = self.progress[tp]
            progress.committed_offset = buffer.last_offset + 1
            progress.watermark = buffer.watermark or progress.watermark
            progress.settle()
        self._save_manifests(list(written.buffers))
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
        self._durably_each([partial(save_progress, self.lake, self.progress[tp]) for tp in tps])
        self._durably_each(
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

    def _detect(
        self, tp: TopicPartitionKey, readings: Readings, advance_ms: np.ndarray
    ) -> list[dict[str, Any]]:
        """Windows and rules over the segment at once; live state from each sensor's last.
        `advance_ms`: how far each reading may move the partition's watermark."""
        late_before = self.windows.late_events
        window = self.windows.add_batch(tp, readings, MEASURES[readings.sensor_type], advance_ms)
        anomalies = [
            self._anomaly(readings, row, window, finding)
            for row, finding in self.rules.evaluate_batch(readings, window)
        ]
        self.live.update_latest(latest_per_sensor(readings))
        last = [readings.rows[row] for row in readings.groups.last_rows().tolist()]
        metrics.record_congestion(
            {row["sensor_id"]: row.get("congestion_level") for row in last}, self.sensors
        )
        for closed in self.windows.close_ready():
            self.live.add_window(closed.as_row())
        late = self.windows.late_events - late_before
        self.totals.late += late
        metrics.LATE_EVENTS.inc(late)
        metrics.WATERMARK.labels(tp[0], str(tp[1])).set(
            max(self.windows.watermark_ms(tp), 0) / 1000
        )
        return anomalies

    def _anomaly(
        self, readings: Readings, row: int, window: WindowView, finding: Finding
    ) -> dict[str, Any]:
        reading = readings.rows[row]
        event_ms = int(readings.event_ms[row])
        joined = bool(window.joined[row])
        start = int(window.start_ms[row]) if joined else event_ms
        end = int(window.end_ms[row]) if joined else event_ms
        detected_ms = int(time.time() * 1000)
        anomaly = {
            "anomaly_id": uuid.uuid5(
                uuid.NAMESPACE_URL, f"{reading['sensor_id']}/{finding.kind}/{reading['seq']}"
            ).hex,
            "sensor_id": reading["sensor_id"],
            "sensor_type": reading["sensor_type"],
            "kind": finding.kind,
            "severity": finding.severity,
            "event_time": event_ms,
            "window_start": start,
            "window_end": end,
            "detected_at": detected_ms,
            "values": finding.values,
        }
        message = {
            **anomaly,
            "seq": reading["seq"],
            "event_time": reading["event_time"],
            "window_start": _iso(start),
            "window_end": _iso(end),
            "detected_at": _iso(detected_ms),
        }
        produce(
            self.producer,
            self.settings.topic("anomalies"),
            reading["sensor_id"].encode(),
            orjson.dumps(message),
            self._delivered,
        )
        self.live.add_anomaly(anomaly)
        self.totals.anomalies += 1
        metrics.ANOMALIES.labels(finding.kind, finding.severity).inc()
        metrics.EVENT_TO_ANOMALY.observe(max(detected_ms - event_ms, 0) / 1000)
        return anomaly

    def _dead_letter(self, message: Message, reason: str, error: str) -> None:
        """The message as it came, its reason and source in headers; cut to what the
        dead-letter topic takes if it is larger (`smartcity_stream.publish`)."""
        key, value, headers = dead_letter(message, reason, error, self.dead_letter_limit)
        if any(name == TRUNCATED for name, _ in headers):
            log.warning(
                "dead letter of %s/%d@%d cut to %d bytes",
                message.topic(),
                message.partition(),
                message.offset(),
                len(key or b"") + len(value or b""),
            )
        produce(
            self.producer,
            self.settings.topic("deadletter"),
            key,
            value,
            self._delivered,
            headers,
        )
        self.producer.poll(0)
        self.totals.dead_letters += 1
        self.totals.by_reason[reason] += 1
        metrics.DEAD_LETTERS.labels(reason).inc()

    def _delivered(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self._delivery_errors.append(str(error))

    def _publish_and_wait(self) -> None:
        """Wait until every dead letter and anomaly is acknowledged (a broker that is still
        loading its coordinators only delays them); a delivery error fails the round and
        stops the worker: nothing of the round was committed, so it is replayed."""
        while remaining := self.producer.flush(30):
            log.warning("%d dead letters/anomalies still unacknowledged; waiting", remaining)
        if self._delivery_errors:
            errors, self._delivery_errors = self._delivery_errors, []
            raise DeliveryFailed(f"{len(errors)} not delivered: {errors[:3]}")

    def _commit(self, offsets: list[TopicPartition]) -> None:
        """Commit a round's offsets synchronously (see `_commit_marks`)."""
        self._commit_marks(offsets)

    def _commit_marks(self, offsets: list[TopicPartition]) -> None:
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

    def _durably_each(self, writes: list[Callable[[], T]]) -> list[T]:
        """Run lake writes side by side, each retried until it succeeds."""
        return list(self._writers.map(self._durably, writes))

    def _durably(self, write: Callable[[], T]) -> T:
        """Retry a lake write with backoff until it succeeds; nothing is committed meanwhile."""
        retrying = Retrying(
            retry=retry_if_exception_type(OSError),
            wait=wait_exponential(multiplier=0.2, max=10),
            before_sleep=lambda _: metrics.WRITE_ERRORS.inc(),
            reraise=True,
        )
        return retrying(write)

    def _maybe_flush_live(self, force: bool = False) -> None:
        """Every `live_every_s`, write a snapshot of the live state on the live thread (one
        write at a time: a slow store makes the cadence slower, not detection); `force`
        writes it here and now (the exit)."""
        now = time.monotonic()
        writing = self._live_write is not None and not self._live_write.done()
        if not force and (writing or now - self._last_live_at < self.options.live_every_s):
            return
        self._last_live_at = now
        snapshot = self.live.snapshot(self.status())
        if force:
            self._write_live(snapshot)
        else:
            self._live_write = self._live_writer.submit(self._write_live, snapshot)

    def _write_live(self, snapshot: LiveSnapshot) -> None:
        try:
            snapshot.write(self.lake)
        except OSError as error:
            self.live.changed()
            metrics.WRITE_ERRORS.inc()
            log.warning("live state not written: %s", error)

    def status(self) -> dict[str, Any]:
        return {
            "worker_id": self.options.worker_id,
            "consumed": self.totals.consumed,
            "landed": self.totals.landed,
            "dead_letters": self.totals.dead_letters,
            "dead_letters_by_reason": dict(self.totals.by_reason),
            "anomalies": self.totals.anomalies,
            "late_events": self.totals.late,
            "watermarks": {
                f"{t}/{p}": progress.watermark for (t, p), progress in self.progress.items()
            },
            "assigned": sorted(f"{t}/{p}" for t, p in self.progress),
        }

    def health(self) -> dict[str, Any]:
        return {"status": "ok", **self.status()}


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


def _iso(millis: int) -> str:
    return (
        datetime.fromtimestamp(millis / 1000, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )
