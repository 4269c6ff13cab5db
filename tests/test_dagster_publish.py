"""Write, audit, publish on real Spark: a version that fails a blocking check never replaces
the published one, the API keeps serving what passed, the refused version is kept with its
results, one alert goes out; every date of a range run gets its own check evaluations."""

from __future__ import annotations

import shutil
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import dagster as dg
import orjson
import pyarrow as pa
import pytest
from dagster_graphql.test.utils import define_out_of_process_context, execute_dagster_graphql
from fastapi.testclient import TestClient

from smartcity.lake import Lake
from smartcity.layout import (
    TABLES,
    quality_key,
    rejected_checks_key,
    rejected_key,
    table_partition_key,
)
from smartcity.settings import Settings
from smartcity_api.app import API_PREFIX, create_app
from smartcity_dagster.tables import describe, publish_partition, set_aside, stage_table
from smartcity_dagster.tags import RANGE_END, RANGE_START
from tests.dagster_support import dagster_home, materialize_day, smartcity_env
from tests.test_dagster_pipeline import _Webhook, _wind_back_one_meter

pytestmark = pytest.mark.integration

FIRST, DAY = "2026-11-26", "2026-11-27"
REPO = Path(__file__).resolve().parents[1]
API_QUERIES = [
    f"{API_PREFIX}/{query}"
    for query in (
        f"aggregates/daily?date={DAY}&sensor_type=energy&granularity=hour",
        f"aggregates/daily?date={DAY}&sensor_type=traffic",
        f"export/clean_energy?date={DAY}&format=csv",
        f"quality?asset=clean_energy&date={DAY}",
        "quality?asset=clean_energy",
        f"anomalies?start={DAY}T00:00:00Z&end={DAY}T06:00:00Z",
    )
]
CHECK_STATUSES = """{ assetNodes { assetKey { path } assetChecksOrError { ... on AssetChecks {
  checks { name partitionStatuses { ... on AssetCheckTimePartitionStatuses {
    ranges { startKey endKey status } } } } } } } }"""


def published_files(lake: Lake, day: str) -> dict[str, bytes]:
    """Every published partition file of `day`, by key."""
    return {
        info.path.removeprefix(lake.root + "/"): lake.filesystem.open_input_stream(info.path).read()
        for info in lake.list_files(TABLES)
        if f"/date={day}/" in info.path
    }


def api_answers(settings: Settings) -> dict[str, tuple[int, bytes]]:
    with TestClient(create_app(settings)) as client:
        return {q: (r.status_code, r.content) for q in API_QUERIES for r in [client.get(q)]}


def alert_once(instance: dg.DagsterInstance, cursor: str | None) -> str | None:
    """The alert sensor's tick, twice from the same cursor's successor: nothing twice."""
    from smartcity_dagster.sensors import check_failure_alerts

    context = dg.build_sensor_context(instance=instance, cursor=cursor)
    check_failure_alerts(context)
    again = dg.build_sensor_context(instance=instance, cursor=context.cursor)
    check_failure_alerts(again)
    return again.cursor


def check_statuses(instance: dg.DagsterInstance) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """What the UI shows per check and date (GraphQL over a code server of the definitions)."""
    with define_out_of_process_context(str(REPO / "workspace.yaml"), None, instance) as context:
        nodes = execute_dagster_graphql(context, CHECK_STATUSES).data["assetNodes"]
    return {
        (node["assetKey"]["path"][0], check["name"]): check["partitionStatuses"]["ranges"]
        for node in nodes
        for check in node["assetChecksOrError"].get("checks", [])
    }


@pytest.fixture(scope="module")
def rebuilt(two_day_landing, tmp_path_factory):
    """Two dates built in one range run, then DAY rebuilt from a landing with a falling meter."""
    settings, _ = two_day_landing
    lake_dir = tmp_path_factory.mktemp("publish") / "lake"
    shutil.copytree(
        Lake.from_settings(settings).root, lake_dir, ignore=shutil.ignore_patterns("tables")
    )
    own = settings.model_copy(update={"lake_uri": lake_dir.as_uri()})
    lake = Lake.from_settings(own)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Webhook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Webhook.received.clear()
    try:
        with pytest.MonkeyPatch.context() as monkeypatch, smartcity_env(monkeypatch, own):
            monkeypatch.setenv(
                "SMARTCITY_ALERT_WEBHOOK_URL", f"http://127.0.0.1:{server.server_port}/"
            )
            home = dagster_home(tmp_path_factory.mktemp("dagster"))
            monkeypatch.setenv("DAGSTER_HOME", str(home))
            with dg.DagsterInstance.get() as instance:
                from smartcity_dagster.runs import materialize_daily

                good = materialize_daily(
                    instance, None, tags={RANGE_START: FIRST, RANGE_END: DAY}, raise_on_error=False
                )
                cursor = alert_once(instance, None)
                before = {"files": published_files(lake, DAY), "api": api_answers(own)}
                statuses_before = check_statuses(instance)
                alerts_before = len(_Webhook.received)

                _wind_back_one_meter(lake)
                bad = materialize_day(DAY, instance)
                alert_once(instance, cursor)
                after = {"files": published_files(lake, DAY), "api": api_answers(own)}
                statuses_after = check_statuses(instance)
    finally:
        server.shutdown()
    return {
        "lake": lake,
        "good": good,
        "bad": bad,
        "before": before,
        "after": after,
        "statuses": (statuses_before, statuses_after),
        "alerts": _Webhook.received[alerts_before:],
    }


def _evaluations(result: dg.ExecuteInProcessResult) -> list[Any]:
    return [
        e.event_specific_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    ]


def _materialized(result: dg.ExecuteInProcessResult) -> set[str]:
    return {
        e.event_specific_data.materialization.asset_key.to_user_string()
        for e in result.get_asset_materialization_events()
    }


def test_each_date_of_a_range_run_has_its_own_evaluations(rebuilt) -> None:
    good = rebuilt["good"]
    assert good.success
    dated: dict[tuple[str, str], list[str]] = {}
    for evaluation in _evaluations(good):
        check = (evaluation.asset_key.to_user_string(), evaluation.check_name)
        dated.setdefault(check, []).append(evaluation.partition)
    assert ("clean_energy", "contract_schema") in dated and ("raw_traffic", "has_readings") in dated
    assert all(sorted(days) == [FIRST, DAY] for days in dated.values()), dated
    statuses, _ = rebuilt["statuses"]
    assert statuses[("clean_energy", "contract_schema")] == [
        {"startKey": FIRST, "endKey": DAY, "status": "SUCCEEDED"}
    ]


def test_a_refused_version_leaves_every_published_file_and_answer(rebuilt) -> None:
    before, after = rebuilt["before"]["files"], rebuilt["after"]["files"]
    raw_energy = table_partition_key("raw_energy", DAY)
    assert set(before) == set(after)
    assert before[raw_energy] != after[raw_energy], "raw is the changed landing, and passed"
    changed = [key for key in before if key != raw_energy and before[key] != after[key]]
    assert changed == []
    assert table_partition_key("clean_energy", DAY) in before
    assert table_partition_key("anomaly_events", DAY) in before
    assert rebuilt["after"]["api"] == rebuilt["before"]["api"]
    statuses = {query: status for query, (status, _) in rebuilt["before"]["api"].items()}
    assert statuses == dict.fromkeys(API_QUERIES, 200)


def test_the_refused_version_is_kept_with_its_results(rebuilt) -> None:
    lake, bad = rebuilt["lake"], rebuilt["bad"]
    version = bad.run_id
    record = orjson.loads(lake.read_bytes(rejected_checks_key("clean_energy", DAY, version)))
    checks = {c["name"]: c for c in record["checks"]}
    assert not checks["contract_schema"]["passed"] and checks["contract_schema"]["blocking"]
    assert record["rejected_version"] == version
    refused = lake.read_parquet(rejected_key("clean_energy", DAY, version))
    published = lake.read_parquet(table_partition_key("clean_energy", DAY))
    assert refused.num_rows == published.num_rows
    assert not refused.equals(published), "the refused version holds the fallen meter"
    assert lake.exists(rejected_key("clean_energy_rejects", DAY, version))
    published_record = orjson.loads(lake.read_bytes(quality_key("clean_energy", DAY)))
    assert all(c["passed"] or not c["blocking"] for c in published_record["checks"])
    staging = [i.path for i in lake.list_files(TABLES) if "/_staging/" in i.path]
    assert staging == [], "nothing is left in staging"


def test_downstream_of_a_refused_version_is_not_built(rebuilt) -> None:
    bad = rebuilt["bad"]
    assert not bad.success
    materialized = _materialized(bad)
    assert {"raw_energy", "daily_traffic_aggregates", "clean_weather"} <= materialized
    assert not {"clean_energy", "daily_energy_aggregates", "anomaly_summary"} & materialized
    _, statuses = rebuilt["statuses"]
    assert statuses[("clean_energy", "contract_schema")] == [
        {"startKey": FIRST, "endKey": FIRST, "status": "SUCCEEDED"},
        {"startKey": DAY, "endKey": DAY, "status": "FAILED"},
    ]


def test_exactly_one_alert_for_the_refused_version(rebuilt) -> None:
    failed = [e for e in _evaluations(rebuilt["bad"]) if not e.passed]
    alerts = rebuilt["alerts"]
    assert sorted((a["asset"], a["check"], a["partition"]) for a in alerts) == sorted(
        (e.asset_key.to_user_string(), e.check_name, e.partition) for e in failed
    ), "one alert per failed evaluation, none twice"
    errors = [(a["asset"], a["check"], a["partition"]) for a in alerts if a["severity"] == "ERROR"]
    assert errors == [("clean_energy", "contract_schema", DAY)]


def test_publish_and_set_aside_on_s3(live_settings: Settings) -> None:
    """The move that publishes or sets a version aside, on the S3 server: the published
    object is the old one or the new one, and a refused one lands only in quality/."""
    lake = Lake.from_settings(
        live_settings.model_copy(update={"lake_uri": f"{live_settings.lake_uri}-publish"})
    )
    asset, day = "clean_weather", DAY

    def version(rows: int) -> pa.Table:
        return pa.table({"seq": pa.array(range(rows), pa.int64())})

    first = publish_partition(lake, stage_table(lake, version(3), asset, day), asset, day)
    published = lake.read_bytes(first.key)
    refused = stage_table(lake, version(5), asset, day)
    kept = set_aside(lake, refused, rejected_key(asset, day, "run-1"))
    assert lake.read_bytes(table_partition_key(asset, day)) == published
    assert describe(lake, kept.key).rows == 5
    second = publish_partition(lake, stage_table(lake, version(7), asset, day), asset, day)
    assert second.key == table_partition_key(asset, day)
    assert lake.read_parquet(second.key).num_rows == 7
    assert [i.path for i in lake.list_files(TABLES) if "/_staging/" in i.path] == []
