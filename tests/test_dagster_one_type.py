"""A city with traffic counters only, landed by the real worker and built as a user builds it:
the other types get empty partitions and a WARN that says so, never a failed run."""

from __future__ import annotations

import subprocess
from collections import Counter

import dagster as dg
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest

from simulator.registry import build_registry
from smartcity.lake import Lake
from smartcity.layout import table_partition_key
from smartcity.registry import import_registry
from smartcity.topics import create_topics
from tests.dagster_support import dagster_home
from tests.stream_support import SMARTCITY, landed, start_worker, worker_env

pytestmark = pytest.mark.integration

DAY = "2026-11-27"
SILENT = ("weather", "energy")


@pytest.fixture(scope="module")
def traffic_city(live_settings, tmp_path_factory):
    """Three hours of a traffic-only city's readings, landed, then `smartcity materialize`."""
    settings = live_settings.model_copy(
        update={
            "topic_prefix": f"{live_settings.topic_prefix}one.",
            "lake_uri": tmp_path_factory.mktemp("one-type").joinpath("lake").as_uri(),
        }
    )
    create_topics(settings)
    lake = Lake.from_settings(settings)
    table = build_registry().table()
    import_registry(lake, table.filter(pc.equal(table["sensor_type"], "traffic")))
    env = worker_env(settings)
    simulate = [SMARTCITY, "simulate", "--backfill-date", f"{DAY}T00:00", "--duration", "3h"]
    produced = subprocess.run(
        [*simulate, "--interval", "60", "--no-progress"], env=env, capture_output=True, text=True
    )
    assert produced.returncode == 0, produced.stderr[-2000:]
    worker = start_worker(settings, "--until-idle", "5")
    _, stderr = worker.communicate(timeout=600)
    assert worker.returncode == 0, stderr.decode()[-2000:]
    home = dagster_home(tmp_path_factory.mktemp("dagster"))
    built = subprocess.run(
        [SMARTCITY, "materialize", "--date", DAY],
        env={**env, "DAGSTER_HOME": str(home)},
        capture_output=True,
        text=True,
    )
    return lake, home, built


def test_materialize_exits_zero(traffic_city) -> None:
    _, _, built = traffic_city
    assert built.returncode == 0, (built.stdout + built.stderr)[-3000:]
    for sensor_type in SILENT:
        assert f"check raw_{sensor_type}.has_readings: FAIL (WARN)" in built.stdout


def test_traffic_is_built_and_correct(traffic_city) -> None:
    lake, _, _ = traffic_city
    files, _ = landed(lake, "traffic")
    readings = ds.dataset(files, filesystem=lake.filesystem).to_table().to_pylist()
    first: dict[tuple[str, int], dict] = {}
    for row in sorted(readings, key=lambda r: (r["kafka_partition"], r["kafka_offset"])):
        first.setdefault((row["sensor_id"], row["seq"]), row)
    clean = lake.read_parquet(table_partition_key("clean_traffic", DAY))
    pairs = set(zip(clean["sensor_id"].to_pylist(), clean["seq"].to_pylist(), strict=True))
    assert pairs == set(first) and clean.num_rows == len(first) > 0
    vehicles = Counter[str]()
    for (sensor, _), row in first.items():
        vehicles[sensor] += row["vehicle_count"]
    rows = lake.read_parquet(table_partition_key("daily_traffic_aggregates", DAY)).to_pylist()
    days = [r for r in rows if r["level"] == "sensor" and r["granularity"] == "day"]
    assert {r["sensor_id"]: r["vehicles"] for r in days} == dict(vehicles)


def test_silent_types_get_empty_partitions(traffic_city) -> None:
    lake, _, _ = traffic_city
    for sensor_type in SILENT:
        for asset in (f"raw_{sensor_type}", f"clean_{sensor_type}"):
            table = lake.read_parquet(table_partition_key(asset, DAY))
            assert table.num_rows == 0 and "sensor_id" in table.schema.names, asset
        aggregates = lake.read_parquet(table_partition_key(f"daily_{sensor_type}_aggregates", DAY))
        assert aggregates.num_rows == 0 and "period_start" in aggregates.schema.names
    assert lake.exists(table_partition_key("anomaly_summary", DAY))
    assert lake.exists(table_partition_key("anomaly_events", DAY))


def test_a_dated_warn_says_there_was_no_data(traffic_city, monkeypatch: pytest.MonkeyPatch) -> None:
    _, home, _ = traffic_city
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.DagsterInstance.get() as instance:
        for sensor_type in SILENT:
            key = dg.AssetCheckKey(dg.AssetKey(f"raw_{sensor_type}"), "has_readings")
            (record,) = instance.event_log_storage.get_asset_check_execution_history(key, limit=5)
            evaluation = record.event.dagster_event.event_specific_data
            assert (evaluation.partition, evaluation.passed) == (DAY, False)
            assert evaluation.severity == dg.AssetCheckSeverity.WARN
            assert evaluation.metadata["reason"].value == f"no {sensor_type} readings on {DAY}"
        traffic = dg.AssetCheckKey(dg.AssetKey("raw_traffic"), "has_readings")
        (record,) = instance.event_log_storage.get_asset_check_execution_history(traffic, limit=5)
        assert record.event.dagster_event.event_specific_data.passed
