"""Processes that `smartcity services up` starts, recorded so `down` stops exactly those.

A record keeps the pid and the process's start time: a pid reused by another program after
a reboot is never mistaken for ours.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import orjson
import psutil


@dataclass(frozen=True)
class ServiceRecord:
    """One started service: how to find it, and what a client needs to reach it."""

    name: str
    pid: int
    started_at: float
    log: str
    env: dict[str, str]

    def process(self) -> psutil.Process | None:
        try:
            process = psutil.Process(self.pid)
            if abs(process.create_time() - self.started_at) > 1.0 or not process.is_running():
                return None
            if process.status() == psutil.STATUS_ZOMBIE:
                return None
            return process
        except psutil.NoSuchProcess:
            return None

    @property
    def running(self) -> bool:
        return self.process() is not None


class ServiceRegistry:
    """The `services.json` file in the runtime folder."""

    def __init__(self, runtime_dir: Path) -> None:
        self.runtime_dir = runtime_dir
        self.file = runtime_dir / "services.json"

    def load(self) -> dict[str, ServiceRecord]:
        if not self.file.exists():
            return {}
        raw = orjson.loads(self.file.read_bytes())
        return {name: ServiceRecord(**record) for name, record in raw.items()}

    def save(self, records: Mapping[str, ServiceRecord]) -> None:
        self.runtime_dir.mkdir(parents=True, exist_ok=True)
        data = {name: asdict(record) for name, record in records.items()}
        scratch = self.file.with_suffix(".tmp")
        scratch.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
        scratch.replace(self.file)

    def put(self, record: ServiceRecord) -> None:
        records = self.load()
        records[record.name] = record
        self.save(records)

    def remove(self, name: str) -> None:
        records = self.load()
        records.pop(name, None)
        self.save(records)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def spawn(
    command: Sequence[str], log: Path, env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> psutil.Process:
    """Start `command` detached (own session), output appended to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        child = subprocess.Popen(
            list(command),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            start_new_session=True,
        )
    return psutil.Process(child.pid)


def wait_until(
    ready: Callable[[], bool], process: psutil.Process, timeout_s: float, what: str, log: Path
) -> None:
    """Poll `ready` until true; fail early with the log's tail if the process died."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not process.is_running() or process.status() == psutil.STATUS_ZOMBIE:
            raise RuntimeError(f"{what} exited during start-up; last log lines:\n{tail(log)}")
        if ready():
            return
        time.sleep(0.25)
    raise RuntimeError(f"{what} did not answer within {timeout_s:g} s; see {log}")


def tail(log: Path, lines: int = 15) -> str:
    if not log.exists():
        return ""
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def stop(record: ServiceRecord, grace_s: float = 20.0) -> bool:
    """Stop the recorded process and its children; True if something was running."""
    process = record.process()
    if process is None:
        return False
    family = [process, *process.children(recursive=True)]
    for member in family:
        try:
            member.send_signal(signal.SIGTERM)
        except psutil.NoSuchProcess:
            continue
    _, alive = psutil.wait_procs(family, timeout=grace_s)
    for member in alive:
        try:
            member.kill()
        except psutil.NoSuchProcess:
            continue
    psutil.wait_procs(alive, timeout=5)
    return True


def stop_sessions(processes: list[subprocess.Popen[bytes]], grace_s: float = 30.0) -> None:
    """SIGTERM each process's session (it was started with `start_new_session`), wait, then
    SIGKILL what is left: nothing of theirs outlives the caller."""
    for process in processes:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
    for process in processes:
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
