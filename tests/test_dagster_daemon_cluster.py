"""The daemon path of the deployment, as real processes on one machine.

On the cluster of `smartcity services up --cluster` (tests/cluster_support.py): PostgreSQL
holds the deployment's instance (`smartcity/services/dagster-deployment.yaml`), in a
database of this test's own; the code location runs as a gRPC code server; the webserver
and the daemon load it through the deployment's workspace (`docker/dagster/workspace.yaml`).
The stream worker lands a small
day on MinIO, the stream-progress sensor (run by the daemon) requests that completed date,
the daemon dequeues and launches the run, the run builds the day in the lake on the
standalone Spark cluster, and every asset check of the day passes: all of it read through
the webserver's GraphQL API over HTTP.

Then the code server is restarted. The sensor's cursor lives in the instance, not in the
code server: the sensor's next evaluations start from it, and so know the date is built
and request nothing (a lost cursor would mark the date requested again).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from smartcity.lake import Lake
from smartcity.layout import table_partition_key
from smartcity.services.postgres import deployment_home
from smartcity.services.processes import free_port, stop_sessions
from smartcity.settings import Settings
from smartcity.topics import create_topics
from tests.cluster_support import service_env
from tests.dagster_support import (
    BIN,
    LOCATION,
    code_server_answers,
    code_server_command,
    graphql,
    start_dagster,
    wait_for,
    webserver_graphql,
)
from tests.postgres_support import DEPLOYMENT_DAGSTER, fresh_database
from tests.stream_support import produce_simulation, start_worker, worker_env
from tests.test_dagster_publish import CHECK_STATUSES
from tests.test_dagster_webserver import PARTITIONED

pytestmark = pytest.mark.integration

DAY = "2026-11-20"
SENSOR = "stream_progress_sensor"
READING_EVERY_MS = 300_000

RUNS = """query($value: String!) { runsOrError(filter: {tags: [{key: "dagster/partition",
  value: $value}]}) { ... on Runs { results { runId status tags { key value } } } } }"""
SENSOR_STATE = """query($selector: SensorSelector!) { sensorOrError(sensorSelector: $selector) {
  __typename ... on Sensor { sensorState { status
    typeSpecificData { ... on SensorData { lastCursor } }
    ticks(limit: 20) { status timestamp runKeys cursor error { message } } } } } }"""


def land_a_small_day(cluster_settings: Settings) -> Settings:
    """DAY's last hour and the next day's first half hour, landed on MinIO by the real
    worker: every reading partition's watermark passes DAY's end, so DAY is complete, and
    its readings reach into its last hour (the `freshness` check)."""
    settings = cluster_settings.model_copy(
        update={
            "topic_prefix": f"{cluster_settings.topic_prefix}daemon.",
            "lake_uri": f"{cluster_settings.lake_uri}-daemon",
        }
    )
    create_topics(settings)
    start = datetime.fromisoformat(DAY).replace(tzinfo=UTC) + timedelta(hours=23)
    produce_simulation(
        settings,
        steps=19,
        interval_ms=READING_EVERY_MS,
        start_ms=int(start.timestamp() * 1000),
    )
    worker = start_worker(settings, "--until-idle", "5")
    _, stderr = worker.communicate(timeout=600)
    assert worker.returncode == 0, stderr.decode()[-2000:]
    return settings


def sensor_state(url: str) -> dict:
    selector = {"repositoryLocationName": LOCATION, "repositoryName": "__repository__"}
    answer = graphql(url, SENSOR_STATE, {"selector": {**selector, "sensorName": SENSOR}})
    sensor = answer["sensorOrError"]
    assert sensor["__typename"] == "Sensor", sensor
    return sensor["sensorState"]


def day_runs(url: str) -> list[dict]:
    return graphql(url, RUNS, {"value": DAY})["runsOrError"]["results"]


def cursor_entry(url: str) -> dict:
    """DAY's entry in the sensor's cursor as the instance stores it ({} before one)."""
    cursor = sensor_state(url)["typeSpecificData"]["lastCursor"]
    return orjson.loads(cursor).get(DAY, {}) if cursor else {}


def test_the_daemon_builds_a_completed_date_and_keeps_the_cursor(
    cluster_settings: Settings, tmp_path: Path
) -> None:
    settings = land_a_small_day(cluster_settings)
    assert settings.spark_master.startswith("spark://") and settings.spark_executor_python
    code_port, ui_port = free_port(), free_port()
    with fresh_database(service_env(settings, "postgres")) as database:
        env = {
            **worker_env(settings),
            **database,
            "SMARTCITY_SPARK_MASTER": settings.spark_master,
            "SMARTCITY_SPARK_EXECUTOR_PYTHON": settings.spark_executor_python,
            "DAGSTER_HOME": str(deployment_home(tmp_path / "dagster")),
            "DAGSTER_MAX_CONCURRENT_RUNS": "1",
            "DAGSTER_CODE_SERVER_HOST": "127.0.0.1",
            "DAGSTER_CODE_SERVER_PORT": str(code_port),
            "SMARTCITY_SPARK_DRIVER_MEMORY": "1g",
        }
        workspace = str(DEPLOYMENT_DAGSTER / "workspace.yaml")
        logs = tmp_path / "logs"
        logs.mkdir()
        code = start_dagster(code_server_command(code_port), env, logs / "code-1.log")
        started = [code]
        try:
            wait_for(lambda: code_server_answers(code_port), 180, "code server")
            webserver = [str(BIN / "dagster-webserver"), "-w", workspace]
            started += [
                start_dagster(
                    [*webserver, "-h", "127.0.0.1", "-p", str(ui_port)], env, logs / "web.log"
                ),
                start_dagster(
                    [str(BIN / "dagster-daemon"), "run", "-w", workspace], env, logs / "daemon.log"
                ),
            ]
            url = webserver_graphql(ui_port)

            def succeeded() -> bool:
                runs = day_runs(url)
                assert all(r["status"] not in ("FAILURE", "CANCELED") for r in runs), runs
                return bool(runs) and runs[0]["status"] == "SUCCESS"

            wait_for(succeeded, 900, f"a successful run for {DAY}")
            [run] = day_runs(url)
            tags = {t["key"]: t["value"] for t in run["tags"]}
            assert tags["dagster/sensor_name"] == SENSOR and tags["smartcity/attempt"] == "1"

            lake = Lake.from_settings(settings)
            for name in PARTITIONED:
                assert lake.exists(table_partition_key(name, DAY)), name
            passed = [{"startKey": DAY, "endKey": DAY, "status": "SUCCEEDED"}]
            statuses = {
                (node["assetKey"]["path"][-1], check["name"]): check["partitionStatuses"]["ranges"]
                for node in graphql(url, CHECK_STATUSES)["assetNodes"]
                if node["assetKey"]["path"][-1] in PARTITIONED
                for check in node["assetChecksOrError"].get("checks", [])
            }
            assert statuses and all(r == passed for r in statuses.values()), statuses

            def recorded_built() -> bool:
                return cursor_entry(url).get("state") == "built"

            wait_for(recorded_built, 180, "the sensor to record the date as built")
            before = cursor_entry(url)

            stop_sessions([code])
            restarted = time.time()
            code = start_dagster(code_server_command(code_port), env, logs / "code-2.log")
            started.append(code)
            wait_for(lambda: code_server_answers(code_port), 180, "restarted code server")

            def evaluated_after_restart() -> list[dict]:
                return [
                    tick
                    for tick in sensor_state(url)["ticks"]
                    if tick["timestamp"] > restarted and tick["status"] in ("SUCCESS", "SKIPPED")
                ]

            wait_for(lambda: bool(evaluated_after_restart()), 300, "a tick after the restart")
            ticks = evaluated_after_restart()
            assert all(tick["runKeys"] == [] for tick in ticks), ticks
            assert cursor_entry(url) == before, "a lost cursor would request the date again"
            assert len(day_runs(url)) == 1
        finally:
            stop_sessions(started)
