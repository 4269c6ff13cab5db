"""What one worker has done since it started: the counts behind its status, the table
`smartcity stream` prints at its exit and the throughput bench's figure."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field


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
