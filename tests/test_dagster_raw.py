"""landing -> raw on real local Spark: landing files large or small, of one Parquet schema or
two, are written by Spark as one file in Kafka partition and offset order; the raw table
holds every landed row once and the Kafka ranges in the metadata are the landed ones."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from smartcity.lake import Lake
from smartcity.settings import Settings
from smartcity_dagster.assets.analytics import first_per_id
from smartcity_dagster.transforms.raw import compact, partition_ranges
from smartcity_stream.landing import landing_files, landing_schema, write_files
from tests.dagster_support import spark_session

DAY = "2026-11-27"
ASSET = "raw_weather"
START = datetime(2026, 11, 27, tzinfo=UTC)
SPARK_WROTE = b"org.apache.spark.sql.parquet.row.metadata"
LARGE = 32_768
"""Rows of a large landing segment (the worker's catch-up writes segments this big)."""


@pytest.fixture(scope="module")
def spark() -> Any:
    return spark_session()


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    return Lake.from_settings(Settings(_env_file=None, lake_uri=(tmp_path / "lake").as_uri()))


def segment(partition: int, first: int, rows: int, hour: int) -> pa.Table:
    """`rows` weather readings of one Kafka partition from offset `first`, in one hour."""
    return pa.Table.from_pylist(
        [
            {
                "sensor_id": f"WEATHER_{offset % 10:04d}",
                "sensor_type": "weather",
                "event_time": START + timedelta(hours=hour, milliseconds=offset % 3_600_000),
                "seq": offset,
                "interval_s": 1.0,
                "temperature_c": 5.0 + offset % 7,
                "humidity_pct": 80.0,
                "pressure_hpa": 1010.0,
                "wind_speed_ms": 3.0,
                "precipitation_mm": 0.0,
                "source": "simulated",
                "kafka_partition": partition,
                "kafka_offset": offset,
            }
            for offset in range(first, first + rows)
        ],
        schema=landing_schema("weather"),
    )


def land(lake: Lake, segments: list[tuple[int, pa.Table]]) -> None:
    for partition, table in segments:
        write_files(lake, landing_files("weather", partition, table))


def offsets(lake: Lake, key: str) -> list[tuple[int, int]]:
    table = lake.read_parquet(key)
    return list(
        zip(table["kafka_partition"].to_pylist(), table["kafka_offset"].to_pylist(), strict=True)
    )


def test_large_landing_files_are_written_in_offset_order(spark, lake) -> None:
    rows = LARGE
    # names in text order p0-100000-..., p0-131072-..., p0-68928-...: offsets must sort as numbers
    segments = [
        (1, segment(1, 0, rows, hour=0)),
        (0, segment(0, 100_000, rows, hour=1)),
        (0, segment(0, 100_000 - rows, rows, hour=0)),
    ]
    land(lake, segments)
    written = compact(spark, lake, "weather", DAY, ASSET)

    assert SPARK_WROTE in written.footer.metadata, "written by Spark"
    expected = [(0, o) for o in range(100_000 - rows, 100_000 + rows)] + [
        (1, o) for o in range(rows)
    ]
    assert offsets(lake, written.key) == expected
    assert written.rows == 3 * rows
    ranges = partition_ranges(spark, lake, written)
    assert ranges == {
        "p0": {"first_offset": 100_000 - rows, "last_offset": 100_000 + rows - 1, "rows": 2 * rows},
        "p1": {"first_offset": 0, "last_offset": rows - 1, "rows": rows},
    }


def test_small_landing_files_are_written_in_offset_order(spark, lake) -> None:
    land(
        lake, [(p, segment(p, first, 50, hour=first // 100)) for p in (0, 2) for first in (0, 100)]
    )
    written = compact(spark, lake, "weather", DAY, ASSET)

    assert SPARK_WROTE in written.footer.metadata, "written by Spark"
    assert offsets(lake, written.key) == [
        (p, o) for p in (0, 2) for first in (0, 100) for o in range(first, first + 50)
    ]
    ranges = partition_ranges(spark, lake, written)
    assert ranges == {
        "p0": {"first_offset": 0, "last_offset": 149, "rows": 100},
        "p2": {"first_offset": 0, "last_offset": 149, "rows": 100},
    }


def test_large_files_of_two_schemas_make_one_table(spark, lake) -> None:
    rows = LARGE
    land(lake, [(0, segment(0, 0, rows, hour=0))])
    other = segment(0, rows, rows, hour=1)
    loose = pa.schema([field.with_nullable(True) for field in other.schema])
    key = landing_files("weather", 0, other)[0].key
    lake.write_parquet(key, other.cast(loose))

    written = compact(spark, lake, "weather", DAY, ASSET)

    assert offsets(lake, written.key) == [(0, o) for o in range(2 * rows)]
    assert SPARK_WROTE in written.footer.metadata, "written by Spark"


def test_a_replayed_range_counts_its_stream_anomalies_once(tmp_path: Path) -> None:
    """A worker that replays a range after a restart lands its anomalies again, under the same
    deterministic ids: the summary reads each id once, the first landed."""
    rows = [
        {"anomaly_id": anomaly_id, "sensor_id": f"S{n}", "kind": "stuck_sensor"}
        for n, anomaly_id in enumerate(["a", "b", "a", "c", "b"])
    ]
    pq.write_table(pa.Table.from_pylist(rows[:3]), tmp_path / "first.parquet")
    pq.write_table(pa.Table.from_pylist(rows[3:]), tmp_path / "replayed.parquet")
    kept = first_per_id(ds.dataset(sorted(tmp_path.glob("*.parquet"))))
    assert kept.to_pylist() == [rows[0], rows[1], rows[3]]
