"""A kept Spark Connect server: one driver JVM that every batch run takes its session from.

A run that starts its own driver pays for the JVM's start and for its cold JIT each time
(10-11 s of the demo's 29 s day, see docs/batch.md); the runs of a kept server pay for neither
after the first. The server is Spark's own (`SparkConnectServer`, through `spark-submit`),
started with the driver properties of `driver_config` for the settings it starts with: local
mode, or the standalone cluster's master. Each run gets a session of its own on the server
(its SQL settings, its temporary views, the project's code it ships: `ship_to_session`), and
concurrent runs share the server's cores as jobs of one application.

It listens on loopback only, on a port kept for the runtime folder, and asks for a token made
once and kept private to its owner. The Connect client sends a token without TLS only to the
host `localhost`, so that is the address runs are given.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from smartcity.services.kept import free_ports, kept
from smartcity.services.processes import (
    ServiceRecord,
    accepts,
    spawn,
    started_at,
    wait_until,
)
from smartcity.services.spark_cluster import spark_home
from smartcity.settings import Settings

NAME = "spark-connect"
SERVER_CLASS = "org.apache.spark.sql.connect.service.SparkConnectServer"
START_TIMEOUT_S = 120.0


def start(settings: Settings) -> ServiceRecord:
    """Start the server for `settings`' master and lake; return once it accepts clients."""
    from smartcity_dagster.spark import CONNECT_TOKEN_VARIABLE, driver_config

    home = settings.runtime_dir / NAME
    plan = kept(
        home / "server.json",
        lambda: {"port": free_ports(1)[0], "token": secrets.token_urlsafe(24)},
    )
    config = driver_config(settings)
    master = config.pop("spark.master")
    config["spark.connect.grpc.binding.address"] = "127.0.0.1"
    config["spark.connect.grpc.binding.port"] = str(plan["port"])
    # Spark keeps a Python daemon per Connect session (its workers' environment names the
    # session) until the server stops, even after the session ends: about 48 MB for each
    # run that ran the anomaly detector (SPARK-54055). Without the daemon, the server starts
    # a Python worker for each task itself, and the worker exits with its task.
    config["spark.python.use.daemon"] = "false"
    # The token in the server's configuration (the properties file below is private to its
    # owner), not in its environment: the server's Python workers inherit its environment.
    config["spark.connect.authenticate.token"] = plan["token"]
    properties = _properties_file(home / "server.properties", config)
    log = home / "server.log"
    command = [
        str(spark_home() / "bin" / "spark-submit"),
        *("--master", master, "--properties-file", str(properties)),
        *("--class", SERVER_CLASS, "spark-internal"),
    ]
    # driver_config put the Python of the server's workers (and the S3 keys, for an S3 lake)
    # into this process's environment, which the server inherits; not a token exported in
    # the shell of `services up`, which the server's Python workers would inherit in turn.
    process = spawn(command, log, cwd=home, unset=[CONNECT_TOKEN_VARIABLE])
    # The gRPC service listens once the server's SparkContext is up.
    wait_until(lambda: accepts(plan["port"]), process, START_TIMEOUT_S, "Spark Connect", log)
    return ServiceRecord(
        name=NAME,
        pid=process.pid,
        started_at=started_at(process),
        log=str(log),
        env={
            "SMARTCITY_SPARK_REMOTE": f"sc://localhost:{plan['port']}",
            "SMARTCITY_SPARK_CONNECT_TOKEN": plan["token"],
        },
    )


def _properties_file(path: Path, config: dict[str, str]) -> Path:
    """`spark-submit`'s properties file, private to its owner like the token beside it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"{key}={value.replace(chr(92), chr(92) * 2)}\n" for key, value in config.items()]
    path.write_text("".join(lines))
    path.chmod(0o600)
    return path
