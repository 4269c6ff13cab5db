"""Dagster as a data engineer uses it: the webserver's GraphQL API and the daemon's backfills."""

from __future__ import annotations

import os
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from smartcity.demo import dagster_webserver_command
from smartcity.lake import Lake
from smartcity.layout import table_partition_key
from smartcity.services.processes import free_port, stop_sessions
from smartcity.settings import Settings
from smartcity.topics import create_topics
from tests.dagster_support import (
    MATERIALIZE,
    dagster_home,
    graphql,
    screenshot_asset_graph,
    start_dagster,
    wait_for,
    webserver_graphql,
)
from tests.stream_support import produce_simulation, start_worker, worker_env
from tests.test_dagster_publish import CHECK_STATUSES

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]
BIN = REPO / ".venv" / "bin"
DOCS_SCREENSHOT = REPO / "docs" / "img" / "dagster-asset-graph.png"
"""Replaced only with `make docs-images` (SMARTCITY_REFRESH_DOCS_IMAGES=1): a test run
otherwise leaves the working tree as it found it."""
PARTITIONED = [
    *(f"{layer}_{t}" for layer in ("raw", "clean") for t in ("traffic", "weather", "energy")),
    *(f"daily_{t}_aggregates" for t in ("traffic", "weather", "energy")),
    "anomaly_summary",
]

ASSET_GRAPH = """{ assetNodes { assetKey { path } dependencyKeys { path } isPartitioned
  assetChecksOrError { ... on AssetChecks { checks { name blocking } } } } }"""
LAUNCH = """mutation($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
  __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message } } }"""
IN_FLIGHT = """{ runsOrError(filter: {statuses: [QUEUED, NOT_STARTED, STARTING, STARTED]}) {
  ... on Runs { results { runId } } } }"""
STATUS = """query($id: String!) { partitionBackfillOrError(backfillId: $id) {
  ... on PartitionBackfill { status } ... on PythonError { message } } }"""


READING_EVERY_MS = 300_000
FAULTS = "duplicate=0.01,malformed=0.005,out_of_range=0.005,late=0.005"


def land_two_full_days(live_settings: Settings, lake_dir: Path) -> tuple[Settings, list[str]]:
    """The two dates before today (UTC), landed by the real worker with faults, a reading
    every five minutes from the first date's last hour to the second date's end: each date
    has readings in its last hour, as a finished day has (the `freshness` check). Dates
    near the clock, so that partitions starting at the first (the UI's) are mostly built."""
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    first, second = today - timedelta(days=2), today - timedelta(days=1)
    start = first + timedelta(hours=23)
    settings = live_settings.model_copy(
        update={"topic_prefix": f"{live_settings.topic_prefix}web.", "lake_uri": lake_dir.as_uri()}
    )
    create_topics(settings)
    produce_simulation(
        settings,
        steps=(today - start) // timedelta(milliseconds=READING_EVERY_MS),
        interval_ms=READING_EVERY_MS,
        start_ms=int(start.timestamp() * 1000),
        faults=FAULTS,
    )
    worker = start_worker(settings, "--until-idle", "5")
    _, stderr = worker.communicate(timeout=600)
    assert worker.returncode == 0, stderr.decode()[-2000:]
    return settings, [first.date().isoformat(), second.date().isoformat()]


def test_graph_and_a_two_date_backfill(live_settings: Settings, tmp_path: Path) -> None:
    settings, dates = land_two_full_days(live_settings, tmp_path / "lake")
    env = {
        **worker_env(settings),
        "DAGSTER_HOME": str(dagster_home(tmp_path / "dagster")),
        "SMARTCITY_PARTITIONS_START": dates[0],
    }
    registry = subprocess.run(
        [*MATERIALIZE, "--select", "sensor_registry"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert registry.returncode == 0, registry.stderr[-3000:]
    port = free_port()
    started = [
        start_dagster(dagster_webserver_command(port), env),
        start_dagster([str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"], env),
    ]
    try:
        url = webserver_graphql(port)
        nodes = graphql(url, ASSET_GRAPH)["assetNodes"]
        by_name = {n["assetKey"]["path"][-1]: n for n in nodes}
        assert set(PARTITIONED) | {"sensor_registry"} <= set(by_name)
        assert all(by_name[name]["isPartitioned"] for name in PARTITIONED)
        assert ["raw_traffic"] in [d["path"] for d in by_name["clean_traffic"]["dependencyKeys"]]
        assert ["clean_energy"] in [
            d["path"] for d in by_name["daily_energy_aggregates"]["dependencyKeys"]
        ]
        checks = {
            c["name"]: c["blocking"]
            for c in by_name["clean_weather"]["assetChecksOrError"]["checks"]
        }
        assert checks["contract_schema"] is True and checks["freshness"] is False

        params = {
            "partitionNames": dates,
            "assetSelection": [{"path": [name]} for name in PARTITIONED],
        }
        launched = graphql(url, LAUNCH, {"params": params})["launchPartitionBackfill"]
        assert launched["__typename"] == "LaunchBackfillSuccess", launched
        backfill = launched["backfillId"]

        def done() -> bool:
            status = graphql(url, STATUS, {"id": backfill})["partitionBackfillOrError"]["status"]
            assert status not in ("FAILED", "FAILING", "COMPLETED_FAILED", "CANCELED"), status
            return status in ("COMPLETED", "COMPLETED_SUCCESS")

        wait_for(done, 900, "the backfill")
        lake = Lake.from_settings(settings)
        for day in dates:
            for name in PARTITIONED:
                assert lake.exists(table_partition_key(name, day)), (name, day)
        wait_for(lambda: not graphql(url, IN_FLIGHT)["runsOrError"]["results"], 600, "runs")
        statuses = _check_statuses(url)
        passed = [{"startKey": dates[0], "endKey": dates[1], "status": "SUCCEEDED"}]
        assert statuses and all(r == passed for r in statuses.values()), statuses
        refresh = os.environ.get("SMARTCITY_REFRESH_DOCS_IMAGES")
        screenshot = DOCS_SCREENSHOT if refresh else tmp_path / "asset-graph.png"
        screenshot_asset_graph(f"http://127.0.0.1:{port}", screenshot)
        assert screenshot.stat().st_size > 50_000
    finally:
        stop_sessions(started)


def _check_statuses(url: str) -> dict[tuple[str, str], list[dict[str, str]]]:
    """Each check's evaluations by date range and status, as the UI colours them."""
    return {
        (node["assetKey"]["path"][0], check["name"]): check["partitionStatuses"]["ranges"]
        for node in graphql(url, CHECK_STATUSES)["assetNodes"]
        for check in node["assetChecksOrError"].get("checks", [])
    }
