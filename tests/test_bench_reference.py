"""The batch bench's DuckDB reference builds the very tables the real assets build.

A small simulated day, with what a real day brings besides (duplicates won by the lower
Kafka partition and offset, rows that break each kind of contract rule, a sensor the
registry lacks, stream anomalies near and far from the batch's, one landed twice), is built
by the Dagster assets on Spark and by `bench.duckdb_reference`; every table must hold the
same rows. This keeps the bench's comparison fair: a reference that skipped work, or did
other work, would differ here.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pyarrow as pa
import pytest

from bench.duckdb_reference import build_day, compare
from simulator.landed_day import land_simulated_day
from smartcity.lake import Lake
from smartcity.layout import landing_dir, table_partition_key
from smartcity.settings import SENSOR_TYPES, Settings
from smartcity_stream.landing import anomaly_files, landing_files, landing_schema, write_files
from smartcity_stream.rules import RuleConfig
from tests.dagster_support import dagster_home, materialize_day, smartcity_env

DAY = "2026-11-27"
START = datetime.fromisoformat(DAY).replace(tzinfo=UTC)
INTERVAL_S = 300.0
FAULTS_PARTITION = 1
"""The Kafka partition of the added rows: after the simulated day's partition 0."""
GAP = timedelta(seconds=RuleConfig().episode_gap_s)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Lake, Path, dg.ExecuteInProcessResult]:
    root = tmp_path_factory.mktemp("bench-reference")
    settings = Settings(
        _env_file=None, lake_uri=(root / "lake").as_uri(), runtime_dir=root / "runtime"
    )
    lake = Lake.from_settings(settings)
    land_simulated_day(lake, int(START.timestamp() * 1000), INTERVAL_S)
    for sensor_type in SENSOR_TYPES:
        write_files(lake, landing_files(sensor_type, FAULTS_PARTITION, _faults(lake, sensor_type)))
    _land_stream_anomalies(lake, _batch_anomalies(lake, root / "first-look"))
    with pytest.MonkeyPatch.context() as monkeypatch, smartcity_env(monkeypatch, settings):
        monkeypatch.setenv("DAGSTER_HOME", str(dagster_home(root / "dagster")))
        with dg.DagsterInstance.get() as instance:
            result = materialize_day(DAY, instance)
    reference = root / "reference"
    build_day(lake, DAY, reference, workers=2)
    return lake, reference, result


def test_the_reference_builds_the_tables_of_the_assets(built) -> None:
    lake, reference, result = built
    assert result.success
    assert compare(Path(lake.root), reference, DAY) == []


def test_the_day_holds_what_the_comparison_must_cover(built) -> None:
    """Not a result of either engine: that the day had rejects of every type, duplicates,
    and anomalies of each source, so the comparison above judged them."""
    lake, _, _ = built
    db = duckdb.connect()

    def table(asset: str) -> str:
        return f"read_parquet('{lake.path(table_partition_key(asset, DAY))}')"

    def rows(asset: str) -> int:
        return db.execute(f"SELECT count(*) FROM {table(asset)}").fetchone()[0]

    for sensor_type in SENSOR_TYPES:
        clean = f"clean_{sensor_type}"
        rejects = rows(f"{clean}_rejects")
        assert rejects > 0, sensor_type
        assert rows(f"raw_{sensor_type}") > rows(clean) + rejects, f"{sensor_type}: no duplicates"
    sources = dict(
        db.execute(f"SELECT source, count(*) FROM {table('anomaly_events')} GROUP BY 1").fetchall()
    )
    assert set(sources) == {"stream", "batch", "both"}, sources


def _faults(lake: Lake, sensor_type: str) -> pa.Table:
    """Rows to land beside the simulated day: later copies of landed keys (one the same,
    one with other values), and new keys that break the contract's rules (each rule a row;
    one row two rules) or whose two copies disagree on validity."""
    schema = landing_schema(sensor_type)
    landed = next(
        info.path
        for info in lake.list_files(landing_dir(sensor_type, DAY))
        if info.path.endswith(".parquet")
    )
    first, second = lake.read_parquet(landed.removeprefix(lake.root + "/")).slice(0, 2).to_pylist()
    later_copies = [{**first}, {**second, "interval_s": second["interval_s"] + 1}]
    for offset, copy in enumerate(later_copies):
        copy.update(kafka_partition=FAULTS_PARTITION, kafka_offset=offset)
    template = {**first, "kafka_partition": FAULTS_PARTITION}
    broken = [
        {**template, "seq": first["seq"] + 10_000_000 + number, **change}
        for number, change in enumerate(_breaking(sensor_type))
    ]
    rows = later_copies + broken + _disagreeing(sensor_type, template)
    for offset, row in enumerate(rows[len(later_copies) :], start=len(later_copies)):
        row["kafka_offset"] = offset
        row["event_time"] = START + timedelta(hours=12, seconds=offset)
    return pa.Table.from_pylist(rows, schema=schema)


def _breaking(sensor_type: str) -> list[dict[str, Any]]:
    """Changes that each break a rule: the id's two patterns, the registry, the type, the
    bounds, the enums, a missing value; the last of a type's breaks two."""
    other = {"traffic": "weather", "weather": "energy", "energy": "traffic"}[sensor_type]
    common = [
        {"sensor_id": f"{sensor_type.upper()}_12"},
        {"sensor_id": f"{other.upper()}_0001"},
        {"sensor_id": f"{sensor_type.upper()}_9999"},
        {"sensor_type": other},
        {"interval_s": 0.0},
        {"seq": -1},
    ]
    by_type = {
        "traffic": [
            {"vehicle_count": -1},
            {"average_speed_kmh": 300.0},
            {"occupancy_pct": None},
            {"congestion_level": "jammed"},
            {"vehicle_count": -2, "occupancy_pct": 101.0},
        ],
        "weather": [
            {"humidity_pct": None},
            {"pressure_hpa": 500.0},
            {"source": "invented"},
            {"precipitation_mm": -1.0},
        ],
        "energy": [{"voltage_v": 600.0}, {"power_kw": -1.0}, {"energy_kwh": None}],
    }
    return common + by_type[sensor_type]


def _disagreeing(sensor_type: str, template: dict[str, Any]) -> list[dict[str, Any]]:
    """Two keys of two copies each: first broken then valid (a reject), first valid then
    broken (clean; only for types whose new readings keep a meter rising: not energy)."""
    broken = {"traffic": {"vehicle_count": -1}, "weather": {"humidity_pct": 120.0}}.get(
        sensor_type, {"voltage_v": 600.0}
    )
    seq = template["seq"] + 20_000_000
    rows = [{**template, **broken, "seq": seq}, {**template, "seq": seq}]
    if sensor_type != "energy":
        rows += [{**template, "seq": seq + 1}, {**template, **broken, "seq": seq + 1}]
    return rows


def _batch_anomalies(lake: Lake, scratch: Path) -> list[dict[str, Any]]:
    """What the rules find over the day (the reference's own look, before the stream's
    anomalies are landed), to place the stream's anomalies near them."""
    build_day(lake, DAY, scratch, workers=2)
    events = scratch / table_partition_key("anomaly_events", DAY)
    return (
        duckdb.sql(f"SELECT * FROM read_parquet('{events}') ORDER BY event_time, anomaly_id")
        .to_arrow_table()
        .to_pylist()
    )


def _land_stream_anomalies(lake: Lake, batch: list[dict[str, Any]]) -> None:
    """Stream anomalies around the batch's: within the episode gap (both), at it exactly,
    just beyond it, two near one batch anomaly (the one landed first takes it), one landed
    twice (the first copy counts), a kind the batch never saw, a sensor the registry lacks.
    Landed in several files, as the worker lands a segment's anomalies."""
    assert len(batch) >= 12, "too few batch anomalies to place the stream's near"
    found: list[dict[str, Any]] = []

    def near(anomaly: dict[str, Any], shift: timedelta, **change: Any) -> dict[str, Any]:
        when = int((anomaly["event_time"] + shift).timestamp() * 1000)
        stream = {
            **{k: anomaly[k] for k in ("sensor_id", "sensor_type", "kind", "severity")},
            "anomaly_id": f"stream:{anomaly['sensor_id']}:{anomaly['kind']}:{len(found)}",
            "event_time": when,
            "window_start": when,
            "window_end": when,
            "detected_at": when,
            "values": {"seen_by": "stream"},
            **change,
        }
        found.append(stream)
        return stream

    twice = []
    for index, anomaly in enumerate(batch):
        case = index % 6
        if case == 0:
            near(anomaly, timedelta(seconds=30))
        elif case == 1:
            near(anomaly, GAP)
        elif case == 2:
            near(anomaly, GAP + timedelta(seconds=1))
        elif case == 3:
            near(anomaly, timedelta(seconds=50))
            near(anomaly, -timedelta(seconds=50))
        elif case == 5:
            twice.append({**near(anomaly, -timedelta(seconds=30)), "severity": "critical"})
    near(batch[0], timedelta(hours=1), kind="humidity_out_of_range")
    near(batch[0], timedelta(0), sensor_id="TRAFFIC_9999", sensor_type="traffic")
    halves = [found[: len(found) // 2], found[len(found) // 2 :] + twice]
    for offset, anomalies in enumerate(halves):
        for sensor_type in SENSOR_TYPES:
            mine = [a for a in anomalies if a["sensor_type"] == sensor_type]
            write_files(lake, anomaly_files(sensor_type, 0, (offset, offset), mine))
