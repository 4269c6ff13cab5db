"""`smartcity services up|down|status|install`: the embedded Kafka broker, S3 server and MQTT
broker, or with `up --cluster` the deployment's topology (three brokers, Spark, PostgreSQL)."""

from __future__ import annotations

import os

import typer
from rich.console import Console
from rich.table import Table

from smartcity.cli_support import err_console, friendly_errors, settings_or_exit
from smartcity.services import (
    cluster,
    kafka_broker,
    manager,
    minio_server,
    mosquitto,
    spark_connect,
)
from smartcity.services.executor_python import executor_python
from smartcity.services.jvm import classpath
from smartcity.services.processes import ServiceRecord
from smartcity.settings import Settings, load_settings

services_app = typer.Typer(
    help="Local Kafka (KRaft), S3 server (MinIO), MQTT broker (Mosquitto), or a whole cluster.",
    no_args_is_help=True,
)


@services_app.command("up")
@friendly_errors
def up_command(
    kafka: bool = typer.Option(True, "--kafka/--no-kafka", help="Start the Kafka broker."),
    s3: bool = typer.Option(True, "--s3/--no-s3", help="Start the MinIO S3 server."),
    mqtt: bool = typer.Option(
        False, "--mqtt/--no-mqtt", help="Start the Mosquitto MQTT broker (for `bridge mqtt`)."
    ),
    spark: bool = typer.Option(
        False,
        "--spark/--no-spark",
        help="Start a Spark Connect server that batch runs share, instead of a driver each "
        "(it keeps the driver's memory while idle). With --cluster, on the cluster's master.",
    ),
    whole_cluster: bool = typer.Option(
        False,
        "--cluster",
        help="The deployment's topology instead: 3 Kafka brokers, MinIO, a Spark master with "
        "2 workers, PostgreSQL; topics replicated 3 times (--kafka/--s3 do not apply).",
    ),
) -> None:
    """Start the services, wait until they answer, print `export SMARTCITY_*=...` lines.

    Use `eval "$(smartcity services up)"` to export them into the shell; commands run from
    the same folder read them from the runtime folder anyway.
    """
    settings = settings_or_exit()
    chosen = ((kafka_broker.NAME, kafka), (minio_server.NAME, s3))
    names = list(cluster.NAMES) if whole_cluster else [name for name, on in chosen if on]
    names += [mosquitto.NAME] if mqtt else []
    names += [spark_connect.NAME] if spark else []
    with err_console.status(f"starting {', '.join(names)} ..."):
        try:
            records = _start(settings, names, whole_cluster)
        except (RuntimeError, OSError) as error:
            err_console.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
            raise typer.Exit(code=1) from None
    for line in manager.env_lines(records.values()):
        typer.echo(line)
    err_console.print(
        f"[green]running[/]: {', '.join(names)} (state in {settings.runtime_dir}); "
        "`smartcity services down` stops them"
    )


def _start(settings: Settings, names: list[str], whole_cluster: bool) -> dict[str, ServiceRecord]:
    """The cluster first (it starts its members in stages, then makes topics and bucket),
    then whatever else is named; the Spark Connect server last, with the settings the others
    wrote into `services.env` (the cluster's master, the S3 lake and its keys)."""
    records = cluster.up(settings) if whole_cluster else {}
    others = [name for name in names if name not in records and name != spark_connect.NAME]
    records |= manager.up(settings, others)
    if spark_connect.NAME in names:
        records |= manager.up(load_settings(), [spark_connect.NAME])
    return records


@services_app.command("down")
@friendly_errors
def down_command() -> None:
    """Stop exactly the processes that `up` started."""
    settings = settings_or_exit()
    stopped = manager.down(settings)
    Console().print(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'}")


@services_app.command("status")
@friendly_errors
def status_command() -> None:
    """Say which services run, with their pids and addresses."""
    settings = settings_or_exit()
    table = Table("service", "state", "pid", "address")
    for service in manager.status(settings):
        address = ", ".join(v for k, v in service.env.items() if not _secret(k))
        state = "[green]running[/]" if service.running else "[red]stopped[/]"
        table.add_row(service.name, state, str(service.pid or "-"), address)
    if not table.rows:
        table.add_row("-", "nothing started", "-", "-")
    Console().print(table)


def _secret(variable: str) -> bool:
    return any(word in variable for word in ("KEY", "PASSWORD", "TOKEN"))


@services_app.command("install")
@friendly_errors
def install_command(
    kafka: bool = typer.Option(False, "--kafka", help="Fetch the Kafka broker's jars (Maven)."),
    s3: bool = typer.Option(False, "--s3", help="Build MinIO from source (Go), once."),
    spark: bool = typer.Option(
        False, "--spark", help="Write the Spark driver's class archive (a small day, once)."
    ),
    spark_executor: bool = typer.Option(
        False,
        "--spark-executor",
        help="Build the cluster executors' Python (pandas, pyarrow, numpy; pip, once).",
    ),
) -> None:
    """Fetch or build what `up` runs, into user-level caches (a second run is instant)."""
    if kafka:
        with err_console.status("resolving the Kafka broker's jars with Maven ..."):
            jars = classpath("kafka-broker").split(os.pathsep)
        err_console.print(f"kafka: {len(jars)} jars ready")
    if s3:
        with err_console.status("building MinIO with `go install` (first time: minutes) ..."):
            binary = minio_server.minio_binary()
        err_console.print(f"s3: {binary}")
    if spark:
        from smartcity_dagster.class_archive import build_archive

        with err_console.status("running a small day on Spark for its class archive ..."):
            archive = build_archive()
        err_console.print(f"spark: {archive}")
    if spark_executor:
        with err_console.status("building the executors' Python with pip (first time) ..."):
            python = executor_python()
        err_console.print(f"spark executor: {python}")
