"""The simulated city behaves like one: rush hours, afternoons, meters, physics, registry."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import orjson
import pytest

from simulator.anomalies import ANOMALY_KINDS, AnomalyKind, code
from simulator.city import BERLIN
from simulator.patterns import (
    CONGESTION_LEVELS,
    LocalClock,
    congestion_level,
    diurnal_temp_c,
    traffic_demand,
)
from simulator.readings import EnergyModel, TrafficModel, WeatherModel
from simulator.registry import (
    REGISTRY_SCHEMA,
    SensorCountError,
    build_registry,
    parse_sensor_counts,
    registry_table,
)
from tests.simulator_support import NOV_27_MS, simulate

HOUR_MS = 3_600_000


def _clock_at_local(hours: list[float], day_ms: int = NOV_27_MS) -> LocalClock:
    """Clock rows at local wall-clock hours of one day (Berlin is UTC+1 in November)."""
    times = np.array([day_ms + int((h - 1) * HOUR_MS) for h in hours], dtype=np.int64)
    return LocalClock.at(BERLIN, times)


def _traffic_means(hour: float, steps: int = 60) -> dict[str, float]:
    registry = build_registry()
    model = TrafficModel(registry.traffic, 60.0, np.random.default_rng(1))
    clock = _clock_at_local([hour] * steps)
    shape = (steps, registry.traffic.size)
    block = model.block(clock, np.zeros(shape, np.int64), np.zeros(shape))
    return {
        "speed": float(np.nanmean(block["average_speed_kmh"])),
        "count": float(block["vehicle_count"].mean()),
        "occupancy": float(block["occupancy_pct"].mean()),
    }


def test_rush_hour_is_slower_busier_and_fuller_than_three_in_the_morning() -> None:
    rush, night = _traffic_means(8.0), _traffic_means(3.0)
    assert rush["speed"] < 0.85 * night["speed"]
    assert rush["count"] > 5 * night["count"]
    assert rush["occupancy"] > 5 * night["occupancy"]
    evening = _traffic_means(17.5)
    assert evening["speed"] < 0.85 * night["speed"]


def test_weekends_are_quieter_in_the_morning() -> None:
    assert traffic_demand(8.0, True) < 0.5 * traffic_demand(8.0, False)
    assert traffic_demand(3.0, False) < 0.1


def test_local_clock_follows_daylight_saving() -> None:
    summer = LocalClock.at(BERLIN, np.array([1_783_000_800_000]))  # 2026-07-02T14:00Z
    winter = LocalClock.at(BERLIN, np.array([NOV_27_MS + 14 * HOUR_MS]))
    assert summer.hour[0, 0] == pytest.approx(16.0)
    assert winter.hour[0, 0] == pytest.approx(15.0)
    assert not winter.weekend[0, 0]  # a Friday


def test_congestion_derives_from_speed_and_occupancy() -> None:
    level = congestion_level(
        np.array([48.0, 30.0, 20.0, 8.0, np.nan, np.nan]),
        np.array([5.0, 20.0, 40.0, 70.0, 2.0, 65.0]),
        np.array([50, 50, 50, 50, 50, 50]),
    )
    assert [CONGESTION_LEVELS[i] for i in level] == [
        "low",
        "medium",
        "high",
        "severe",
        "low",
        "severe",
    ]


def test_every_traffic_message_carries_the_derived_congestion_level() -> None:
    registry = build_registry()
    limits = dict(zip(registry.traffic.ids, registry.traffic.speed_limit_kmh.tolist(), strict=True))
    messages, _ = simulate(96, interval_ms=15 * 60_000, anomaly_rate_per_hour=0.5)
    for _, value, _, _ in messages["traffic"]:
        r = orjson.loads(value)
        speed = np.nan if r["average_speed_kmh"] is None else r["average_speed_kmh"]
        expected = congestion_level(speed, r["occupancy_pct"], limits[r["sensor_id"]])
        assert r["congestion_level"] == CONGESTION_LEVELS[int(expected)]


def test_temperature_peaks_in_the_afternoon_and_humidity_moves_against_it() -> None:
    registry = build_registry()
    model = WeatherModel(registry.weather, BERLIN, 1800.0, np.random.default_rng(3))
    steps = 48 * 14  # two weeks at 30 min: day-to-day weather averages out
    times = NOV_27_MS + 1_800_000 * np.arange(steps, dtype=np.int64)
    clock = LocalClock.at(BERLIN, times)
    shape = (steps, registry.weather.size)
    block = model.block(clock, np.zeros(shape, np.int64), np.zeros(shape))
    hours = clock.hour[:, 0].astype(int)
    by_hour = np.array([block["temperature_c"][hours == h].mean() for h in range(24)])
    assert 13 <= int(np.argmax(by_hour)) <= 16
    assert int(np.argmin(by_hour)) in (*range(0, 8), 23)
    humidity_by_hour = np.array([block["humidity_pct"][hours == h].mean() for h in range(24)])
    assert np.corrcoef(by_hour, humidity_by_hour)[0, 1] < -0.8
    assert -15 < block["temperature_c"].mean() < 15  # late November in Berlin
    assert diurnal_temp_c(15.0, 5.0, 3.0) == pytest.approx(8.0)
    assert diurnal_temp_c(4.0, 5.0, 3.0) == pytest.approx(2.0)


def test_rain_is_reported_in_whole_bucket_tips() -> None:
    stations = build_registry(parse_sensor_counts("traffic=1,weather=10,energy=1"))
    messages, _ = simulate(14 * 24 * 6, interval_ms=600_000, registry=stations)
    rain = np.array([orjson.loads(v)["precipitation_mm"] for _, v, _, _ in messages["weather"]])
    assert np.allclose(np.round(rain / 0.2), rain / 0.2)
    assert 0.02 < (rain > 0).mean() < 0.4  # it rains now and then in a Berlin November


def test_energy_is_consistent_and_the_meter_never_decreases() -> None:
    messages, _ = simulate(288, interval_ms=300_000, anomaly_rate_per_hour=1.0)
    readings: dict[str, list[dict]] = {}
    for _, value, _, _ in messages["energy"]:
        r = orjson.loads(value)
        readings.setdefault(r["sensor_id"], []).append(r)
        assert r["power_kw"] == pytest.approx(r["voltage_v"] * r["current_a"] / 1000, abs=6e-4)
        assert 200 < r["voltage_v"] < 240
    for series in readings.values():
        meter = [r["energy_kwh"] for r in series]
        assert all(b >= a for a, b in pairwise(meter))
    # the next run (a later day) starts above where this one ended
    later, _ = simulate(1, interval_ms=300_000, start_ms=NOV_27_MS + 24 * HOUR_MS)
    for _, value, _, _ in later["energy"]:
        r = orjson.loads(value)
        assert r["energy_kwh"] >= readings[r["sensor_id"]][-1]["energy_kwh"]


def test_energy_load_follows_the_time_of_day_and_the_cold() -> None:
    registry = build_registry()
    shape = (30, registry.energy.size)
    quiet = np.zeros(shape, np.int64), np.zeros(shape)

    def mean_power(hour: float, temp_c: float) -> float:
        model = EnergyModel(registry.energy, 60.0, NOV_27_MS, np.random.default_rng(5))
        block = model.block(_clock_at_local([hour] * 30), np.full((30, 1), temp_c), *quiet)
        return float(block["power_kw"].mean())

    assert mean_power(19.0, 5.0) > 1.2 * mean_power(3.0, 5.0)
    assert mean_power(12.0, -5.0) > 1.2 * mean_power(12.0, 18.0)


def test_planted_anomalies_show_in_the_readings() -> None:
    messages, simulation = simulate(24 * 12, interval_ms=300_000, anomaly_rate_per_hour=0.3)
    planted = simulation.planted
    assert {a.kind for a in planted} == set(ANOMALY_KINDS)
    by_sensor: dict[tuple[str, int], dict] = {}
    for sensor_type in messages:
        for _, value, _, _ in messages[sensor_type]:
            r = orjson.loads(value)
            by_sensor[(r["sensor_id"], r["seq"])] = r
    for anomaly in planted:
        seqs = range(anomaly.start_ms // 300_000, anomaly.end_ms // 300_000)
        inside = [by_sensor[(anomaly.sensor_id, s)] for s in seqs]
        assert len(inside) == orjson.loads(anomaly.to_json())["readings"] >= 1
        if anomaly.kind == AnomalyKind.TEMPERATURE_OUT_OF_RANGE:
            assert all(r["temperature_c"] >= 45 or r["temperature_c"] <= -40 for r in inside)
        if anomaly.kind == AnomalyKind.STUCK_SENSOR:
            measures = [
                {k: v for k, v in r.items() if k not in ("seq", "event_time")} for r in inside
            ]
            assert all(m == measures[0] for m in measures)
        if anomaly.kind == AnomalyKind.SEVERE_CONGESTION:
            assert all(r["congestion_level"] == "severe" for r in inside)
    assert code(AnomalyKind.SEVERE_CONGESTION) == 1


def test_registry_is_seeded_prefix_stable_and_inside_the_city() -> None:
    registry = build_registry()
    table = registry_table()
    assert table.schema == REGISTRY_SCHEMA
    assert table.num_rows == 210
    assert table["sensor_id"].to_pylist()[:2] == ["TRAFFIC_0000", "TRAFFIC_0001"]
    assert table["sensor_id"].to_pylist()[-1] == "ENERGY_0099"
    assert table.equals(registry_table())
    for lat, lon in zip(table["latitude"].to_pylist(), table["longitude"].to_pylist(), strict=True):
        assert BERLIN.contains(lat, lon)
    small = build_registry(parse_sensor_counts("21"))
    assert small.counts == {"traffic": 10, "weather": 1, "energy": 10}
    assert small.traffic.latitude.tolist() == registry.traffic.latitude[:10].tolist()
    assert (
        small.energy.feeder_capacity_kw.tolist() == registry.energy.feeder_capacity_kw[:10].tolist()
    )
    traffic = registry.traffic
    assert set(traffic.capacity_vph.tolist()) and (traffic.capacity_vph > 0).all()
    assert traffic.unknown_id(0) not in traffic.ids


def test_large_registries_use_more_digits_within_the_contract() -> None:
    registry = build_registry(parse_sensor_counts("traffic=100000,weather=1,energy=1"))
    assert registry.traffic.ids[-1] == "TRAFFIC_99999"
    assert registry.traffic.unknown_id(0) == "TRAFFIC_100000"
    with pytest.raises(SensorCountError):
        parse_sensor_counts("traffic=100001,weather=1,energy=1")
    with pytest.raises(SensorCountError):
        parse_sensor_counts("cars=3")
