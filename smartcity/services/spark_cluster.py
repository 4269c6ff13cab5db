"""A Spark standalone cluster on loopback from pyspark's own distribution: one master, two
workers, as the deployment runs them.

The workers are deliberately not the driver's environment: their executors run the separate
executor Python (`executor_python`), which lacks the project, and they get no PYTHONPATH or
VIRTUAL_ENV, so a job that relies on the driver's venv fails here as on a real cluster. The
S3 keys reach the executors as the AWS SDK's variables of the worker's environment, never as
Spark properties (which the driver's UI shows).

Which Python an executor runs is the driver's choice: pyspark 4.3 takes it from PYSPARK_PYTHON
in the driver's own environment (`SparkContext`); `spark.pyspark.python` is read only by
spark-submit. The workers' PYSPARK_PYTHON names the same interpreter for anything that asks
the worker instead.
"""

from __future__ import annotations

import os
import sys
from functools import partial
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import httpx
import psutil

from smartcity.services.kept import free_ports, kept
from smartcity.services.minio_server import DEFAULT_BUCKET
from smartcity.services.processes import ServiceRecord, spawn, started_at, wait_until
from smartcity.settings import Settings

MASTER = "spark-master"
WORKER_COUNT = 2
WORKER_NAMES = tuple(f"spark-worker-{n}" for n in range(1, WORKER_COUNT + 1))
WORKER_CORES = 1
WORKER_MEMORY = "2g"
DAEMON_MEMORY = "512m"
START_TIMEOUT_S = 90.0
LAKE_URI = f"s3://{DEFAULT_BUCKET}/lake"
"""Where jobs on the cluster keep the lake: the default bucket of the cluster's S3 server."""
LEAKY_VARIABLES = ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "PYSPARK_DRIVER_PYTHON")
"""Variables through which a worker's Python would find the driver's environment."""


class SparkClusterError(RuntimeError):
    """A worker was asked for without what it needs (the master's URL, the executor Python)."""


def spark_home() -> Path:
    """The installed pyspark package: a Spark distribution (jars, `bin/spark-class`), found
    without importing it."""
    spec = find_spec("pyspark")
    if spec is None or spec.origin is None:
        raise SparkClusterError("pyspark is not installed: `make install` installs it")
    return Path(spec.origin).parent


def master_ports(settings: Settings) -> dict[str, Any]:
    """The master's RPC and web UI ports, kept for its restarts (workers know the first)."""

    def make() -> dict[str, Any]:
        port, webui_port = free_ports(2)
        return {"port": port, "webui_port": webui_port}

    return kept(settings.runtime_dir / MASTER / "ports.json", make)


def master_status(webui_port: int) -> dict[str, Any] | None:
    """The master's `/json/` page (its state and workers), or None while it does not answer."""
    try:
        response = httpx.get(f"http://127.0.0.1:{webui_port}/json/", timeout=2.0)
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    status: dict[str, Any] = response.json()
    return status


def start_master(settings: Settings) -> ServiceRecord:
    """Start the master and return once its web UI reports it alive."""
    home = settings.runtime_dir / MASTER
    ports = master_ports(settings)
    log = home / "master.log"
    process = _spawn_daemon(
        [
            "org.apache.spark.deploy.master.Master",
            "--host",
            "127.0.0.1",
            "--port",
            str(ports["port"]),
            "--webui-port",
            str(ports["webui_port"]),
        ],
        home,
        log,
        {},
    )

    def alive() -> bool:
        status = master_status(ports["webui_port"])
        return status is not None and status.get("status") == "ALIVE"

    wait_until(alive, process, START_TIMEOUT_S, "Spark master", log)
    return ServiceRecord(
        name=MASTER,
        pid=process.pid,
        started_at=started_at(process),
        log=str(log),
        env={"SMARTCITY_SPARK_MASTER": f"spark://127.0.0.1:{ports['port']}"},
    )


def start_worker(settings: Settings, number: int) -> ServiceRecord:
    """Start worker `number` for the master at SMARTCITY_SPARK_MASTER; return once the master
    lists it alive. Its executors run SMARTCITY_SPARK_EXECUTOR_PYTHON with the S3 keys."""
    if not settings.spark_master.startswith("spark://"):
        raise SparkClusterError(
            "SMARTCITY_SPARK_MASTER: a worker needs spark://host:port, "
            f"got {settings.spark_master!r}"
        )
    if not settings.spark_executor_python:
        raise SparkClusterError("SMARTCITY_SPARK_EXECUTOR_PYTHON: a worker needs it, none is set")
    name = f"spark-worker-{number}"
    home = settings.runtime_dir / name
    log = home / "worker.log"
    port, webui_port = free_ports(2)
    executor_env = {"PYSPARK_PYTHON": settings.spark_executor_python}
    if settings.s3_access_key and settings.s3_secret_key:
        executor_env["AWS_ACCESS_KEY_ID"] = settings.s3_access_key.get_secret_value()
        executor_env["AWS_SECRET_ACCESS_KEY"] = settings.s3_secret_key.get_secret_value()
    process = _spawn_daemon(
        [
            "org.apache.spark.deploy.worker.Worker",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--webui-port",
            str(webui_port),
            "--cores",
            str(WORKER_CORES),
            "--memory",
            WORKER_MEMORY,
            "--work-dir",
            str(home / "work"),
            settings.spark_master,
        ],
        home,
        log,
        executor_env,
    )
    master_webui = master_ports(settings)["webui_port"]
    wait_until(
        lambda: _worker_alive(master_webui, port), process, START_TIMEOUT_S, f"Spark {name}", log
    )
    return ServiceRecord(
        name=name,
        pid=process.pid,
        started_at=started_at(process),
        log=str(log),
        env={
            "SMARTCITY_SPARK_EXECUTOR_PYTHON": settings.spark_executor_python,
            "SMARTCITY_LAKE_URI": LAKE_URI,
        },
    )


def _worker_alive(master_webui_port: int, worker_port: int) -> bool:
    status = master_status(master_webui_port)
    workers = status.get("workers", []) if status else []
    return any(w.get("port") == worker_port and w.get("state") == "ALIVE" for w in workers)


WORKER_STARTERS = {
    name: partial(start_worker, number=number) for number, name in enumerate(WORKER_NAMES, start=1)
}


def _spawn_daemon(args: list[str], home: Path, log: Path, extra: dict[str, str]) -> psutil.Process:
    """`spark-class` with the cluster's environment: loopback only, small daemon heaps, and
    `env -u` for the variables that would leak the driver's venv (spawn adds to the caller's
    environment; it cannot take a variable away)."""
    home.mkdir(parents=True, exist_ok=True)
    unset = [arg for variable in LEAKY_VARIABLES for arg in ("-u", variable)]
    env = {
        "SPARK_HOME": str(spark_home()),
        "SPARK_LOCAL_IP": "127.0.0.1",
        "SPARK_DAEMON_MEMORY": DAEMON_MEMORY,
        "PATH": _path_without_venv(),
        **extra,
    }
    command = ["env", *unset, str(spark_home() / "bin" / "spark-class"), *args]
    return spawn(command, log, env=env, cwd=home)


def _path_without_venv() -> str:
    """PATH without the driver venv's `bin`, where a bare `python3` would be the project's."""
    venv_bin = str(Path(sys.prefix) / "bin")
    kept_dirs = [d for d in os.environ.get("PATH", "").split(os.pathsep) if d and d != venv_bin]
    return os.pathsep.join(kept_dirs)
