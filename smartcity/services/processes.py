"""Processes that `smartcity services up` starts, recorded so `down` stops exactly those.

A record keeps the pid and the process's start time: a pid reused by another program after
a reboot is never mistaken for ours. The start time is counted from the boot, as the kernel
keeps it: psutil's start time since the epoch adds the boot time, which the kernel derives
from the wall clock, and on a loaded virtual machine that drifts by seconds a minute, so a
long-running service would soon look like a reused pid.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import orjson
import psutil

STOP_GRACE_S = 20.0
"""How long a stopped process gets to finish its work before SIGKILL."""
ABANDON_GRACE_S = 2.0
"""The same for a service whose start failed or was interrupted: it holds no work yet."""
KILL_WAIT_S = 0.5
"""After SIGKILL, how long to wait for the kernel to take the processes away."""


@dataclass(frozen=True)
class ServiceRecord:
    """One started service: how to find it, and what a client needs to reach it."""

    name: str
    pid: int
    started_at: float
    """Seconds after the boot (`started_at`)."""
    log: str
    env: dict[str, str]

    def process(self) -> psutil.Process | None:
        try:
            process = psutil.Process(self.pid)
            if abs(started_at(process) - self.started_at) > 1.0 or not process.is_running():
                return None
            if process.status() == psutil.STATUS_ZOMBIE:
                return None
            return process
        except psutil.NoSuchProcess:
            return None

    @property
    def running(self) -> bool:
        return self.process() is not None


def started_at(process: psutil.Process) -> float:
    """When `process` started, in seconds after the boot (see the module docstring)."""
    return process.create_time() - psutil.boot_time()


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


def free_port(preferred: int = 0) -> int:
    """`preferred` when nothing on loopback holds it, else a port the system picks: a server
    that people reach by a well-known port keeps it whenever it can."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", preferred))
        except OSError:
            probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def accepts(port: int) -> bool:
    """Whether a server listens on loopback `port` (a TCP connection is accepted)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


def spawn(
    command: Sequence[str],
    log: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    unset: Collection[str] = (),
) -> psutil.Process:
    """Start `command` detached (own session), output appended to `log`, in this process's
    environment with `env` over it and without the variables named in `unset` (a secret the
    caller's shell may hold that the command's own children must not inherit)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        child = subprocess.Popen(
            list(command),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={k: v for k, v in {**os.environ, **(env or {})}.items() if k not in unset},
            cwd=cwd,
            start_new_session=True,
        )
    return psutil.Process(child.pid)


def wait_until(
    ready: Callable[[], bool], process: psutil.Process, timeout_s: float, what: str, log: Path
) -> None:
    """Poll `ready` until true; fail early with the log's tail if the process died.

    A process that never answers, or whose start is interrupted (Ctrl-C), is stopped before
    the error goes up: nobody holds a record of it yet, so nothing else could stop it.
    """
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            if not process.is_running() or process.status() == psutil.STATUS_ZOMBIE:
                raise RuntimeError(f"{what} exited during start-up; last log lines:\n{tail(log)}")
            if ready():
                return
            time.sleep(0.25)
        raise RuntimeError(
            f"{what} did not answer within {timeout_s:g} s; last log lines:\n{tail(log)}"
        )
    except BaseException:
        terminate(family(process.pid), ABANDON_GRACE_S)
        raise


def tail(log: Path, lines: int = 15) -> str:
    if not log.exists():
        return ""
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def family(pid: int) -> list[psutil.Process]:
    """`pid` and all its descendants, listed before any is signalled: once a parent has gone,
    its children are re-parented and can no longer be found through it."""
    try:
        process = psutil.Process(pid)
        return [process, *process.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def terminate(
    members: Sequence[psutil.Process], grace_s: float, groups: Collection[int] = ()
) -> None:
    """SIGTERM all at once, wait for all together, SIGKILL what is left after `grace_s`: one
    deadline for the lot, so stopping ten processes takes no longer than stopping one.

    Each process group in `groups` is signalled as a whole, which also reaches its members
    started after `members` was listed; other members are signalled one by one.
    """
    _send(members, groups, signal.SIGTERM)
    alive = _still_running(members, grace_s)
    _send(alive, groups, signal.SIGKILL)
    _still_running(alive, KILL_WAIT_S)


def _still_running(members: Sequence[psutil.Process], timeout_s: float) -> list[psutil.Process]:
    """Those of `members` still running after up to `timeout_s`, our own children reaped.

    A zombie counts as gone: it has exited, and only its parent has yet to read its status
    (in a container whose first process is no init, an orphan's status may never be read).
    """
    deadline = time.monotonic() + timeout_s
    alive = list(members)
    while True:
        _, alive = psutil.wait_procs(alive, timeout=0.05)
        alive = [member for member in alive if not _exited(member)]
        if not alive or time.monotonic() >= deadline:
            return alive


def _exited(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _send(members: Sequence[psutil.Process], groups: Collection[int], sig: signal.Signals) -> None:
    for group in groups:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, sig)
    for member in members:
        with contextlib.suppress(psutil.NoSuchProcess, ProcessLookupError):
            if os.getpgid(member.pid) not in groups:
                member.send_signal(sig)


def stop(record: ServiceRecord, grace_s: float = STOP_GRACE_S) -> bool:
    """Stop the recorded process and its children; True if something was running."""
    process = record.process()
    if process is None:
        return False
    terminate(family(process.pid), grace_s)
    return True


def stop_sessions(
    leaders: Sequence[subprocess.Popen[bytes] | psutil.Process], grace_s: float = STOP_GRACE_S
) -> None:
    """Stop each leader's whole session (it was started with `start_new_session`, so a
    terminal's Ctrl-C never reached it), grandchildren included, within one `grace_s`."""
    groups = {leader.pid for leader in leaders}
    terminate([member for pid in groups for member in family(pid)], grace_s, groups)
    for leader in leaders:
        if isinstance(leader, subprocess.Popen):
            leader.poll()
