"""A real single-node Apache Kafka broker in KRaft mode, on loopback, for one machine.

The broker is Apache Kafka's own code from Maven Central, run with the machine's JDK.
"""

from __future__ import annotations

import base64
import time
import uuid
from pathlib import Path

from smartcity.kafka import BrokerUnreachable, cluster_metadata
from smartcity.services.jvm import classpath, java_binary
from smartcity.services.processes import ServiceRecord, free_port, spawn, wait_until
from smartcity.settings import Settings

NAME = "kafka"
START_TIMEOUT_S = 90.0

_SERVER_PROPERTIES = """\
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:{controller_port}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs={log_dir}
num.partitions={partitions}
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.retention.hours=168
log.segment.bytes=268435456
message.max.bytes=10485760
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
"""


def _cluster_id() -> str:
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def _broker_answers(settings: Settings) -> bool:
    try:
        cluster_metadata(settings.model_copy(update={"kafka_timeout_s": 1.0}))
    except BrokerUnreachable:
        return False
    return True


def start(settings: Settings) -> ServiceRecord:
    """Format (first time) and start the broker; return once it answers metadata requests."""
    home = settings.runtime_dir / NAME
    data_dir = home / "data"
    config = home / "server.properties"
    log = home / "broker.log"
    formatted = (data_dir / "meta.properties").exists()
    port = _configured_port(config) if formatted else (settings.kafka_port or free_port())
    home.mkdir(parents=True, exist_ok=True)
    if not formatted:
        config.write_text(
            _SERVER_PROPERTIES.format(
                port=port,
                controller_port=free_port(),
                log_dir=data_dir,
                partitions=settings.topic_partitions,
            )
        )
    log4j = home / "log4j2.properties"
    log4j.write_text(_LOG4J2.format(log=home / "server.log"))
    java = java_binary()
    jars = classpath("kafka-broker")
    jvm_flags = ["-Xms256m", "-Xmx1g", "-XX:+UseG1GC", f"-Dlog4j2.configurationFile={log4j}"]
    if not formatted:
        _format_storage(java, jars, jvm_flags, config, log)
    process = spawn([java, *jvm_flags, "-cp", jars, "kafka.Kafka", str(config)], log)
    bootstrap = f"127.0.0.1:{port}"
    record = ServiceRecord(
        name=NAME,
        pid=process.pid,
        started_at=process.create_time(),
        log=str(log),
        env={"SMARTCITY_KAFKA_BOOTSTRAP": bootstrap},
    )
    probe = settings.model_copy(update={"kafka_bootstrap": bootstrap})
    wait_until(lambda: _broker_answers(probe), process, START_TIMEOUT_S, "Kafka broker", log)
    return record


def _configured_port(config: Path) -> int:
    """The client port of a broker formatted earlier: its controller address is in its data."""
    for line in config.read_text().splitlines():
        if line.startswith("advertised.listeners="):
            return int(line.rsplit(":", 1)[1])
    raise RuntimeError(f"{config} has no advertised.listeners; remove {config.parent} to reset")


def _format_storage(java: str, jars: str, flags: list[str], config: Path, log: Path) -> None:
    command = [
        java,
        *flags,
        "-cp",
        jars,
        "kafka.tools.StorageTool",
        "format",
        "--standalone",
        "-t",
        _cluster_id(),
        "-c",
        str(config),
    ]
    process = spawn(command, log)
    started = time.monotonic()
    code = process.wait(timeout=120)
    if code != 0:
        raise RuntimeError(
            f"formatting Kafka storage failed after {time.monotonic() - started:.0f} s; see {log}"
        )
