"""`smartcity services up --cluster` as a user runs it, in a runtime folder of its own: the
deployment's topology on loopback, then `status`, a broker killed and restarted, `down`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import orjson
import psutil
import psycopg2
import pytest
from confluent_kafka.admin import ConfigResource

from smartcity.kafka import admin_client, cluster_metadata
from smartcity.services import cluster, spark_cluster
from smartcity.settings import Settings
from tests.cluster_support import REPO, busiest_broker, kill_broker, restart_broker
from tests.postgres_support import reachable_folder

pytestmark = pytest.mark.integration

SMARTCITY = shutil.which("smartcity") or str(REPO / ".venv" / "bin" / "smartcity")
INSTANCE_STORAGE = (
    "import dagster as dg\n"
    "with dg.DagsterInstance.get() as instance: print(type(instance.run_storage).__name__)"
)
"""The run storage of the Dagster instance at the exported DAGSTER_HOME."""


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """The CLI from a shell whose environment names the project's venv: the workers must not
    inherit it."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SMARTCITY_")}
    leaky = {"VIRTUAL_ENV": str(REPO / ".venv"), "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [SMARTCITY, *args],
        cwd=cwd,
        env={**clean, **leaky},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


@pytest.fixture
def folder() -> Iterator[Path]:
    """A folder that PostgreSQL's own user can reach when the tests run as root (pytest's
    temporary folders are private to their owner)."""
    path = reachable_folder(prefix="smartcity-cluster-cli-")
    try:
        yield path
    finally:
        run(["services", "down"], path)
        shutil.rmtree(path, ignore_errors=True)


def test_up_cluster_status_kill_restart_down(folder: Path) -> None:
    up = run(["services", "up", "--cluster"], folder)
    assert up.returncode == 0, up.stderr
    exported = dict(
        line.removeprefix("export ").split("=", 1) for line in up.stdout.strip().splitlines()
    )
    assert exported["SMARTCITY_TOPIC_REPLICATION"] == "3"
    assert exported["SMARTCITY_LAKE_URI"] == "s3://smartcity/lake"
    assert len(exported["SMARTCITY_KAFKA_BOOTSTRAP"].split(",")) == 3
    assert {"DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_PASSWORD"} <= set(exported)
    runtime = folder / ".runtime"
    base = Settings(_env_file=None, runtime_dir=runtime)
    settings = cluster.client_settings(base, exported)
    records = orjson.loads((runtime / "services.json").read_bytes())
    assert set(records) == set(cluster.NAMES)

    metadata = cluster_metadata(settings)
    assert sorted(metadata.brokers) == [1, 2, 3]
    traffic = settings.topic("traffic")
    assert all(len(p.replicas) == 3 for p in metadata.topics[traffic].partitions.values())
    resource = ConfigResource("topic", traffic)
    admin = admin_client(settings)
    configs = admin.describe_configs([resource])[resource].result(timeout=10)
    assert configs["min.insync.replicas"].value == "2"

    master = spark_cluster.master_status(spark_cluster.master_ports(base)["webui_port"])
    assert master is not None and master["aliveworkers"] == 2
    for name in spark_cluster.WORKER_NAMES:
        worker_env = psutil.Process(records[name]["pid"]).environ()
        assert "VIRTUAL_ENV" not in worker_env and "PYTHONPATH" not in worker_env
        assert worker_env["PYSPARK_PYTHON"] == exported["SMARTCITY_SPARK_EXECUTOR_PYTHON"]
        assert worker_env["AWS_ACCESS_KEY_ID"] == exported["SMARTCITY_S3_ACCESS_KEY"]

    executor = exported["SMARTCITY_SPARK_EXECUTOR_PYTHON"]
    imports = (
        "import pandas, pyarrow, numpy; print(*(m.__version__ for m in (pandas, pyarrow, numpy)))"
    )
    versions = subprocess.run(
        [executor, "-c", imports], cwd=folder, capture_output=True, text=True, env={}, check=True
    )
    assert versions.stdout.split() == [version(p) for p in ("pandas", "pyarrow", "numpy")]
    project = subprocess.run(
        [executor, "-c", "import smartcity"], cwd=folder, capture_output=True, text=True, env={}
    )
    assert project.returncode != 0 and "No module named 'smartcity'" in project.stderr

    with (
        psycopg2.connect(
            host=exported["DAGSTER_PG_HOST"],
            port=int(exported["DAGSTER_PG_PORT"]),
            user=exported["DAGSTER_PG_USER"],
            password=exported["DAGSTER_PG_PASSWORD"],
            dbname=exported["DAGSTER_PG_DB"],
        ) as connection,
        connection.cursor() as cursor,
    ):
        cursor.execute("SELECT current_database(), current_user")
        assert cursor.fetchone() == ("dagster", "dagster")
    connection.close()
    instance = subprocess.run(
        [sys.executable, "-c", INSTANCE_STORAGE],
        env={**os.environ, **exported},
        capture_output=True,
        text=True,
        check=False,
    )
    assert instance.stdout.split() == ["PostgresRunStorage"], instance.stderr[-2000:]

    status = run(["services", "status"], folder)
    assert status.stdout.count("running") == len(cluster.NAMES)
    assert all(name in status.stdout for name in cluster.NAMES)

    victim = busiest_broker(settings, settings.all_topics)
    kill_broker(settings, victim)
    restarted = restart_broker(base, victim)
    assert restarted.pid != records[victim]["pid"]
    assert restarted.env["SMARTCITY_KAFKA_BOOTSTRAP"] == exported["SMARTCITY_KAFKA_BOOTSTRAP"]
    assert sorted(cluster_metadata(settings).brokers) == [1, 2, 3]
    restart_log = Path(restarted.log).read_text().split("Starting broker")[-1]
    assert "unclean log dirs" in restart_log  # it recovered after the SIGKILL, and says so
    assert "The broker has been unfenced" in restart_log

    pids = [
        record["pid"] for record in orjson.loads((runtime / "services.json").read_bytes()).values()
    ]
    down = run(["services", "down"], folder)
    assert down.returncode == 0, down.stderr
    assert all(name in down.stdout for name in cluster.NAMES)
    assert not [pid for pid in pids if _alive(pid)]
    leftovers = [
        process
        for process in psutil.process_iter(["cmdline"])
        if str(runtime) in " ".join(process.info["cmdline"] or [])
    ]
    _, alive = psutil.wait_procs(leftovers, timeout=10)  # a parent may still be exiting
    assert alive == []


def _alive(pid: int) -> bool:
    return psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
