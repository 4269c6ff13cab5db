"""Detection quality: precision and recall per anomaly kind against planted ground truth.

A detection is a hit when a planted anomaly of the same sensor and kind spans its event
time (with a tolerance of one reporting interval either side); a planted anomaly is found
when at least one detection hits it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Span:
    sensor_id: str
    kind: str
    start_ms: int
    end_ms: int


@dataclass(frozen=True)
class KindQuality:
    kind: str
    planted: int
    detected: int
    true_positives: int
    found: int

    @property
    def precision(self) -> float:
        return self.true_positives / self.detected if self.detected else 1.0

    @property
    def recall(self) -> float:
        return self.found / self.planted if self.planted else 1.0


def detection_quality(
    planted: Iterable[Span], detections: Iterable[tuple[str, str, int]], tolerance_ms: int
) -> dict[str, KindQuality]:
    """Per planted kind; `detections` are (sensor_id, kind, event_ms)."""
    spans: dict[tuple[str, str], list[Span]] = defaultdict(list)
    for span in planted:
        spans[(span.sensor_id, span.kind)].append(span)
    kinds = {kind for _, kind in spans}
    hits: set[Span] = set()
    detected: dict[str, int] = defaultdict(int)
    true_positives: dict[str, int] = defaultdict(int)
    for sensor_id, kind, event_ms in detections:
        if kind not in kinds:
            continue
        detected[kind] += 1
        matched = [
            span
            for span in spans.get((sensor_id, kind), [])
            if span.start_ms - tolerance_ms <= event_ms < span.end_ms + tolerance_ms
        ]
        if matched:
            true_positives[kind] += 1
            hits.update(matched)
    return {
        kind: KindQuality(
            kind=kind,
            planted=sum(len(v) for (_, k), v in spans.items() if k == kind),
            detected=detected[kind],
            true_positives=true_positives[kind],
            found=sum(1 for span in hits if span.kind == kind),
        )
        for kind in sorted(kinds)
    }
