"""Detection of one segment (one partition's messages of one consume), all of it at once.

Check each message (a bad one to the dead-letter topic with its reason), refuse bad clocks
(`smartcity_stream.clock_guard`), then windows and rules over the segment's columns, each
anomaly published as it is found, the live state brought up to date. What is left for the
landing (the valid rows as a table, the anomalies, the watermark) is returned, not kept:
the caller decides when it lands.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
from confluent_kafka import Message

from smartcity.contract import ContractError, ReadingDecoder
from smartcity_stream import clock_guard, metrics
from smartcity_stream.buffer import TopicPartitionKey
from smartcity_stream.checkpoint import Checkpoint
from smartcity_stream.columns import Readings
from smartcity_stream.landing import rows_to_table
from smartcity_stream.live import LiveState, latest_per_sensor
from smartcity_stream.publisher import Publisher
from smartcity_stream.rules import MEASURES, Finding, RuleEngine
from smartcity_stream.totals import WorkerTotals
from smartcity_stream.windows import TumblingWindows, WindowView


@dataclass(frozen=True)
class Detected:
    """What a segment leaves for its landing: the valid rows (None: not one), the anomalies
    found in them, and the partition's watermark after them (None: no valid row)."""

    table: pa.Table | None
    anomalies: list[dict[str, Any]]
    watermark: str | None


class SegmentDetector:
    """Checks and detects segment after segment; windows and baselines live here."""

    def __init__(
        self,
        sensors: dict[str, dict[str, Any]],
        clocks: clock_guard.ClockGuard,
        windows: TumblingWindows,
        rules: RuleEngine,
        live: LiveState,
        publisher: Publisher,
        totals: WorkerTotals,
    ) -> None:
        """`sensors`: the active sensors, a mapping the registry follower updates in place."""
        self.sensors = sensors
        self.decoder = ReadingDecoder()
        self.clocks = clocks
        self.windows = windows
        self.rules = rules
        self.live = live
        self.publisher = publisher
        self.totals = totals
        # The sensors each partition's readings came from: what its checkpoint holds (a
        # sensor's key keeps it on one partition of its type's topic).
        self._sensors_of: dict[TopicPartitionKey, set[str]] = {}

    def detect(self, tp: TopicPartitionKey, sensor_type: str, batch: list[Message]) -> Detected:
        """Check each message of the segment, run windows and rules over the valid ones."""
        decode, sensors, partition = self.decoder.decode, self.sensors, tp[1]
        dead_letter = self.publisher.dead_letter
        rows: list[dict[str, Any]] = []
        accepted: list[Message] = []
        for message in batch:
            try:
                reading = decode(message.value() or b"")
            except ContractError as error:
                dead_letter(message, error.reason, str(error))
                continue
            if reading["sensor_type"] != sensor_type:
                dead_letter(message, "wrong_topic", f"{reading['sensor_type']} on {tp[0]}")
                continue
            if reading["sensor_id"] not in sensors:
                dead_letter(
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
        if not rows:
            return Detected(None, [], None)
        table, rows, broker = self._refuse_bad_clocks(
            rows_to_table(sensor_type, rows), rows, accepted
        )
        if table is None:
            return Detected(None, [], None)
        readings = Readings.from_table(sensor_type, table, rows)
        anomalies = self._detect(tp, readings, clock_guard.advance_ms(readings.event_ms, broker))
        return Detected(table, anomalies, iso(max(self.windows.watermark_ms(tp), 0)))

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
            self.publisher.dead_letter(messages[row], clock_guard.REASON, error)
        kept = ~refused
        return (
            table.filter(pa.array(kept)) if kept.any() else None,
            [row for row, keep in zip(rows, kept.tolist(), strict=True) if keep],
            broker[kept],
        )

    def _detect(
        self, tp: TopicPartitionKey, readings: Readings, advance_ms: np.ndarray
    ) -> list[dict[str, Any]]:
        """Windows and rules over the segment at once; live state from each sensor's last.
        `advance_ms`: how far each reading may move the partition's watermark."""
        late_before = self.windows.late_events
        self._sensors_of.setdefault(tp, set()).update(readings.sensor_ids)
        window = self.windows.add_batch(tp, readings, MEASURES[readings.sensor_type], advance_ms)
        anomalies = [
            self._publish(readings.rows[row], *anomaly_record(readings, row, window, finding))
            for row, finding in self.rules.evaluate_batch(readings)
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

    def checkpoint(self, tp: TopicPartitionKey, offset: int) -> bytes:
        """The partition's state after every message before `offset`, encoded: taken when
        its buffer goes to land, before anything more is detected
        (`smartcity_stream.checkpoint`)."""
        return Checkpoint(
            offset,
            self.windows.export(tp),
            self.rules.export(sorted(self._sensors_of.get(tp, ()))),
        ).encode()

    def restore(self, tp: TopicPartitionKey, checkpoint: Checkpoint) -> None:
        """Go on from a claimed partition's checkpoint as if this worker had detected it."""
        self.windows.restore(tp, checkpoint.windows)
        self.rules.restore(checkpoint.sensors)
        self._sensors_of[tp] = set(checkpoint.sensors)

    def forget(self, tp: TopicPartitionKey) -> None:
        """The partition went to another owner, who goes on from its checkpoint."""
        self.windows.forget(tp)
        self.rules.forget(self._sensors_of.pop(tp, ()))

    def _publish(
        self, reading: dict[str, Any], anomaly: dict[str, Any], message: dict[str, Any]
    ) -> dict[str, Any]:
        """Publish an anomaly at once, keep it in the live state; returns its lake row."""
        self.publisher.anomaly(reading["sensor_id"], message)
        self.live.add_anomaly(anomaly)
        self.totals.anomalies += 1
        metrics.ANOMALIES.labels(anomaly["kind"], anomaly["severity"]).inc()
        metrics.EVENT_TO_ANOMALY.observe(
            max(anomaly["detected_at"] - anomaly["event_time"], 0) / 1000
        )
        return anomaly


def anomaly_record(
    readings: Readings, row: int, window: WindowView, finding: Finding
) -> tuple[dict[str, Any], dict[str, Any]]:
    """An anomaly as the lake and the live state keep it (times in epoch ms), and as it is
    published (times as RFC 3339 text, with the reading's `seq`). Its id is a uuid5 of
    sensor, kind and seq, so a replay finds it again under the same id."""
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
        "window_start": iso(start),
        "window_end": iso(end),
        "detected_at": iso(detected_ms),
    }
    return anomaly, message


def iso(millis: int) -> str:
    return (
        datetime.fromtimestamp(millis / 1000, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )
