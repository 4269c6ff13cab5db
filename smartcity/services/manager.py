"""Start, stop and report the embedded local services as one unit."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from smartcity.services import kafka_broker, minio_server, mosquitto
from smartcity.services.processes import STOP_GRACE_S, ServiceRecord, ServiceRegistry, stop
from smartcity.settings import Settings

STARTERS: dict[str, Callable[[Settings], ServiceRecord]] = {
    kafka_broker.NAME: kafka_broker.start,
    minio_server.NAME: minio_server.start,
    mosquitto.NAME: mosquitto.start,
}


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    running: bool
    pid: int | None
    env: dict[str, str]


def up(settings: Settings, names: Iterable[str]) -> dict[str, ServiceRecord]:
    """Start each named service unless it already runs; returns the running records."""
    registry = ServiceRegistry(settings.runtime_dir)
    running: dict[str, ServiceRecord] = {}
    for name in names:
        record = registry.load().get(name)
        if record is None or not record.running:
            record = STARTERS[name](settings)
            registry.put(record)
        running[name] = record
    write_env_file(settings, registry.load().values())
    return running


def down(settings: Settings, grace_s: float = STOP_GRACE_S) -> list[str]:
    """Stop every recorded service; returns the names that were running."""
    registry = ServiceRegistry(settings.runtime_dir)
    stopped = [name for name, record in registry.load().items() if stop(record, grace_s)]
    registry.save({})
    settings.services_env_file().unlink(missing_ok=True)
    return stopped


def status(settings: Settings) -> list[ServiceStatus]:
    records = ServiceRegistry(settings.runtime_dir).load()
    return [
        ServiceStatus(name, record.running, record.pid if record.running else None, record.env)
        for name, record in sorted(records.items())
    ]


def env_lines(records: Iterable[ServiceRecord]) -> list[str]:
    return [f"export {key}={value}" for record in records for key, value in record.env.items()]


def write_env_file(settings: Settings, records: Iterable[ServiceRecord]) -> None:
    """`services.env`: read by every later `smartcity` command run from the same folder."""
    lines = env_lines(record for record in records if record.running)
    target = settings.services_env_file()
    target.write_text("\n".join(lines) + "\n")
    target.chmod(0o600)
