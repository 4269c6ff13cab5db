"""The batch layer end to end on data landed by the real stream worker, with real Spark."""

from __future__ import annotations

import shutil
import threading
from collections import Counter
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import dagster as dg
import duckdb
import orjson
import pandas as pd
import pyarrow as pa
import pytest

from smartcity.lake import Lake
from smartcity.layout import LANDING, landing_dir, quality_key, table_partition_key
from smartcity.registry import load_registry, published_registry
from smartcity.settings import SENSOR_TYPES
from smartcity_dagster.spark import spark_url
from smartcity_dagster.transforms.anomalies import detect_batch
from smartcity_stream.rules import RuleConfig
from tests.dagster_support import dagster_home, materialize_day, smartcity_env, spark_session

pytestmark = pytest.mark.integration

DAY = "2026-11-27"


def _day_of_seq(seq: int) -> str:
    return datetime.fromtimestamp(seq * 60, UTC).strftime("%Y-%m-%d")


@pytest.fixture(scope="module")
def built(two_day_landing, tmp_path_factory):
    settings, produced = two_day_landing
    with pytest.MonkeyPatch.context() as monkeypatch, smartcity_env(monkeypatch, settings):
        home = dagster_home(tmp_path_factory.mktemp("dagster"))
        monkeypatch.setenv("DAGSTER_HOME", str(home))
        with dg.DagsterInstance.get() as instance:
            result = materialize_day(DAY, instance)
    return settings, produced, result


def test_clean_rows_are_the_acknowledged_readings(built) -> None:
    settings, produced, result = built
    assert result.success
    lake = Lake.from_settings(settings)
    expected = {pair for pair in produced.readings if _day_of_seq(pair[1]) == DAY}
    found = set()
    for sensor_type in SENSOR_TYPES:
        table = lake.read_parquet(table_partition_key(f"clean_{sensor_type}", DAY))
        pairs = list(zip(table["sensor_id"].to_pylist(), table["seq"].to_pylist(), strict=True))
        assert len(pairs) == len(set(pairs)), "clean holds a (sensor_id, seq) twice"
        found |= set(pairs)
        assert table.column("district").null_count == 0
    assert found == expected


def test_aggregates_equal_an_independent_computation(built) -> None:
    settings, _, _ = built
    lake = Lake.from_settings(settings)
    db = duckdb.connect()

    def landed(sensor_type: str) -> str:
        folder = lake.path(landing_dir(sensor_type, DAY))
        return (
            f"(SELECT * FROM read_parquet('{folder}/*/*.parquet', hive_partitioning=false) "
            "QUALIFY row_number() OVER (PARTITION BY sensor_id, seq "
            "ORDER BY kafka_partition, kafka_offset) = 1)"
        )

    traffic = dict(
        db.sql(
            f"SELECT sensor_id, sum(vehicle_count) FROM {landed('traffic')} GROUP BY 1"
        ).fetchall()
    )
    weather = dict(
        db.sql(
            f"SELECT sensor_id, round(sum(precipitation_mm), 6) FROM {landed('weather')} GROUP BY 1"
        ).fetchall()
    )
    energy = {
        row[0]: (row[1], row[2])
        for row in db.sql(
            "SELECT sensor_id, round(max(energy_kwh) - min(energy_kwh), 3), max(power_kw) "
            f"FROM {landed('energy')} GROUP BY 1"
        ).fetchall()
    }

    def day_rows(asset: str) -> list[dict]:
        table = lake.read_parquet(table_partition_key(asset, DAY)).to_pylist()
        return [r for r in table if r["level"] == "sensor" and r["granularity"] == "day"]

    assert {r["sensor_id"]: r["vehicles"] for r in day_rows("daily_traffic_aggregates")} == traffic
    assert {
        r["sensor_id"]: round(r["rain_mm"], 6) for r in day_rows("daily_weather_aggregates")
    } == weather
    assert {
        r["sensor_id"]: (round(r["kwh_consumed"], 3), r["peak_kw"])
        for r in day_rows("daily_energy_aggregates")
    } == energy
    hours = lake.read_parquet(table_partition_key("daily_traffic_aggregates", DAY)).to_pylist()
    district_hours = [r for r in hours if r["level"] == "district" and r["granularity"] == "hour"]
    assert sum(r["vehicles"] for r in district_hours) == sum(traffic.values())


def test_district_slices_equal_an_independent_computation(built) -> None:
    """Slices rolled up from per-sensor hourly partials (the hours' speeds for the 85th
    percentile) agree with DuckDB over the clean rows."""
    settings, _, _ = built
    lake = Lake.from_settings(settings)
    clean = lake.path(table_partition_key("clean_traffic", DAY))
    expected = {
        row[0]: row[1:]
        for row in duckdb.connect()
        .sql(
            "SELECT district, count(*), sum(vehicle_count), "
            "sum(average_speed_kmh * vehicle_count) / "
            "sum(CASE WHEN average_speed_kmh IS NOT NULL THEN vehicle_count END), "
            "quantile_cont(average_speed_kmh, 0.85) "
            f"FROM read_parquet('{clean}') GROUP BY 1"
        )
        .fetchall()
    }
    rows = lake.read_parquet(table_partition_key("daily_traffic_aggregates", DAY)).to_pylist()
    days = [r for r in rows if r["level"] == "district" and r["granularity"] == "day"]
    assert {r["district"] for r in days} == set(expected)
    for row in days:
        readings, vehicles, mean_speed, p85 = expected[row["district"]]
        assert (row["readings"], row["vehicles"]) == (readings, vehicles)
        assert row["mean_speed_kmh"] == pytest.approx(mean_speed)
        assert row["p85_speed_kmh"] == pytest.approx(p85, rel=1e-12)


def test_quality_is_in_the_lake(built) -> None:
    settings, _, result = built
    lake = Lake.from_settings(settings)
    record = orjson.loads(lake.read_bytes(quality_key("clean_traffic", DAY)))
    checks = {c["name"]: c for c in record["checks"]}
    assert checks["contract_schema"]["passed"] and checks["contract_schema"]["blocking"]
    assert checks["no_loss"]["passed"]
    assert {"anomaly_summary", "daily_energy_aggregates", "raw_weather"} <= _materialized(result)


def _in_utc(frame: pd.DataFrame) -> pd.DataFrame:
    """Event times as UTC instants, whichever reader made the frame (Spark's are naive UTC)."""
    return frame.assign(event_time=pd.to_datetime(frame["event_time"], utc=True))


def _stream_anomalies(lake: Lake) -> pd.DataFrame:
    """Every anomaly the stream worker landed for the day (one folder per hour)."""
    folder = lake.path(f"{LANDING}/anomalies/date={DAY}")
    query = f"SELECT * FROM read_parquet('{folder}/*/*.parquet', hive_partitioning=false)"
    return _in_utc(duckdb.connect().sql(query).df())


def _batch_anomalies(lake: Lake) -> pd.DataFrame:
    """Every anomaly the stream's rules find when re-run over the day's clean tables."""
    spark, sensors = spark_session(), published_registry(lake).sensors()
    found = [
        detect_batch(
            spark.read.parquet(spark_url(lake, table_partition_key(f"clean_{t}", DAY))),
            sensors,
            RuleConfig(),
            tasks=2,
        ).toPandas()
        for t in SENSOR_TYPES
    ]
    return _in_utc(pd.concat(found, ignore_index=True))


def _within(frame: pd.DataFrame, sensor: str, kind: str, when: pd.Timestamp) -> pd.DataFrame:
    gap = pd.Timedelta(RuleConfig().episode_gap_s, "s")
    same = frame[(frame["sensor_id"] == sensor) & (frame["kind"] == kind)]
    return same[(same["event_time"] - when).abs() <= gap]


def test_anomaly_events_reconcile_the_stream_with_the_batch(built) -> None:
    """Each stream anomaly appears once, as `both` when the batch rules found the same kind
    on the sensor within the episode gap (each batch anomaly matching one stream anomaly at
    most), and each batch anomaly not so matched appears once as `batch`."""
    settings, _, _ = built
    lake = Lake.from_settings(settings)
    stream, batch = _stream_anomalies(lake), _batch_anomalies(lake)
    events = _in_utc(lake.read_parquet(table_partition_key("anomaly_events", DAY)).to_pandas())
    by_source = events["source"].value_counts().to_dict()
    assert set(by_source) == {"stream", "batch", "both"}, by_source

    seen_by_stream = events[events["source"].isin(["stream", "both"])]
    assert Counter(seen_by_stream["anomaly_id"]) == Counter(stream["anomaly_id"])
    batch_only = events[events["source"] == "batch"]
    assert Counter(batch_only["anomaly_id"]) <= Counter(batch["anomaly_id"])
    for row in events.itertuples():
        near = _within(batch, row.sensor_id, row.kind, row.event_time)
        if row.source == "both":
            assert not near.empty, f"{row.anomaly_id} has no batch anomaly to match"
        if row.source == "stream":
            unmatched = _within(batch_only, row.sensor_id, row.kind, row.event_time)
            assert unmatched.empty, f"{row.anomaly_id} was left beside a batch anomaly"
    matched = events[events["source"] == "both"].groupby(["kind", "sensor_id"]).size()
    left = batch_only.groupby(["kind", "sensor_id"]).size()
    found = batch.groupby(["kind", "sensor_id"]).size()
    assert matched.add(left, fill_value=0).astype(int).to_dict() == found.to_dict()

    registry = published_registry(lake).sensors()
    assert (events["district"] == events["sensor_id"].map(lambda s: registry[s]["district"])).all()


def test_anomaly_summary_counts_each_source(built) -> None:
    """Per kind and sensor, what the stream landed and what the batch rules find, counted
    here from the two sets themselves."""
    settings, _, _ = built
    lake = Lake.from_settings(settings)
    expected = (
        pd.DataFrame(
            {
                "stream_count": _stream_anomalies(lake).groupby(["kind", "sensor_id"]).size(),
                "batch_count": _batch_anomalies(lake).groupby(["kind", "sensor_id"]).size(),
            }
        )
        .fillna(0)
        .astype(int)
    )
    summary = lake.read_parquet(table_partition_key("anomaly_summary", DAY)).to_pandas()
    counted = summary.set_index(["kind", "sensor_id"])[["stream_count", "batch_count"]]
    assert len(expected) > 0
    assert counted.astype(int).to_dict("index") == expected.to_dict("index")


def test_clean_records_the_registry_version_it_joined(built) -> None:
    settings, _, result = built
    lake = Lake.from_settings(settings)
    in_force = load_registry(lake)
    assert in_force.version >= 1
    assert published_registry(lake).version == in_force.version
    versions = {
        event.event_specific_data.materialization.metadata["registry_version"].value
        for event in result.get_asset_materialization_events()
        if event.event_specific_data.materialization.asset_key.path[0].startswith("clean_")
    }
    assert versions == {in_force.version}


def _materialized(result: dg.ExecuteInProcessResult) -> set[str]:
    return {
        event.event_specific_data.materialization.asset_key.to_user_string()
        for event in result.get_asset_materialization_events()
    }


class _Webhook(BaseHTTPRequestHandler):
    received: ClassVar[list[dict]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Webhook.received.append(orjson.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        """Quiet."""


def test_a_blocking_failure_stops_downstream_and_alerts_once(two_day_landing, tmp_path) -> None:
    settings, _ = two_day_landing
    source = Path(Lake.from_settings(settings).root)
    broken = tmp_path / "lake"
    shutil.copytree(source, broken, ignore=shutil.ignore_patterns("tables", "quality"))
    bad = settings.model_copy(update={"lake_uri": broken.as_uri()})
    _wind_back_one_meter(Lake.from_settings(bad))

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Webhook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Webhook.received.clear()
    try:
        with pytest.MonkeyPatch.context() as monkeypatch, smartcity_env(monkeypatch, bad):
            monkeypatch.setenv(
                "SMARTCITY_ALERT_WEBHOOK_URL", f"http://127.0.0.1:{server.server_port}/"
            )
            monkeypatch.setenv("DAGSTER_HOME", str(dagster_home(tmp_path / "dagster")))
            with dg.DagsterInstance.get() as instance:
                result = materialize_day(DAY, instance)
                from smartcity_dagster.sensors import check_failure_alerts

                context = dg.build_sensor_context(instance=instance)
                check_failure_alerts(context)
                again = dg.build_sensor_context(instance=instance, cursor=context.cursor)
                check_failure_alerts(again)
    finally:
        server.shutdown()

    assert not result.success
    failed = [
        e.event_specific_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION" and not e.event_specific_data.passed
    ]
    assert ("clean_energy", "contract_schema") in {
        (f.asset_key.to_user_string(), f.check_name) for f in failed
    }
    materialized = _materialized(result)
    assert "daily_energy_aggregates" not in materialized
    assert "anomaly_summary" not in materialized
    assert "daily_traffic_aggregates" in materialized
    alerts = [(a["asset"], a["check"]) for a in _Webhook.received]
    assert sorted(alerts) == sorted((f.asset_key.to_user_string(), f.check_name) for f in failed), (
        "one alert per failed check, none twice"
    )
    energy_alert = next(a for a in _Webhook.received if a["check"] == "contract_schema")
    assert energy_alert["severity"] == "ERROR" and energy_alert["partition"] == DAY


def _wind_back_one_meter(lake: Lake) -> None:
    """Replace one landed energy file by the same rows with one meter reading set lower:
    every row still within the contract, the day no longer plausible."""
    info = next(
        i for i in lake.list_files(landing_dir("energy", DAY)) if i.path.endswith(".parquet")
    )
    key = info.path.removeprefix(lake.root + "/")
    table = lake.read_parquet(key).sort_by([("sensor_id", "ascending"), ("seq", "ascending")])
    meters = table["energy_kwh"].to_pylist()
    index = next(
        i for i in range(1, len(meters)) if table["sensor_id"][i] == table["sensor_id"][i - 1]
    )
    meters[index] = max(meters[index - 1] - 50.0, 0.0)
    column = table.schema.get_field_index("energy_kwh")
    table = table.set_column(column, "energy_kwh", pa.array(meters, pa.float64()))
    lake.write_parquet(key, table)
