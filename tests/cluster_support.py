"""The deployment's topology on this machine for integration tests: three Kafka brokers in
one quorum, MinIO, a Spark master with two workers, PostgreSQL (`smartcity services up
--cluster`), started once under the system's temporary folder and shared by test runs, plus what a
chaos test needs: kill a broker, restart it on its ports and data, find the busiest leader.

A cluster already running there is reused and left running; one this session started is
stopped at its end. `python -c "from tests.cluster_support import start_cluster;
start_cluster()"` starts one to keep.
"""

from __future__ import annotations

import hashlib
import signal
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from smartcity.kafka import cluster_metadata
from smartcity.services import cluster as services_cluster
from smartcity.services import kafka_broker, manager
from smartcity.services.processes import ServiceRecord
from smartcity.settings import Settings
from tests.postgres_support import reachable_folder
from tests.stream_support import BACKFILL_BEHIND_S, for_this_run

REPO = Path(__file__).resolve().parents[1]
CLUSTER_RUNTIME = Path(tempfile.gettempdir()) / (
    f"smartcity-test-cluster-{hashlib.sha256(str(REPO).encode()).hexdigest()[:8]}"
)
"""One per checkout, kept across test runs, outside the checkout: PostgreSQL's own user must
reach its data, and a checkout may sit in a folder only its owner can enter."""
KILL_WAIT_S = 30.0


def start_cluster(runtime_dir: Path = CLUSTER_RUNTIME) -> Settings:
    """Start what of the cluster in `runtime_dir` is not running; settings that reach it."""
    base = Settings(_env_file=None, runtime_dir=reachable_folder(runtime_dir))
    records = services_cluster.up(base)
    reaching = services_cluster.client_settings(base, manager.merged_env(records.values()))
    return reaching.model_copy(update={"event_time_behind_s": BACKFILL_BEHIND_S})


@pytest.fixture(scope="session")
def cluster() -> Iterator[Settings]:
    """Settings that reach the shared cluster (topic replication 3, Spark master, S3 keys,
    executor Python); `service_env(settings, "postgres")` has the DAGSTER_PG_* variables."""
    base = Settings(_env_file=None, runtime_dir=CLUSTER_RUNTIME)
    running = {status.name for status in manager.status(base) if status.running}
    shared = set(services_cluster.NAMES) <= running  # someone else started it, and stops it
    settings = start_cluster()
    try:
        yield settings
    finally:
        if not shared:
            manager.down(base)


@pytest.fixture(scope="session")
def cluster_settings(cluster: Settings) -> Settings:
    """The cluster with this run's own topic prefix and bucket; topics (replicated 3 times,
    2 in sync) and bucket created."""
    return for_this_run(cluster)


def service_env(settings: Settings, name: str) -> dict[str, str]:
    """The variables that service `name` of the cluster in `settings.runtime_dir` exports."""
    return manager.recorded(settings)[name].env


def kill_broker(settings: Settings, name: str) -> None:
    """SIGKILL cluster member `name` (`kafka-2`) and wait until it is gone: no clean
    shutdown, no leadership handed over."""
    process = manager.recorded(settings)[name].process()
    assert process is not None, f"{name} is not running"
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=KILL_WAIT_S)


def restart_broker(settings: Settings, name: str) -> ServiceRecord:
    """Start member `name` again, on its ports and with its data; returns once it serves."""
    return manager.up(settings, [name])[name]


def partition_leaders(settings: Settings, topics: Iterable[str]) -> Counter[int]:
    """How many partitions of `topics` each broker (by node id) leads now."""
    metadata = cluster_metadata(settings)
    return Counter(
        partition.leader
        for topic in topics
        for partition in metadata.topics[topic].partitions.values()
        if partition.leader >= 0
    )


def busiest_broker(settings: Settings, topics: Iterable[str]) -> str:
    """The service name (`kafka-N`) of the broker that leads the most partitions of `topics`."""
    node_id, _ = partition_leaders(settings, topics).most_common(1)[0]
    return kafka_broker.member_name(node_id)
