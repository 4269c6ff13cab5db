"""The clean transform and the scalable checks, with planted bad rows: a check that could
fail does fail, and the counts add up. The clean transform and the contract check (the
Pandera schema's checks as Spark expressions, on every row) run on real local Spark; the
check also reads files written with pyarrow, in any order and cut into row groups of any
size, each row group read by a task of its own."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyspark.sql import functions as F

from smartcity.lake import Lake
from smartcity.settings import Settings
from smartcity_dagster import checks
from smartcity_dagster.tables import TableWrite, describe, write_partition
from smartcity_dagster.transforms.balance import range_label
from smartcity_dagster.transforms.clean import KEPT_ORDER, ORDER, clean, rejected_rows
from smartcity_dagster.transforms.profile import table_profile
from smartcity_stream.landing import landing_schema
from tests.dagster_support import spark_session

START = datetime(2026, 11, 27, tzinfo=UTC)


@pytest.fixture(scope="module")
def spark() -> Any:
    return spark_session()


@pytest.fixture
def split(spark: Any) -> Iterator[Any]:
    """The session, splitting a file into a task per row group (Spark's splits are byte
    ranges of at most this size; a row group goes to the split holding its middle)."""
    spark.conf.set("spark.sql.files.maxPartitionBytes", "1024")
    yield spark
    spark.conf.unset("spark.sql.files.maxPartitionBytes")


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


def written_as_asset(lake: Lake, table: Any, sensor_type: str) -> tuple[TableWrite, list[dict]]:
    """Written as the asset writes it: the staged file and its rows."""
    written = write_partition(table, lake, f"clean_{sensor_type}", "2026-11-27", ORDER)
    return written, lake.read_parquet(written.key).to_pylist()


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
    written = write_partition(
        outcome.kept, lake, "clean_weather", "2026-11-27", KEPT_ORDER, placed=outcome.placed
    )
    kept = lake.read_parquet(written.key).to_pylist()
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
    assert table_profile(written)["rows"] == 2
    assert checks.contract_schema(spark, lake, written, "weather").passed


def test_clean_rows_are_written_in_id_order_with_their_own_places(split, lake) -> None:
    """The rows cross the exchange and the writing task's sort under their sensor's number
    and get the registry's strings only then: the file is still in (sensor_id, seq) order,
    each row with its own sensor's place, however the tasks split the day."""
    sensors = [f"WEATHER_{n:04d}" for n in (12, 3, 7, 40)]
    registry = pa.Table.from_pylist(
        [
            {"sensor_id": s, "district": f"d{s[-2:]}", "latitude": 52.0, "longitude": 13.0}
            for s in sensors
        ]
    )
    keys = [(sensor, seq) for seq in range(30) for sensor in sensors]
    random.Random(5).shuffle(keys)
    rows = [weather(seq, offset, sensor=sensor) for offset, (sensor, seq) in enumerate(keys)]
    outcome = clean(frame(split, "weather", rows), registry, "weather")
    written = write_partition(
        outcome.kept, lake, "clean_weather", "2026-11-27", KEPT_ORDER, placed=outcome.placed
    )
    kept = lake.read_parquet(written.key).to_pylist()
    assert [(r["sensor_id"], r["seq"]) for r in kept] == sorted(keys)
    assert all(r["district"] == f"d{r['sensor_id'][-2:]}" for r in kept)


@pytest.mark.parametrize(
    "rows",
    [[], [weather(1, 0, temperature_c=-80.0), weather(2, 1, sensor="WEATHER_0999")]],
    ids=["no readings", "every reading rejected"],
)
def test_a_day_without_clean_rows_is_written_empty_and_counted(spark, lake, rows) -> None:
    """Spark's adaptive plan replaces what stands above a stage that turned out empty (here
    the registry's strings after the writing task's sort), and with it anything observed
    below: the counts must still come from the write."""
    outcome = clean(frame(spark, "weather", rows), REGISTRY, "weather")
    written = write_partition(
        outcome.kept, lake, "clean_weather", "2026-11-27", KEPT_ORDER, placed=outcome.placed
    )
    assert lake.read_parquet(written.key).num_rows == 0
    assert outcome.counts.get == {"rows": len(rows), "duplicates": 0, "rejects": len(rows)}


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
    written, _ = written_as_asset(lake, spark.createDataFrame(good), "weather")
    assert checks.contract_schema(spark, lake, written, "weather").passed

    bad = [
        *good,
        {**weather(5, 5, temperature_c=75.0), **places},
        {**weather(6, 6, source="guessed"), **places},
        {**weather(4, 7), **places},  # (sensor_id, seq) twice
    ]
    written, kept = written_as_asset(lake, spark.createDataFrame(bad), "weather")
    result = checks.contract_schema(spark, lake, written, "weather")
    assert not result.passed
    failures = result.metadata["failures_by_check"].value
    assert failures["less_than_or_equal_to(60)"] == 1, failures
    assert failures["isin(['simulated', 'openweather'])"] == 1, failures
    assert failures[checks.UNIQUE_KEY] == 1
    rows = result.metadata["sample_rows"].value
    assert [kept[i]["temperature_c"] for i in rows["less_than_or_equal_to(60)"]] == [75.0]
    assert [kept[i]["seq"] for i in rows[checks.UNIQUE_KEY]] == [4]


def test_a_falling_meter_fails_and_nulls_count(spark, lake) -> None:
    places = {"district": "north", "latitude": 52.6, "longitude": 13.4}
    meters = [10.0, 10.5, 9.0, 11.0]
    rows = [{**energy(seq, kwh), **places} for seq, kwh in enumerate(meters, start=1)]
    rows[3]["power_kw"] = None
    table = spark.createDataFrame(rows, samplingRatio=1.0)
    written, kept = written_as_asset(lake, table, "energy")
    result = checks.contract_schema(spark, lake, written, "energy")
    assert not result.passed
    assert result.metadata["failures_by_check"].value[checks.METER_RISES] == 1
    assert [kept[i]["seq"] for i in result.metadata["sample_rows"].value[checks.METER_RISES]] == [3]
    stats = table_profile(written)
    assert not checks.null_rates(stats, written.schema.names).passed
    assert checks.freshness(stats, "2026-11-27").passed is False


@pytest.mark.parametrize("partitions", [2, 200])
def test_sensor_ranges_fill_every_shuffle_partition_evenly(spark, partitions: int) -> None:
    """Local mode's partitions (one per core) and a cluster's (Spark's default 200)."""
    first, count = 10, 5 * partitions
    configured = spark.conf.get("spark.sql.shuffle.partitions")
    spark.conf.set("spark.sql.shuffle.partitions", str(partitions))
    try:
        label, planned = range_label(spark, F.col("number"), first, count)
    finally:
        spark.conf.set("spark.sql.shuffle.partitions", configured)
    assert planned == partitions
    numbers = spark.range(first, first + count).select(F.col("id").cast("int").alias("number"))
    spread = (
        numbers.repartition(partitions, label)
        .groupBy(F.spark_partition_id().alias("partition"))
        .count()
        .collect()
    )
    sizes = [row["count"] for row in spread]
    assert len(sizes) == partitions and max(sizes) - min(sizes) <= 1, sizes


PLACES = {"district": "north", "latitude": 52.6, "longitude": 13.4}
COMMON_ID = "str_matches('^(TRAFFIC|WEATHER|ENERGY)_[0-9]{4,6}$')"
ENERGY_ID = "str_matches('^ENERGY_')"


def clean_file_schema(sensor_type: str) -> pa.Schema:
    places = [("district", pa.string()), ("latitude", pa.float64()), ("longitude", pa.float64())]
    return pa.schema([*landing_schema(sensor_type), *places])


def meter_day(sensors: int, readings: int, seed: int) -> list[dict]:
    """A clean energy table in (sensor_id, seq) order: per sensor `seq` up by one from a
    random start, its meter never falling; `kafka_offset` is the row's place here."""
    rng, rows = random.Random(seed), []
    for number in range(sensors):
        seq, kwh = rng.randrange(10**6), rng.uniform(10.0, 1e5)
        for step in range(readings):
            kwh += rng.choice([0.0, rng.uniform(0.0, 2.0)])
            reading = {**energy(seq + step, kwh), **PLACES, "kafka_offset": len(rows)}
            rows.append({**reading, "sensor_id": f"ENERGY_{number:04d}"})
    return rows


def written_file(lake: Lake, rows: list[dict], group_rows: int | None = None) -> TableWrite:
    """`rows` as a clean energy file, in row groups of `group_rows` rows."""
    key = "tables/clean_energy/date=2026-11-27/part-0.parquet"
    write_groups(
        lake, key, pa.Table.from_pylist(rows, schema=clean_file_schema("energy")), group_rows
    )
    return describe(lake, key)


def write_groups(lake: Lake, key: str, table: pa.Table, group_rows: int | None) -> None:
    buffer = pa.BufferOutputStream()
    pq.write_table(table, buffer, row_group_size=group_rows)
    lake.write_bytes(key, buffer.getvalue().to_pybytes())


def break_range(rows: list[dict], at: int, rng: random.Random) -> str:
    name, value, check = rng.choice(
        [
            ("voltage_v", 500.0 + rng.uniform(0.5, 100.0), "less_than_or_equal_to(500)"),
            ("power_kw", -rng.uniform(0.1, 5.0), "greater_than_or_equal_to(0)"),
            ("current_a", -rng.uniform(0.1, 5.0), "greater_than_or_equal_to(0)"),
        ]
    )
    rows[at][name] = value
    return check


def repeat_key(rows: list[dict], at: int, rng: random.Random) -> str:
    rows[at]["seq"] = rows[at - 1]["seq"]
    return checks.UNIQUE_KEY


def drop_meter(rows: list[dict], at: int, rng: random.Random) -> str:
    rows[at]["energy_kwh"] = rows[at - 1]["energy_kwh"] - rng.uniform(0.01, 5.0)
    return checks.METER_RISES


def break_common_id(rows: list[dict], at: int, rng: random.Random) -> str:
    rows[at]["sensor_id"] = f"ENERGY_{rng.randrange(1000)}"  # fewer than four digits
    return COMMON_ID


def break_type_id(rows: list[dict], at: int, rng: random.Random) -> str:
    rows[at]["sensor_id"] = f"WEATHER_{rng.randrange(10_000):04d}"  # another type's id
    return ENERGY_ID


CORRUPTIONS = [break_range, repeat_key, drop_meter, break_common_id, break_type_id]


def flagged_offsets(result: dg.AssetCheckResult, kept: list[dict], check: str) -> set[int]:
    """The planted rows (by `kafka_offset`) among the failing rows the sample shows."""
    return {kept[i]["kafka_offset"] for i in result.metadata["sample_rows"].value[check]}


@pytest.mark.parametrize("seed", [3, 17, 2026])
def test_each_broken_rule_is_caught_on_its_row(split: Any, lake: Lake, seed: int) -> None:
    """One file with a row out of range, a key twice, a falling meter and an id breaking
    each pattern (which also leaves the file out of key order), in row groups of seven."""
    rows, rng = meter_day(sensors=3, readings=20, seed=seed), random.Random(seed)
    places = [25, 5, 12, 45, 52]  # one per corruption, apart, in three sensors of twenty
    planted = {at: corrupt(rows, at, rng) for at, corrupt in zip(places, CORRUPTIONS, strict=True)}
    written = written_file(lake, rows, group_rows=7)
    assert written.footer.num_row_groups == 9
    result = checks.contract_schema(split, lake, written, "energy")
    assert not result.passed
    assert result.metadata["failures_by_check"].value == {check: 1 for check in planted.values()}
    kept = lake.read_parquet(written.key).to_pylist()
    for at, check in planted.items():
        assert flagged_offsets(result, kept, check) == {at}, check
    sample = result.metadata["sample"].value
    assert all(check in sample for check in planted.values())


def test_an_empty_partition_passes(spark: Any, lake: Lake) -> None:
    result = checks.contract_schema(spark, lake, written_file(lake, []), "energy")
    assert result.passed and result.metadata["rows"].value == 0


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    seed=st.integers(0, 2**32 - 1),
    sensors=st.integers(1, 4),
    readings=st.integers(2, 25),
    corrupt=st.sampled_from(CORRUPTIONS),
    shuffled=st.booleans(),
    data=st.data(),
)
def test_a_clean_table_passes_and_any_one_broken_row_is_caught(
    split: Any,
    lake: Lake,
    seed: int,
    sensors: int,
    readings: int,
    corrupt: Any,
    shuffled: bool,
    data: st.DataObject,
) -> None:
    """Over random row group sizes (a task per row group), among them one that starts a
    row group at the broken row, so a key twice or a meter falling across a task boundary
    shows; in key order or not."""
    rows, rng = meter_day(sensors, readings, seed), random.Random(seed)
    at = data.draw(st.sampled_from([i for i in range(len(rows)) if i % readings]), label="at")
    group_rows = data.draw(
        st.one_of(st.integers(max(1, len(rows) // 8), len(rows)), st.just(at)), label="group"
    )
    if shuffled:
        rng.shuffle(rows)
    written = written_file(lake, rows, group_rows)
    assert checks.contract_schema(split, lake, written, "energy").passed

    place = next(i for i, row in enumerate(rows) if row["kafka_offset"] == at)
    by_offset = sorted(rows, key=lambda row: row["kafka_offset"])
    check = corrupt(by_offset, at, rng)
    written = written_file(lake, rows, group_rows)
    result = checks.contract_schema(split, lake, written, "energy")
    assert not result.passed
    assert check in result.metadata["failures_by_check"].value
    kept = lake.read_parquet(written.key).to_pylist()
    assert kept[place]["kafka_offset"] == at
    twins = {at, at - 1} if corrupt is repeat_key else {at}
    assert flagged_offsets(result, kept, check) <= twins
    assert flagged_offsets(result, kept, check)


def test_a_missing_or_mistyped_column_counts_once_over_all_tasks(split: Any, lake: Lake) -> None:
    table = pa.Table.from_pylist(meter_day(2, 5, seed=8), schema=clean_file_schema("energy"))
    kwh = table.schema.get_field_index("energy_kwh")
    table = table.set_column(kwh, "energy_kwh", table["energy_kwh"].cast(pa.float32()))
    key = "tables/clean_energy/mistyped.parquet"
    write_groups(lake, key, table.drop_columns(["district"]), 3)
    result = checks.contract_schema(split, lake, describe(lake, key), "energy")
    assert result.metadata["failures_by_check"].value == {
        "column_in_dataframe": 1,
        "dtype('double[pyarrow]')": 1,
    }


def test_every_failure_is_counted_and_the_sample_is_bounded(split: Any, lake: Lake) -> None:
    rows = meter_day(sensors=2, readings=30, seed=5)
    broken = random.Random(5).sample(range(len(rows)), 25)
    for at in broken:
        rows[at]["voltage_v"] = 600.0
    result = checks.contract_schema(split, lake, written_file(lake, rows, 4), "energy")
    assert result.metadata["failures_by_check"].value == {"less_than_or_equal_to(500)": 25}
    shown = result.metadata["sample_rows"].value["less_than_or_equal_to(500)"]
    assert len(shown) == checks.SAMPLE and set(shown) < set(broken)
