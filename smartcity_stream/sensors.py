"""The active sensors, kept up to date with the registry without a restart.

A look-up of the registry reads the lake, which may hang until its request timeout while
the store is down, so it runs on a thread of its own; the consuming thread only swaps in a
version a finished look-up found, between two consumes.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from smartcity.registry import RegistryFollower

log = logging.getLogger("smartcity.stream")


class SensorFollower:
    """Follows `registry` (if any) into the `sensors` mapping, in place: the rules and the
    checks share that mapping."""

    def __init__(
        self, sensors: dict[str, dict[str, Any]], registry: RegistryFollower | None
    ) -> None:
        self.sensors = sensors
        self.registry = registry
        self._lookup: Future[bool] | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._next_at = 0.0

    def follow(self) -> None:
        """Between two consumes: take what a finished look-up found; start the next one
        every half of the follower's period when none runs (the follower's own clock
        decides whether it reads the lake)."""
        if self.registry is None:
            return
        if self._lookup is not None:
            if not self._lookup.done():
                return
            changed, self._lookup = self._lookup.result(), None
            if changed:
                self.sensors.clear()
                self.sensors.update(self.registry.current.active_sensors())
                log.info("sensor registry version %d in force", self.registry.current.version)
        now = time.monotonic()
        if now >= self._next_at:
            self._next_at = now + self.registry.every_s / 2
            if self._pool is None:
                self._pool = ThreadPoolExecutor(1, thread_name_prefix="registry")
            self._lookup = self._pool.submit(self.registry.refresh)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)
