"""Real Apache Kafka brokers in KRaft mode on loopback: one standalone node, or a cluster.

The broker is Apache Kafka's own code from Maven Central, run with the machine's JDK. The
single node (`kafka`) is its own controller. The cluster (`kafka-1`..`kafka-3`) is the
deployment's topology on one machine: three processes that are each broker and controller of
one quorum, with internal topics replicated three times and writes needing two in sync, so a
member can be killed and restarted (same ports, same data) while the others carry on.
"""

from __future__ import annotations

import base64
import time
import uuid
from functools import partial
from pathlib import Path
from typing import Any

from smartcity.kafka import BrokerUnreachable, cluster_metadata
from smartcity.services.jvm import classpath, java_binary
from smartcity.services.kept import free_ports, kept
from smartcity.services.processes import ServiceRecord, free_port, spawn, started_at, wait_until
from smartcity.settings import Settings

NAME = "kafka"
CLUSTER_SIZE = 3
MEMBER_NAMES = tuple(f"{NAME}-{node_id}" for node_id in range(1, CLUSTER_SIZE + 1))
CLUSTER_REPLICATION = 3
CLUSTER_MIN_INSYNC = 2
START_TIMEOUT_S = 180.0
"""Generous: a broker restarted after a crash loads and recovers every log before it serves,
and stopping it in the middle only makes its next start recover them again."""
SINGLE_HEAP = ["-Xms256m", "-Xmx1g"]
MEMBER_HEAP = ["-Xms128m", "-Xmx512m"]

_SERVER_PROPERTIES = """\
process.roles=broker,controller
node.id={node_id}
{quorum}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs={log_dir}
num.partitions={partitions}
auto.create.topics.enable=false
offsets.topic.replication.factor={replication}
offsets.topic.num.partitions=10
transaction.state.log.replication.factor={replication}
transaction.state.log.min.isr={min_insync}
share.coordinator.state.topic.replication.factor={replication}
share.coordinator.state.topic.min.isr={min_insync}
group.initial.rebalance.delay.ms=0
log.retention.hours=168
log.segment.bytes=268435456
message.max.bytes=10485760
"""

# A topic created without its own settings gets the cluster's: the offsets topic included,
# which takes its in-sync minimum from the broker's default.
_CLUSTER_DEFAULTS = f"""\
default.replication.factor={CLUSTER_REPLICATION}
min.insync.replicas={CLUSTER_MIN_INSYNC}
"""

_LOG4J2 = """\
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka.server.KafkaRaftServer
logger.kafka.level = INFO
logger.start.name = kafka.server.BrokerServer
logger.start.level = INFO
logger.lifecycle.name = org.apache.kafka.server.BrokerLifecycleManager
logger.lifecycle.level = INFO
logger.logs.name = org.apache.kafka.storage.internals.log.LogManager
logger.logs.level = INFO
"""
"""WARN and up, plus the start's steps (the logs it loads or recovers, what it waits for, when
it is unfenced) in the broker's one log: a start that does not finish shows where it stands."""


def _cluster_id() -> str:
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def _broker_answers(settings: Settings, node_id: int | None = None) -> bool:
    """The broker answers metadata requests (and, given `node_id`, lists itself as a member)."""
    try:
        metadata = cluster_metadata(settings.model_copy(update={"kafka_timeout_s": 1.0}))
    except BrokerUnreachable:
        return False
    return node_id is None or node_id in metadata.brokers


def start(settings: Settings) -> ServiceRecord:
    """Format (first time) and start the single node; return once it answers metadata requests."""
    home = settings.runtime_dir / NAME
    config = home / "server.properties"
    formatted = _formatted(home)
    port = _configured_port(config) if formatted else (settings.kafka_port or free_port())
    if not formatted:
        controller_port = free_port()
        home.mkdir(parents=True, exist_ok=True)
        config.write_text(
            _properties(
                settings,
                home,
                node_id=1,
                port=port,
                controller_port=controller_port,
                quorum=f"controller.quorum.bootstrap.servers=127.0.0.1:{controller_port}",
            )
        )
    bootstrap = f"127.0.0.1:{port}"
    return _run(
        settings,
        NAME,
        home,
        format_args=None if formatted else ["--standalone", f"--cluster-id={_cluster_id()}"],
        heap=SINGLE_HEAP,
        address=bootstrap,
        node_id=None,
        env={"SMARTCITY_KAFKA_BOOTSTRAP": bootstrap},
    )


def start_member(settings: Settings, node_id: int) -> ServiceRecord:
    """Start cluster member `node_id` (1..3) on the ports of the cluster's plan; return once it
    serves as a broker, which needs a majority of the quorum's controllers (start them
    together: each waits for the others)."""
    plan = cluster_plan(settings)
    member = plan["members"][str(node_id)]
    home = settings.runtime_dir / f"{NAME}-{node_id}"
    home.mkdir(parents=True, exist_ok=True)
    voters = ",".join(
        f"{other}@127.0.0.1:{ports['controller_port']}" for other, ports in plan["members"].items()
    )
    (home / "server.properties").write_text(
        _properties(
            settings,
            home,
            node_id=node_id,
            port=member["port"],
            controller_port=member["controller_port"],
            quorum=f"controller.quorum.voters={voters}",
            cluster=True,
        )
    )
    return _run(
        settings,
        f"{NAME}-{node_id}",
        home,
        format_args=None if _formatted(home) else [f"--cluster-id={plan['cluster_id']}"],
        heap=MEMBER_HEAP,
        address=f"127.0.0.1:{member['port']}",
        node_id=node_id,
        env={
            "SMARTCITY_KAFKA_BOOTSTRAP": cluster_bootstrap(plan),
            "SMARTCITY_TOPIC_REPLICATION": str(CLUSTER_REPLICATION),
        },
    )


MEMBER_STARTERS = {
    name: partial(start_member, node_id=node_id)
    for node_id, name in enumerate(MEMBER_NAMES, start=1)
}


def cluster_plan(settings: Settings) -> dict[str, Any]:
    """The cluster's id and each member's client and controller ports, fixed at first start."""

    def make() -> dict[str, Any]:
        ports = free_ports(2 * CLUSTER_SIZE)
        return {
            "cluster_id": _cluster_id(),
            "members": {
                str(node_id): {"port": ports[2 * i], "controller_port": ports[2 * i + 1]}
                for i, node_id in enumerate(range(1, CLUSTER_SIZE + 1))
            },
        }

    return kept(settings.runtime_dir / f"{NAME}-cluster.json", make)


def cluster_bootstrap(plan: dict[str, Any]) -> str:
    return ",".join(f"127.0.0.1:{member['port']}" for member in plan["members"].values())


def member_name(node_id: int) -> str:
    """The service name of cluster member `node_id` (node 2 is `kafka-2`)."""
    return MEMBER_NAMES[node_id - 1]


def _properties(
    settings: Settings,
    home: Path,
    node_id: int,
    port: int,
    controller_port: int,
    quorum: str,
    cluster: bool = False,
) -> str:
    text = _SERVER_PROPERTIES.format(
        node_id=node_id,
        quorum=quorum,
        port=port,
        controller_port=controller_port,
        log_dir=home / "data",
        partitions=settings.topic_partitions,
        replication=CLUSTER_REPLICATION if cluster else 1,
        min_insync=CLUSTER_MIN_INSYNC if cluster else 1,
    )
    return text + _CLUSTER_DEFAULTS if cluster else text


def _formatted(home: Path) -> bool:
    return (home / "data" / "meta.properties").exists()


def _run(
    settings: Settings,
    name: str,
    home: Path,
    format_args: list[str] | None,
    heap: list[str],
    address: str,
    node_id: int | None,
    env: dict[str, str],
) -> ServiceRecord:
    """Format the storage if `format_args` are given, start the broker, wait for it."""
    config = home / "server.properties"
    log = home / "broker.log"
    log4j = home / "log4j2.properties"
    log4j.write_text(_LOG4J2.format(log=log))
    java = java_binary()
    jars = classpath("kafka-broker")
    jvm_flags = [*heap, "-XX:+UseG1GC", f"-Dlog4j2.configurationFile={log4j}"]
    if format_args is not None:
        _format_storage(java, jars, jvm_flags, config, format_args, log)
    process = spawn([java, *jvm_flags, "-cp", jars, "kafka.Kafka", str(config)], log)
    record = ServiceRecord(
        name=name, pid=process.pid, started_at=started_at(process), log=str(log), env=env
    )
    probe = settings.model_copy(update={"kafka_bootstrap": address})
    what = f"Kafka broker {name}"
    wait_until(lambda: _broker_answers(probe, node_id), process, START_TIMEOUT_S, what, log)
    return record


def _configured_port(config: Path) -> int:
    """The client port of a broker formatted earlier: its controller address is in its data."""
    for line in config.read_text().splitlines():
        if line.startswith("advertised.listeners="):
            return int(line.rsplit(":", 1)[1])
    raise RuntimeError(f"{config} has no advertised.listeners; remove {config.parent} to reset")


def _format_storage(
    java: str, jars: str, flags: list[str], config: Path, args: list[str], log: Path
) -> None:
    command = [java, *flags, "-cp", jars, "kafka.tools.StorageTool", "format", *args]
    process = spawn([*command, "-c", str(config)], log)
    started = time.monotonic()
    code = process.wait(timeout=120)
    if code != 0:
        last = next((line for line in reversed(log.read_text().splitlines()) if line.strip()), "")
        raise RuntimeError(
            f"formatting Kafka storage failed after {time.monotonic() - started:.0f} s "
            f"({last.strip()[:300]}); see {log}"
        )
