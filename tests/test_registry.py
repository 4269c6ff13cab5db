"""The sensor registry as a city keeps it: files judged whole, versions in the lake."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import orjson
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.registry import build_registry, registry_from_table
from smartcity.contract import type_properties
from smartcity.lake import Lake
from smartcity.layout import registry_current_key, registry_key
from smartcity.registry import (
    RegistryError,
    RegistryFollower,
    import_registry,
    load_registry,
    publish_registry,
    published_registry,
    read_rows,
    registry_row_schema,
    table_rows,
    validated_table,
    write_table,
)
from smartcity.settings import SENSOR_TYPES, Settings

FORMATS = {"csv": ".csv", "parquet": ".parquet", "geojson": ".geojson"}


def _small_city(traffic: int = 3, weather: int = 1, energy: int = 2) -> pa.Table:
    return build_registry({"traffic": traffic, "weather": weather, "energy": energy}).table()


def _csv(rows: list[dict[str, object]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def _import_file(path: Path) -> pa.Table:
    return validated_table(read_rows(path))


GOOD = {
    "sensor_id": "TRAFFIC_0001",
    "sensor_type": "traffic",
    "district": "Mitte",
    "latitude": "52.52",
    "longitude": "13.40",
    "interval_s": "60",
}


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"sensor_type": "water"}, "line 3, sensor_type"),
        ({"latitude": "123.4"}, "line 3, latitude: must be smaller than or equal to 90"),
        ({"longitude": "-181"}, "line 3, longitude"),
        ({"district": ""}, "line 3, district: required"),
        ({"interval_s": "0"}, "line 3, interval_s"),
        ({"sensor_id": "ENERGY_0002"}, "line 3, sensor_id: must match pattern ^TRAFFIC_"),
        ({"lanes": "two"}, "line 3, lanes: must be integer"),
        ({"feeder_capacity_kw": "300"}, "line 3, feeder_capacity_kw: must be null"),
        ({"installed_at": "2026-01-01"}, "line 3, installed_at: must be date-time"),
        ({"colour": "red"}, "line 3, colour: not a registry field"),
    ],
)
def test_a_bad_row_is_named_with_its_field_and_nothing_is_taken(
    tmp_path: Path, change: dict[str, str], named: str
) -> None:
    second = {**GOOD, "sensor_id": "TRAFFIC_0002", **change}
    rows = [{**dict.fromkeys(change, ""), **GOOD}, second]
    path = tmp_path / "city.csv"
    path.write_text(_csv(rows))
    with pytest.raises(RegistryError) as raised:
        _import_file(path)
    assert [p for p in raised.value.problems if p.startswith(named)], raised.value.problems
    assert len(raised.value.problems) == 1


def test_every_bad_row_is_reported_duplicates_included(tmp_path: Path) -> None:
    rows = [
        GOOD,
        {**GOOD, "latitude": "91"},
        {**GOOD, "sensor_id": "WEATHER_0001", "sensor_type": "weather"},
        {**GOOD, "sensor_id": "TRAFFIC_0007"},
        {**GOOD},
    ]
    path = tmp_path / "city.csv"
    path.write_text(_csv(rows))
    with pytest.raises(RegistryError) as raised:
        _import_file(path)
    problems = raised.value.problems
    assert problems[0].startswith("line 3, latitude")
    assert problems[1] == "line 6, sensor_id: TRAFFIC_0001 repeats line 2"
    assert len(problems) == 2


def test_missing_columns_and_wrong_files_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "city.csv"
    path.write_text("sensor_id,sensor_type\nTRAFFIC_0001,traffic\n")
    with pytest.raises(RegistryError, match="line 2, district, latitude, longitude, interval_s"):
        _import_file(path)
    text = tmp_path / "city.txt"
    text.write_text("x")
    with pytest.raises(RegistryError, match=r"unknown suffix '\.txt'"):
        _import_file(text)
    collection = tmp_path / "city.geojson"
    collection.write_text('{"type": "FeatureCollection", "features": [{"type": "Feature"}]}')
    with pytest.raises(RegistryError, match="feature 1, geometry: expected a Point"):
        _import_file(collection)
    (tmp_path / "broken.geojson").write_text("{")
    with pytest.raises(RegistryError, match="cannot be read as geojson"):
        _import_file(tmp_path / "broken.geojson")


@settings(max_examples=12, deadline=None)
@given(
    traffic=st.integers(1, 40),
    weather=st.integers(1, 5),
    energy=st.integers(1, 40),
    fmt=st.sampled_from(sorted(FORMATS)),
)
def test_export_then_import_gives_the_same_registry(
    tmp_path_factory: pytest.TempPathFactory, traffic: int, weather: int, energy: int, fmt: str
) -> None:
    table = _small_city(traffic, weather, energy)
    path = tmp_path_factory.mktemp("export") / f"city{FORMATS[fmt]}"
    path.write_bytes(write_table(table, fmt))
    assert _import_file(path).equals(table.sort_by("sensor_id"))


def test_optional_fields_may_be_left_out(tmp_path: Path) -> None:
    path = tmp_path / "city.csv"
    path.write_text(_csv([GOOD, {**GOOD, "sensor_id": "TRAFFIC_0002", "interval_s": "900"}]))
    table = _import_file(path)
    assert table.column("active").to_pylist() == [True, True]
    assert table.column("installed_at").null_count == 2
    assert table.column("interval_s").to_pylist() == [60.0, 900.0]


def test_the_registry_ids_follow_the_reading_contract() -> None:
    registry = registry_row_schema()
    for sensor_type in SENSOR_TYPES:
        specs, _ = type_properties(sensor_type)
        branch = next(
            b["then"]["properties"]["sensor_id"]
            for b in registry["allOf"]
            if b["if"]["properties"]["sensor_type"]["const"] == sensor_type
        )
        assert [spec.get("pattern") for spec in specs["sensor_id"]] == [
            registry["properties"]["sensor_id"]["pattern"],
            branch["pattern"],
        ]


def test_versions_move_only_when_the_sensors_change(tmp_path: Path) -> None:
    lake = Lake.from_settings(Settings(_env_file=None, lake_uri=tmp_path.as_uri()))
    follower = RegistryFollower(lake, every_s=0)
    assert load_registry(lake).version == 0
    assert not follower.refresh()
    first, new = import_registry(lake, _small_city())
    assert (first.version, new) == (1, True)
    assert follower.refresh() and follower.current.version == 1
    again, new = import_registry(lake, _small_city().sort_by([("sensor_id", "descending")]))
    assert (again.version, new) == (1, False)
    retired = _small_city().to_pylist()
    retired[0]["active"] = False
    second, new = import_registry(lake, pa.Table.from_pylist(retired, schema=first.table.schema))
    assert (second.version, new) == (2, True)
    assert follower.refresh() and follower.current.version == 2
    assert retired[0]["sensor_id"] not in follower.current.active_ids()
    assert retired[0]["sensor_id"] in follower.current.sensors()
    assert orjson.loads(lake.read_bytes(registry_current_key()))["version"] == 2
    assert load_registry(lake).table.equals(second.table)


def test_the_published_table_carries_its_version(tmp_path: Path) -> None:
    lake = Lake.from_settings(Settings(_env_file=None, lake_uri=tmp_path.as_uri()))
    imported, _ = import_registry(lake, _small_city(5, 2, 5))
    assert published_registry(lake).version == 1  # nothing published yet: the one in force
    publish_registry(lake, imported)
    import_registry(lake, _small_city(6, 2, 5))
    published = published_registry(lake)
    assert published.version == 1
    assert published.table.equals(imported.table)
    assert lake.exists(registry_key())


def test_the_simulator_simulates_any_registry() -> None:
    """A city's own registry, with only the required fields, drives the simulator."""
    rows = [
        {**row, "sensor_id": row["sensor_id"].replace("_000", "_010"), "district": "North"}
        for row in table_rows(_small_city(4, 2, 3))
    ]
    for row in rows:
        for name in ("road_class", "lanes", "speed_limit_kmh", "capacity_vph"):
            row[name] = None
    table = validated_table((f"row {i}", row) for i, row in enumerate(rows))
    registry = registry_from_table(table)
    assert registry.counts == {"traffic": 4, "weather": 2, "energy": 3}
    assert registry.traffic.ids[0] == "TRAFFIC_0100"
    assert [d.name for d in registry.city.districts] == ["North"]
    assert registry.traffic.unknown_id(0) not in registry.traffic.ids
