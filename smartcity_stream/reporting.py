"""What a worker tells operators and the API: its status (`/healthz`, and `status.json` in
the live state) and the live state itself, written every `every_s` on a thread of its own
from a snapshot, so that neither detection nor landing waits for it; a slow or failing
store makes the cadence slower, nothing else."""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from smartcity.lake import Lake
from smartcity_stream import metrics
from smartcity_stream.buffer import TopicPartitionKey
from smartcity_stream.live import LiveSnapshot, LiveState
from smartcity_stream.progress import PartitionProgress
from smartcity_stream.totals import WorkerTotals

log = logging.getLogger("smartcity.stream")


class Reporter:
    """The worker's status, and the live state's writes."""

    def __init__(
        self,
        lake: Lake,
        live: LiveState,
        totals: WorkerTotals,
        progress: dict[TopicPartitionKey, PartitionProgress],
        worker_id: str,
        every_s: float,
    ) -> None:
        self.lake = lake
        self.live = live
        self.totals = totals
        self.progress = progress
        self.worker_id = worker_id
        self.every_s = every_s
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="live")
        self._write: Future[None] | None = None
        self._last_at = 0.0

    def status(self) -> dict[str, Any]:
        return {
            "worker_id": self.worker_id,
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

    def maybe_flush(self, force: bool = False) -> None:
        """Every `every_s`, write a snapshot of the live state on the live thread (one
        write at a time); `force` writes it here and now (the exit)."""
        now = time.monotonic()
        writing = self._write is not None and not self._write.done()
        if not force and (writing or now - self._last_at < self.every_s):
            return
        self._last_at = now
        snapshot = self.live.snapshot(self.status())
        if force:
            self._write_snapshot(snapshot)
        else:
            self._write = self._writer.submit(self._write_snapshot, snapshot)

    def _write_snapshot(self, snapshot: LiveSnapshot) -> None:
        try:
            snapshot.write(self.lake)
        except OSError as error:
            self.live.changed()
            metrics.WRITE_ERRORS.inc()
            log.warning("live state not written: %s", error)

    def close(self) -> None:
        """The last snapshot, written once the one in flight is done (the exit)."""
        self._writer.shutdown()
        self.maybe_flush(force=True)
