"""PUBACKs in the order the PUBLISHes arrived, each one only once Kafka has the message.

MQTT 3.1.1 and 5 want a client's PUBACKs in arrival order; Kafka's delivery reports come in
any order across partitions. So a message waits at its place in line: the head of the line
is acknowledged as soon as it is delivered, and whatever is delivered behind it waits for it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable


class Pending:
    """One message in line: its packet id, and Kafka's verdict once it comes."""

    __slots__ = ("delivered", "mid")

    def __init__(self, mid: int) -> None:
        self.mid = mid
        self.delivered: bool | None = None


class InOrderAcks:
    """The line of messages received on one connection and not yet acknowledged."""

    def __init__(self) -> None:
        self._line: deque[Pending] = deque()

    def __len__(self) -> int:
        return len(self._line)

    def arrived(self, mid: int) -> Pending:
        pending = Pending(mid)
        self._line.append(pending)
        return pending

    def release(self, ack: Callable[[int], object]) -> tuple[int, int]:
        """Acknowledge the decided head of the line; returns (acknowledged, failed).

        A failed delivery leaves the line unacknowledged: the broker keeps it in flight and
        sends it again when the session resumes, instead of it blocking everyone behind it.
        """
        acked = failed = 0
        line = self._line
        while line and line[0].delivered is not None:
            head = line.popleft()
            if head.delivered:
                ack(head.mid)
                acked += 1
            else:
                failed += 1
        return acked, failed

    def forget(self) -> int:
        """The connection is gone: its packet ids mean nothing on the next one, where the
        broker sends these messages again. Returns how many were in line."""
        count = len(self._line)
        self._line.clear()
        return count
