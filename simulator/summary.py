"""What a run sent, as the broker confirmed it: the reference that loss is measured against.

Written as JSON (`--summary`) and printed as a table. `readings_acknowledged` per topic is the
number of distinct (sensor_id, seq) pairs that arrived intact; `last_acknowledged_seq` per
sensor is where a consumer that lost nothing must have got to.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from simulator.anomalies import PlantedAnomaly
from simulator.producer import ReadingProducer


@dataclass(frozen=True)
class TopicSummary:
    topic: str
    produced: int
    acknowledged: int
    readings_acknowledged: int
    failed: int
    faults: dict[str, int]
    anomalies_planted: int


@dataclass(frozen=True)
class RunSummary:
    mode: str  # "live" or "backfill"
    seed: int
    sensors: dict[str, int]
    interval_s: float
    first_event_time: str
    end_event_time: str  # exclusive: the event time of the step that was not sent
    steps: int
    wall_seconds: float
    acknowledged_per_s: float
    interrupted: bool
    unconfirmed: int  # neither acknowledged nor failed when the final flush timed out
    topics: dict[str, TopicSummary]
    last_acknowledged_seq: dict[str, int]
    delivery_errors: dict[str, int] = field(default_factory=dict)
    live_weather: dict[str, int] | None = None

    @property
    def acknowledged(self) -> int:
        return sum(t.acknowledged for t in self.topics.values())

    @property
    def failed(self) -> int:
        return sum(t.failed for t in self.topics.values())

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self), option=orjson.OPT_INDENT_2)

    def write(self, path: Path) -> None:
        write_atomically(path, self.to_json() + b"\n")

    def print(self, console: Console) -> None:
        table = Table("topic", "acknowledged", "readings", "failed", "faults", "anomalies")
        table.caption = "faults by kind, per sensor last seq: in the summary file"
        for t in self.topics.values():
            table.add_row(
                t.topic,
                f"{t.acknowledged:,}",
                f"{t.readings_acknowledged:,}",
                f"{t.failed:,}",
                f"{sum(t.faults.values()):,}",
                f"{t.anomalies_planted:,}",
            )
        console.print(table)
        state = "interrupted, flushed" if self.interrupted else "done"
        console.print(
            f"{state}: {self.acknowledged:,} messages acknowledged in {self.wall_seconds:.1f} s "
            f"({self.acknowledged_per_s:,.0f} msgs/s), {self.failed:,} failed, "
            f"{self.unconfirmed:,} unconfirmed; event time {self.first_event_time} .. "
            f"{self.end_event_time}"
        )


def build_summary(
    producer: ReadingProducer,
    planted: list[PlantedAnomaly],
    topics: dict[str, str],
    **run: Any,
) -> RunSummary:
    """Combine the producer's delivery counts with the run's facts (`run` = the other fields)."""
    topic_summaries = {
        sensor_type: TopicSummary(
            topic=topics[sensor_type],
            produced=counts.produced,
            acknowledged=counts.acknowledged,
            readings_acknowledged=counts.readings_acknowledged,
            failed=counts.failed,
            faults=counts.faults(),
            anomalies_planted=sum(1 for a in planted if a.sensor_type == sensor_type),
        )
        for sensor_type, counts in producer.counts.items()
    }
    wall = run["wall_seconds"]
    acknowledged = sum(t.acknowledged for t in topic_summaries.values())
    return RunSummary(
        topics=topic_summaries,
        last_acknowledged_seq={
            key.decode(): seq for key, seq in sorted(producer.last_acknowledged_seq.items())
        },
        delivery_errors=dict(producer.errors),
        acknowledged_per_s=acknowledged / wall if wall > 0 else 0.0,
        **run,
    )


def write_ground_truth(path: Path, planted: list[PlantedAnomaly]) -> None:
    """The planted anomalies as JSON lines, ordered by start, type and sensor."""
    ordered = sorted(planted, key=lambda a: (a.start_ms, a.sensor_type, a.sensor_id))
    write_atomically(path, b"".join(a.to_json() + b"\n" for a in ordered))


def write_atomically(path: Path, data: bytes) -> None:
    """Readers never see half a file: write beside it, then rename over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_bytes(data)
    os.replace(partial, path)
