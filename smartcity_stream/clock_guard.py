"""Bad clocks: a reading's event time judged against when the broker took it.

A sensor or gateway with a wrong clock sends contract-valid readings dated anywhere:
9999-12-31 from an unset RTC counting the wrong way, 0001-01-01 from one that was never
set. Event time alone cannot tell such a reading from a real one, but the message's broker
timestamp can (the producer's send time, or the broker's append time on a topic that uses
`LogAppendTime`): a reading is taken before it is sent, and is sent soon after, unless a
gateway buffered it through an outage or a backfill replays the past.

So a reading whose event time lies more than `ahead_s` after its broker timestamp or more
than `behind_s` before it is refused (dead letter, reason `event_time_out_of_range`): it
joins no window and never moves the watermark. Within those bounds a reading is accepted,
but it moves its partition's watermark only up to its broker timestamp (`advance_ms`): a
clock two hours fast lands under its own (wrong) date and hour, and the partition's other
readings stay on time instead of being late for two hours.

The broker timestamp is in the log, so a replay decides exactly as the first pass did.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Message

REASON = "event_time_out_of_range"
NO_TIMESTAMP = -1


def broker_ms(message: Message) -> int:
    """The message's broker timestamp in ms since 1970, `NO_TIMESTAMP` if it has none."""
    kind, stamp = message.timestamp()
    return NO_TIMESTAMP if kind == TIMESTAMP_NOT_AVAILABLE else stamp


@dataclass(frozen=True)
class ClockGuard:
    """How far a reading's event time may lie from its broker timestamp, either way (the
    defaults and their reasons: `Settings.event_time_ahead_s`, `event_time_behind_s`)."""

    ahead_s: float
    behind_s: float

    def out_of_range(self, event_ms: np.ndarray, broker: np.ndarray) -> np.ndarray:
        """Per reading, True if its event time is beyond the bounds (never for a message
        without a broker timestamp: nothing to judge it by)."""
        known = broker >= 0
        ahead = event_ms - broker > self.ahead_s * 1000
        behind = broker - event_ms > self.behind_s * 1000
        return known & (ahead | behind)

    def error(self, event_time: str, event_ms: int, broker: int) -> str:
        """The dead letter's `error` header for a refused reading."""
        hours = (event_ms - broker) / 3_600_000
        side, limit = ("ahead of", self.ahead_s) if hours > 0 else ("behind", self.behind_s)
        return (
            f"event_time {event_time} is {abs(hours):.1f} h {side} the broker timestamp "
            f"({broker} ms), more than the {limit / 3600:g} h allowed"
        )


def advance_ms(event_ms: np.ndarray, broker: np.ndarray) -> np.ndarray:
    """Per reading, how far it may move its partition's watermark: its event time, capped
    by its broker timestamp when it has one (a reading cannot be taken after it was sent)."""
    return np.where(broker >= 0, np.minimum(event_ms, broker), event_ms)
