"""Windows, rules and the contract decoder, without any service."""

from __future__ import annotations

import json

import orjson
import pytest
from confluent_kafka import KafkaError, KafkaException
from hypothesis import given, settings
from hypothesis import strategies as st

from smartcity.contract import ContractError, ReadingDecoder, validate_reading
from smartcity_stream.group import _coordinator_away
from smartcity_stream.rule_file import load_rules
from smartcity_stream.rules import RuleConfig, RuleEngine
from smartcity_stream.windows import TumblingWindows

MINUTE = 60_000
T0 = 1_795_737_600_000  # 2026-11-27T00:00:00Z


def traffic(seq: float, **values: object) -> dict[str, object]:
    return {
        "schema_version": 1,
        "sensor_id": "TRAFFIC_0001",
        "sensor_type": "traffic",
        "event_time": "2026-11-27T08:00:00.000Z",
        "seq": seq,
        "interval_s": 10.0,
        "vehicle_count": 5,
        "average_speed_kmh": 48.0,
        "occupancy_pct": 10.0,
        "congestion_level": "low",
        **values,
    }


class TestWindows:
    def test_out_of_order_events_within_lateness_join_their_window(self) -> None:
        windows = TumblingWindows(size_s=60, allowed_lateness_s=30)
        windows.add("p0", "S", "traffic", T0 + 50_000, {"v": 1.0})
        windows.add("p0", "S", "traffic", T0 + 70_000, {"v": 2.0})
        joined = windows.add("p0", "S", "traffic", T0 + 10_000, {"v": 3.0})
        assert joined is not None and joined.count == 2
        assert joined.measures["v"].low == 1.0 and joined.measures["v"].high == 3.0
        assert windows.late_events == 0

    def test_window_closes_at_watermark_and_later_events_are_late(self) -> None:
        windows = TumblingWindows(size_s=60, allowed_lateness_s=30)
        windows.add("p0", "S", "traffic", T0 + 5_000, {"v": 1.0})
        assert windows.close_ready() == []
        windows.add("p0", "S", "traffic", T0 + MINUTE + 30_000, {"v": 1.0})
        closed = windows.close_ready()
        assert [(w.start_ms, w.count) for w in closed] == [(T0, 1)]
        assert windows.add("p0", "S", "traffic", T0 + 59_000, {"v": 9.0}) is None
        assert windows.late_events == 1

    def test_a_partition_behind_does_not_make_another_late(self) -> None:
        windows = TumblingWindows(size_s=60, allowed_lateness_s=30)
        windows.add("p0", "A", "traffic", T0 + 60 * MINUTE, {"v": 1.0})
        assert windows.add("p1", "B", "traffic", T0, {"v": 1.0}) is not None
        assert windows.late_events == 0

    def test_mean_skips_missing_values(self) -> None:
        windows = TumblingWindows()
        windows.add("p0", "S", "traffic", T0, {"speed": None})
        window = windows.add("p0", "S", "traffic", T0 + 1, {"speed": 30.0})
        assert window is not None and window.count == 2 and window.mean("speed") == 30.0


class TestRules:
    def engine(self, **overrides: object) -> RuleEngine:
        sensors = {
            "TRAFFIC_0001": {"capacity_vph": 1800},
            "ENERGY_0001": {"nominal_voltage_v": 230.0},
            "WEATHER_0001": {},
        }
        return RuleEngine(RuleConfig(**overrides), sensors)

    def kinds(self, engine: RuleEngine, reading: dict[str, object], at: int = T0) -> list[str]:
        return [f.kind for f in engine.evaluate(reading, at)]

    def steady(self) -> RuleEngine:
        """An engine that does not call repeated readings stuck."""
        return self.engine(stuck_for_s=1e9)

    def run(
        self, engine: RuleEngine, readings: list[dict[str, object]], step_ms: int
    ) -> list[list[str]]:
        """Readings `step_ms` apart, each with the sequence number of its step."""
        return [
            self.kinds(engine, {**r, "seq": i}, T0 + i * step_ms) for i, r in enumerate(readings)
        ]

    def test_severe_congestion_is_a_sudden_severe_slowdown(self) -> None:
        free = traffic(0, congestion_level="low", average_speed_kmh=50.0)
        jammed = traffic(0, congestion_level="severe", average_speed_kmh=10.0, occupancy_pct=80.0)
        found = self.run(self.steady(), [free] * 40 + [jammed] * 3, MINUTE)
        assert all(kinds == [] for kinds in found[:40])
        assert ["severe_congestion"] in found[40:]
        slow = traffic(0, congestion_level="high", average_speed_kmh=15.0, occupancy_pct=40.0)
        found = self.run(self.steady(), [slow] * 40 + [jammed] * 3, MINUTE)
        assert all(kinds == [] for kinds in found)  # this road is slow at this hour

    def test_high_volume_is_a_surge_beyond_capacity_and_the_usual_flow(self) -> None:
        busy = traffic(0, vehicle_count=6)  # 2,160 vehicles/h on a 1,800 road: its rush hour
        surge = traffic(0, vehicle_count=16)
        found = self.run(self.steady(), [busy] * 240 + [surge] * 30, 10_000)
        assert all("high_volume" not in kinds for kinds in found[:240])
        assert any("high_volume" in kinds for kinds in found[240:])

    def test_speed_anomaly_needs_three_fast_vehicles_in_a_row(self) -> None:
        one_car = traffic(0, average_speed_kmh=140.0, vehicle_count=1)
        normal = traffic(0, average_speed_kmh=50.0, vehicle_count=1)
        found = self.run(self.steady(), [one_car, one_car, normal, one_car, one_car], 10_000)
        assert all("speed_anomaly" not in kinds for kinds in found)
        found = self.run(self.steady(), [one_car] * 3, 60_000)
        assert found[2] == ["speed_anomaly"]
        slow = traffic(0, average_speed_kmh=8.0, vehicle_count=5)
        assert "speed_anomaly" not in self.kinds(self.steady(), slow)

    def test_one_episode_is_reported_once(self) -> None:
        engine = self.steady()
        fast = traffic(1, average_speed_kmh=140.0)
        assert self.kinds(engine, fast, T0) == ["speed_anomaly"]
        assert self.kinds(engine, {**fast, "seq": 2}, T0 + 10_000) == []
        assert self.kinds(engine, {**fast, "seq": 3}, T0 + 10 * MINUTE) == ["speed_anomaly"]

    def test_an_episode_gap_spans_at_least_two_intervals(self) -> None:
        fast = traffic(0, average_speed_kmh=140.0, interval_s=600)
        found = self.run(self.steady(), [fast] * 4, 10 * MINUTE)
        assert found == [["speed_anomaly"], [], [], []]

    def test_stuck_sensor_after_identical_readings_for_long_enough(self) -> None:
        engine = self.engine(stuck_for_s=60, stuck_min_readings=5)
        found = [self.kinds(engine, traffic(seq), T0 + seq * 10_000) for seq in range(8)]
        assert found[5] == [] and "stuck_sensor" in found[6]

    def test_weather_out_of_range_and_jump(self) -> None:
        engine = self.engine()
        base = {
            "sensor_id": "WEATHER_0001",
            "sensor_type": "weather",
            "seq": 1,
            "temperature_c": 10.0,
            "humidity_pct": 60.0,
            "pressure_hpa": 1010.0,
            "wind_speed_ms": 2.0,
        }
        assert self.kinds(engine, base) == []
        found = self.kinds(engine, {**base, "seq": 2, "temperature_c": 48.0}, T0 + 10_000)
        assert "temperature_out_of_range" in found and "temperature_jump" in found

    def test_energy_spike_against_baseline_and_voltage(self) -> None:
        engine = self.engine(baseline_warmup_s=50)
        base = {
            "sensor_id": "ENERGY_0001",
            "sensor_type": "energy",
            "seq": 0,
            "power_kw": 100.0,
            "voltage_v": 230.0,
            "current_a": 145.0,
        }
        for seq in range(6):
            reading = {**base, "seq": seq, "power_kw": 100.0 + seq}
            assert self.kinds(engine, reading, T0 + seq * 10_000) == []
        spike = {**base, "seq": 7, "power_kw": 320.0}
        assert "energy_spike" in self.kinds(engine, spike, T0 + 70_000)
        sag = {**base, "seq": 8, "voltage_v": 190.0}
        assert "voltage_out_of_tolerance" in self.kinds(engine, sag, T0 + 80_000)

    def test_rules_load_from_a_file_and_reject_unknown_keys(self, tmp_path) -> None:
        path = tmp_path / "rules.json"
        path.write_text('{"speed_high_kmh": 90}')
        assert load_rules(path).speed_high_kmh == 90
        path.write_text('{"speed_limit": 90}')
        with pytest.raises(ValueError):
            load_rules(path)


numbers = st.one_of(
    st.integers(-100, 2000), st.floats(-100, 2000, allow_nan=False), st.none(), st.text(max_size=3)
)


@st.composite
def readings(draw: st.DrawFn) -> dict[str, object]:
    reading = traffic(draw(st.integers(0, 10)))
    reading["sensor_type"] = draw(st.sampled_from(["traffic", "weather", "energy", "bus"]))
    for name in ("vehicle_count", "average_speed_kmh", "occupancy_pct", "seq", "temperature_c"):
        if draw(st.booleans()):
            reading[name] = draw(numbers)
    if draw(st.booleans()):
        reading.pop(draw(st.sampled_from(sorted(reading))))
    reading["event_time"] = draw(
        st.sampled_from(
            [
                "2026-11-27T08:00:00.000Z",
                "2026-11-27T08:00:00Z",
                "2026-11-27 08:00",
                "2026-13-27T08:00:00.000Z",
                "2026-11-27T08:00:00.000+01:00",
            ]
        )
    )
    return reading


@settings(max_examples=400, deadline=None)
@given(readings())
def test_fast_decoder_agrees_with_the_schema(reading: dict[str, object]) -> None:
    try:
        validate_reading(reading)
        schema_ok = True
    except ContractError:
        schema_ok = False
    try:
        ReadingDecoder().decode(orjson.dumps(reading))
        decoder_ok = True
    except ContractError:
        decoder_ok = False
    assert decoder_ok == schema_ok, reading


def test_decoder_reasons() -> None:
    decoder = ReadingDecoder()
    with pytest.raises(ContractError) as malformed:
        decoder.decode(b'{"sensor_id": ')
    assert malformed.value.reason == "malformed_json"
    with pytest.raises(ContractError) as out_of_range:
        decoder.decode(orjson.dumps(traffic(1, occupancy_pct=101.0)))
    assert out_of_range.value.reason == "out_of_contract"
    assert "occupancy_pct" in str(out_of_range.value)


def test_decoder_takes_an_integral_number_as_an_integer() -> None:
    """The all-Rust translation rejects 7.0 for an integer; the full one decides it."""
    decoder = ReadingDecoder()
    reading = decoder.decode(orjson.dumps(traffic(3.0, vehicle_count=7.0)))
    assert (reading["seq"], reading["vehicle_count"]) == (3, 7)
    assert type(reading["seq"]) is int and type(reading["vehicle_count"]) is int
    with pytest.raises(ContractError) as fraction:
        decoder.decode(orjson.dumps(traffic(1, vehicle_count=7.5)))
    assert fraction.value.reason == "out_of_contract" and "vehicle_count" in str(fraction.value)


def test_decoder_rejects_integers_the_lake_cannot_hold() -> None:
    """The schema allows any integer; the landing's columns are 64 bits, so a larger one is
    rejected with its own reason instead of failing the landing of its whole batch."""
    decoder = ReadingDecoder()
    largest = traffic(2, vehicle_count=2**63 - 1)
    assert decoder.decode(orjson.dumps(largest))["vehicle_count"] == 2**63 - 1
    for too_large in (
        traffic(1, vehicle_count=2**63),
        traffic(2**70),
        traffic(1, vehicle_count=2e21),
    ):
        validate_reading(too_large)
        with pytest.raises(ContractError) as overflow:
            decoder.decode(json.dumps(too_large).encode())
        assert overflow.value.reason == "integer_overflow"
        assert "does not fit in a 64-bit integer" in str(overflow.value)


def test_only_a_missing_coordinator_makes_a_commit_wait() -> None:
    assert _coordinator_away(KafkaException(KafkaError(KafkaError._WAIT_COORD)))
    assert _coordinator_away(KafkaException(KafkaError(KafkaError.NOT_COORDINATOR)))
    assert not _coordinator_away(KafkaException(KafkaError(KafkaError.ILLEGAL_GENERATION)))
    assert not _coordinator_away(OSError("disk"))
