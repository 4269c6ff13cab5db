"""Choices made once per runtime folder (ports, ids, passwords) and reused by every restart.

A cluster member restarted after a crash must come back on the addresses its peers and
clients already know, and a cluster's members, started side by side, must agree on one plan:
so the first start writes the plan under a lock, and every later start reads it.
"""

from __future__ import annotations

import fcntl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from smartcity.services.processes import free_port


def kept(file: Path, make: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The plan in `file`, made by `make` and saved (private to its owner) the first time."""
    with exclusive(file.with_suffix(".lock")):
        if not file.exists():
            scratch = file.with_suffix(".tmp")
            scratch.write_bytes(orjson.dumps(make(), option=orjson.OPT_INDENT_2))
            scratch.chmod(0o600)
            scratch.replace(file)
        plan: dict[str, Any] = orjson.loads(file.read_bytes())
        return plan


@contextmanager
def exclusive(lock_file: Path) -> Iterator[None]:
    """Held by one thread or process at a time (an advisory lock on `lock_file`)."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with lock_file.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def free_ports(count: int) -> list[int]:
    """`count` different free loopback ports (two quick probes may be handed the same one)."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports
