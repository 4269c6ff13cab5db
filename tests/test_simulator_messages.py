"""On the wire: messages keep the contract, seeds reproduce bytes, faults are what they say."""

from __future__ import annotations

import re
from collections import Counter

import orjson
import pytest

from simulator.encoding import format_event_time
from simulator.faults import FAULT_KINDS, INTACT, FaultConfig, FaultSpecError
from simulator.registry import build_registry
from smartcity.contract import validate_reading
from tests.simulator_support import NOV_27_MS, classify, faults, known_ids, simulate

EVENT_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def test_every_message_keeps_the_contract_and_seq_rises_by_one() -> None:
    messages, _ = simulate(200, interval_ms=100, anomaly_rate_per_hour=200.0)
    last_seq: dict[str, int] = {}
    for sensor_type, batch in messages.items():
        for key, value, seq, code in batch:
            reading = orjson.loads(value)
            validate_reading(reading)
            assert code == INTACT
            assert reading["sensor_type"] == sensor_type
            assert key == reading["sensor_id"].encode()
            assert EVENT_TIME.match(reading["event_time"])
            assert reading["seq"] == seq == NOV_27_MS // 100 + (seq - NOV_27_MS // 100)
            assert list(reading)[:6] == [
                "schema_version",
                "sensor_id",
                "sensor_type",
                "event_time",
                "seq",
                "interval_s",
            ]
            assert reading["seq"] == last_seq.get(reading["sensor_id"], seq - 1) + 1
            last_seq[reading["sensor_id"]] = reading["seq"]
    assert len(last_seq) == 210


def test_the_same_seed_gives_the_same_bytes() -> None:
    spec = faults("all=0.02")
    first, _ = simulate(40, interval_ms=1000, seed=7, faults=spec, anomaly_rate_per_hour=20.0)
    again, _ = simulate(40, interval_ms=1000, seed=7, faults=spec, anomaly_rate_per_hour=20.0)
    other, _ = simulate(40, interval_ms=1000, seed=8, faults=spec, anomaly_rate_per_hour=20.0)
    assert first == again
    assert first != other


def test_event_times_have_milliseconds_and_z() -> None:
    assert format_event_time(NOV_27_MS + 8 * 3_600_000 + 15 * 60_000) == "2026-11-27T08:15:00.000Z"
    assert format_event_time(NOV_27_MS + 1) == "2026-11-27T00:00:00.001Z"


def test_with_no_faults_every_message_is_valid() -> None:
    registry = build_registry()
    messages, _ = simulate(100, interval_ms=1000, faults=faults("all=0"))
    census = classify(
        (v for batch in messages.values() for _, v, _, _ in batch), known_ids(registry)
    )
    assert census.kinds == Counter(intact=100 * 210)


@pytest.mark.parametrize("kind", FAULT_KINDS)
def test_each_fault_kind_produces_what_it_says(kind: str) -> None:
    registry = build_registry()
    messages, _ = simulate(120, interval_ms=10_000, faults=faults(f"{kind}=0.05"))
    values = [v for batch in messages.values() for _, v, _, _ in batch]
    codes = Counter(FAULT_KINDS[c - 1] for batch in messages.values() for *_, c in batch if c)
    census = classify(values, known_ids(registry))
    assert codes[kind] > 300  # ~5 % of 25,200 readings
    # (a late reading still held at the end goes out after one newer one: out of order)
    assert set(codes) <= {kind, "out_of_order"}
    assert census.kinds - Counter(intact=census.kinds["intact"]) == codes
    # nothing is lost: every reading of every step is on the wire exactly once
    assert len(census.readings) == 120 * 210


def test_fault_specs_are_checked() -> None:
    assert FaultConfig.parse("malformed=0.01, duplicate=0.02").fractions == {
        "malformed": 0.01,
        "duplicate": 0.02,
    }
    assert set(FaultConfig.parse("all=0.1").fractions) == set(FAULT_KINDS)
    for bad in ("malformed", "typo=0.1", "duplicate=2", "late=0.6,out_of_order=0.6"):
        with pytest.raises(FaultSpecError):
            FaultConfig.parse(bad)
