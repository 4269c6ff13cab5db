"""Start, stop and report the local services as one unit: the single-node set, or the cluster.

Services named together start side by side (a cluster's members wait for each other), and
each that started is recorded even when another failed, so `down` can stop it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

from smartcity.services import (
    kafka_broker,
    minio_server,
    mosquitto,
    postgres,
    spark_cluster,
    spark_connect,
)
from smartcity.services.kept import exclusive
from smartcity.services.processes import STOP_GRACE_S, ServiceRecord, ServiceRegistry, stop
from smartcity.settings import Settings

STARTERS: dict[str, Callable[[Settings], ServiceRecord]] = {
    kafka_broker.NAME: kafka_broker.start,
    **kafka_broker.MEMBER_STARTERS,
    minio_server.NAME: minio_server.start,
    mosquitto.NAME: mosquitto.start,
    postgres.NAME: postgres.start,
    spark_cluster.MASTER: spark_cluster.start_master,
    **spark_cluster.WORKER_STARTERS,
    spark_connect.NAME: spark_connect.start,
}

STOPPERS: dict[str, Callable[[ServiceRecord, float], bool]] = {postgres.NAME: postgres.stop}
"""How `down` stops a service whose clean stop is not SIGTERM to its process family."""


class ServiceStartError(RuntimeError):
    """A service did not start: one line naming it and where its log is."""


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    running: bool
    pid: int | None
    env: dict[str, str]


def up(settings: Settings, names: Iterable[str]) -> dict[str, ServiceRecord]:
    """Start each named service unless it already runs; returns the running records.

    The ones to start are started in parallel and all awaited, even after a failure or a
    Ctrl-C, so that every process that did start is recorded for `down`. Another `up` of
    the same runtime folder (a second test session) waits, then finds them running."""
    with exclusive(settings.runtime_dir / "services.lock"):
        return _up(settings, names)


def _up(settings: Settings, names: Iterable[str]) -> dict[str, ServiceRecord]:
    registry = ServiceRegistry(settings.runtime_dir)
    recorded = registry.load()
    wanted = list(dict.fromkeys(names))
    running = {name: recorded[name] for name in wanted if name in recorded}
    running = {name: record for name, record in running.items() if record.running}
    missing = [name for name in wanted if name not in running]
    with ThreadPoolExecutor(max_workers=max(len(missing), 1)) as pool:
        futures = {name: pool.submit(STARTERS[name], settings) for name in missing}
        try:
            wait(futures.values())
        finally:  # after a Ctrl-C too: wait on, so that every process started gets recorded
            wait(futures.values())
            failures = _record_started(registry, futures, running)
            write_env_file(settings, registry.load().values())
    if failures:
        name, error = failures[0]
        raise ServiceStartError(_one_line(settings, name, error)) from error
    return {name: running[name] for name in wanted}


def _record_started(
    registry: ServiceRegistry,
    futures: Mapping[str, Future[ServiceRecord]],
    running: dict[str, ServiceRecord],
) -> list[tuple[str, BaseException]]:
    failures: list[tuple[str, BaseException]] = []
    for name, future in futures.items():
        error = future.exception()
        if error is not None:
            failures.append((name, error))
            continue
        running[name] = future.result()
        registry.put(running[name])
    return failures


def _one_line(settings: Settings, name: str, error: BaseException) -> str:
    """The error's first line, and the service's logs unless the error already names one."""
    first = (str(error).strip().splitlines() or [type(error).__name__])[0]
    first = first.removesuffix(":").removesuffix("; last log lines")  # wait_until's tail
    logs = sorted(str(log) for log in (settings.runtime_dir / name).glob("*.log"))
    if logs and not any(log in first for log in logs):
        first = f"{first}; see {', '.join(logs)}"
    return f"{name}: {first}"


def down(settings: Settings, grace_s: float = STOP_GRACE_S) -> list[str]:
    """Stop every recorded service, all at once; returns the names that were running."""
    with exclusive(settings.runtime_dir / "services.lock"):
        return _down(settings, grace_s)


def _down(settings: Settings, grace_s: float) -> list[str]:
    registry = ServiceRegistry(settings.runtime_dir)
    records = registry.load()
    with ThreadPoolExecutor(max_workers=max(len(records), 1)) as pool:
        stopped = {
            name: pool.submit(STOPPERS.get(name, stop), record, grace_s)
            for name, record in records.items()
        }
    registry.save({})
    settings.services_env_file().unlink(missing_ok=True)
    return [name for name, future in stopped.items() if future.result()]


def status(settings: Settings) -> list[ServiceStatus]:
    records = recorded(settings)
    return [
        ServiceStatus(name, record.running, record.pid if record.running else None, record.env)
        for name, record in sorted(records.items())
    ]


def recorded(settings: Settings) -> dict[str, ServiceRecord]:
    """The records of the runtime folder."""
    with exclusive(settings.runtime_dir / "services.lock"):
        return ServiceRegistry(settings.runtime_dir).load()


def merged_env(records: Iterable[ServiceRecord]) -> dict[str, str]:
    """The variables of all `records`: a cluster's members each carry the whole cluster's
    address, which is printed once."""
    return {key: value for record in records for key, value in record.env.items()}


def env_lines(records: Iterable[ServiceRecord]) -> list[str]:
    return [f"export {key}={value}" for key, value in merged_env(records).items()]


def write_env_file(settings: Settings, records: Iterable[ServiceRecord]) -> None:
    """`services.env`: read by every later `smartcity` command run from the same folder."""
    lines = env_lines(record for record in records if record.running)
    target = settings.services_env_file()
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("\n".join(lines) + "\n")
    target.chmod(0o600)
