"""The clean transform and the scalable checks on real local Spark, with planted bad rows:
a check that could fail does fail, and the counts add up."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from pyspark.sql import functions as F

from smartcity.lake import Lake
from smartcity.settings import Settings
from smartcity_dagster import checks
from smartcity_dagster.tables import write_partition
from smartcity_dagster.transforms.balance import range_label
from smartcity_dagster.transforms.clean import clean, rejected_rows
from smartcity_dagster.transforms.profile import table_profile
from smartcity_stream.landing import landing_schema
from tests.dagster_support import spark_session

START = datetime(2026, 11, 27, tzinfo=UTC)


@pytest.fixture(scope="module")
def spark() -> Any:
    return spark_session()


def weather(seq: int, offset: int, sensor: str = "WEATHER_0001", **values: Any) -> dict:
    return {
        "sensor_id": sensor,
        "sensor_type": "weather",
        "event_time": START + timedelta(minutes=seq),
        "seq": seq,
        "interval_s": 60.0,
        "temperature_c": 5.0,
        "humidity_pct": 80.0,
        "pressure_hpa": 1010.0,
        "wind_speed_ms": 3.0,
        "precipitation_mm": 0.0,
        "source": "simulated",
        "kafka_partition": 0,
        "kafka_offset": offset,
        **values,
    }


def energy(seq: int, kwh: float) -> dict:
    return {
        "sensor_id": "ENERGY_0001",
        "sensor_type": "energy",
        "event_time": START + timedelta(minutes=seq),
        "seq": seq,
        "interval_s": 60.0,
        "power_kw": 2.0,
        "voltage_v": 230.0,
        "current_a": 8.0,
        "energy_kwh": kwh,
        "kafka_partition": 0,
        "kafka_offset": seq,
    }


def frame(spark: Any, sensor_type: str, rows: list[dict]) -> Any:
    return spark.createDataFrame(pa.Table.from_pylist(rows, schema=landing_schema(sensor_type)))


REGISTRY = pa.Table.from_pylist(
    [
        {"sensor_id": "WEATHER_0001", "district": "centre", "latitude": 52.5, "longitude": 13.4},
        {"sensor_id": "ENERGY_0001", "district": "north", "latitude": 52.6, "longitude": 13.4},
    ]
)


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    return Lake.from_settings(Settings(_env_file=None, lake_uri=(tmp_path / "lake").as_uri()))


def profile_of(
    lake: Lake, table: Any, sensor_type: str
) -> tuple[dict[str, Any], list[dict], pa.Schema]:
    """Written as the asset writes it: the profile, the rows and the file's schema."""
    asset, day = f"clean_{sensor_type}", "2026-11-27"
    written = write_partition(table, lake, asset, day)
    profile = table_profile(written, lake, sensor_type)
    return profile, lake.read_parquet(written.key).to_pylist(), written.schema


def test_clean_splits_duplicates_and_rejects_and_accounts_for_every_row(spark, lake) -> None:
    rows = [
        weather(1, 0),
        weather(1, 5, temperature_c=99.0),  # a later, broken copy of a valid reading
        weather(2, 1),
        weather(2, 2),  # an identical redelivery
        weather(3, 3, temperature_c=-80.0),  # out of the contract's range
        weather(4, 4, sensor="WEATHER_0999"),  # not in the registry
        weather(5, 6, sensor_type="traffic"),  # a reading of another type
    ]
    raw = frame(spark, "weather", rows)
    outcome = clean(raw, REGISTRY, "weather")
    stats, kept, _ = profile_of(lake, outcome.clean, "weather")
    rejected = rejected_rows(raw, REGISTRY, "weather").toArrow().to_pylist()
    assert [(r["sensor_id"], r["seq"]) for r in kept] == [("WEATHER_0001", 1), ("WEATHER_0001", 2)]
    assert kept[0]["kafka_offset"] == 0 and kept[0]["district"] == "centre"
    assert sorted(r["reject_reason"] for r in rejected) == [
        "sensor_type is not weather",
        "temperature_c below -60",
        "unknown sensor",
    ]
    counts = outcome.counts.get
    assert counts == {"rows": 7, "duplicates": 2, "rejects": 3}
    assert checks.no_loss(counts["rows"], len(kept), len(rejected), counts["duplicates"]).passed
    assert stats["rows"] == 2 and stats["duplicate_keys"] == 0


def test_sensor_ids_are_held_to_the_common_pattern_and_the_types_own(spark) -> None:
    """Both patterns of the contract apply, to a sensor the registry lists (judged once on
    the registry's side) as to one it does not (judged per row)."""
    listed = pa.Table.from_pylist(
        [
            *REGISTRY.to_pylist(),
            {"sensor_id": "WEATHER_01", "district": "east", "latitude": 52.5, "longitude": 13.5},
        ]
    )
    rows = [
        weather(1, 0),
        weather(2, 1, sensor="WEATHER_01"),  # listed, but not in the common id format
        weather(3, 2, sensor="ENERGY_0001"),  # listed, in the format, of another type
        weather(4, 3, sensor="WEATHER_7"),  # neither listed nor in the format
    ]
    raw = frame(spark, "weather", rows)
    outcome = clean(raw, listed, "weather")
    reasons = {
        r["sensor_id"]: r["reject_reason"]
        for r in rejected_rows(raw, listed, "weather").toArrow().to_pylist()
    }
    common = "sensor_id does not match ^(TRAFFIC|WEATHER|ENERGY)_[0-9]{4,6}$"
    assert reasons == {
        "WEATHER_01": common,
        "ENERGY_0001": "sensor_id does not match ^WEATHER_",
        "WEATHER_7": common,
    }
    assert [r["sensor_id"] for r in outcome.clean.toArrow().to_pylist()] == ["WEATHER_0001"]


def test_contract_check_passes_on_good_rows_and_fails_on_each_kind_of_bad_row(spark, lake) -> None:
    places = {"district": "centre", "latitude": 52.5, "longitude": 13.4}
    good = [{**weather(seq, seq), **places} for seq in range(1, 5)]
    table = spark.createDataFrame(good)
    stats, _, schema = profile_of(lake, table, "weather")
    assert checks.contract_schema(stats, schema, "weather").passed

    bad = [
        *good,
        {**weather(5, 5, temperature_c=75.0), **places},
        {**weather(6, 6, source="guessed"), **places},
        {**weather(4, 7), **places},  # (sensor_id, seq) twice
    ]
    stats, _, schema = profile_of(lake, spark.createDataFrame(bad), "weather")
    result = checks.contract_schema(stats, schema, "weather")
    assert not result.passed
    failures = result.metadata["failures_by_check"].value
    assert any("less_than_or_equal_to(60)" in name for name in failures), failures
    assert any("isin" in name for name in failures), failures
    assert failures["unique (sensor_id, seq)"] == 1


def test_a_falling_meter_fails_and_nulls_count(spark, lake) -> None:
    places = {"district": "north", "latitude": 52.6, "longitude": 13.4}
    meters = [10.0, 10.5, 9.0, 11.0]
    rows = [{**energy(seq, kwh), **places} for seq, kwh in enumerate(meters, start=1)]
    rows[3]["power_kw"] = None
    stats, _, schema = profile_of(lake, spark.createDataFrame(rows, samplingRatio=1.0), "energy")
    result = checks.contract_schema(stats, schema, "energy")
    assert not result.passed
    assert result.metadata["failures_by_check"].value["energy_kwh never falls"] == 1
    assert "seq=3" in result.metadata["sequence_samples"].value["energy_kwh never falls"]
    assert not checks.null_rates(stats, schema.names).passed
    assert checks.freshness(stats, "2026-11-27").passed is False


def test_sensor_ranges_fill_every_shuffle_partition_evenly(spark) -> None:
    first, count = 10, 100
    label, partitions = range_label(spark, F.col("number"), first, count)
    numbers = spark.range(first, first + count).select(F.col("id").cast("int").alias("number"))
    spread = (
        numbers.repartition(partitions, label)
        .groupBy(F.spark_partition_id().alias("partition"))
        .count()
        .collect()
    )
    sizes = [row["count"] for row in spread]
    assert len(sizes) == partitions and max(sizes) - min(sizes) <= 1, sizes
