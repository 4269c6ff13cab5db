"""Test helpers for the simulator: run a simulation in memory, classify what is on the wire."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from simulator.faults import FaultConfig, Message
from simulator.registry import Registry, build_registry
from simulator.simulation import Simulation, SimulationConfig
from smartcity.contract import ContractError, validate_reading

NOV_27_MS = 1_795_737_600_000  # 2026-11-27T00:00:00Z, a Friday
_NOT_NUMERIC = {"sensor_id", "sensor_type", "event_time", "congestion_level", "source"}


def simulate(
    steps: int,
    interval_ms: int = 60_000,
    start_ms: int = NOV_27_MS,
    registry: Registry | None = None,
    **config: Any,
) -> tuple[dict[str, list[Message]], Simulation]:
    """All messages of `steps` steps (and the end-of-run release), by sensor type."""
    simulation = Simulation(
        registry or build_registry(),
        SimulationConfig(start_ms=start_ms, interval_ms=interval_ms, **config),
    )
    messages: dict[str, list[Message]] = {}
    for _ in range(steps):
        for batch in simulation.next_step():
            messages.setdefault(batch.sensor_type, []).extend(batch.messages)
    for batch in simulation.finish():
        messages.setdefault(batch.sensor_type, []).extend(batch.messages)
    return messages, simulation


def faults(spec: str) -> FaultConfig:
    return FaultConfig.parse(spec)


@dataclass
class WireCensus:
    """What a consumer sees, message by message in order, classified like the faults."""

    kinds: Counter[str] = field(default_factory=Counter)
    readings: set[tuple[str, int]] = field(default_factory=set)


def classify(values: Iterable[bytes], known_ids: set[str]) -> WireCensus:
    """Classify messages in delivery order (per sensor order is what matters)."""
    census = WireCensus()
    newest: dict[str, int] = {}
    for value in values:
        try:
            reading = orjson.loads(value)
        except orjson.JSONDecodeError:
            census.kinds["malformed"] += 1
            continue
        try:
            validate_reading(reading)
        except ContractError:
            census.kinds[_contract_fault(reading)] += 1
            continue
        pair = (reading["sensor_id"], reading["seq"])
        if pair[0] not in known_ids:
            census.kinds["unknown_sensor"] += 1
        elif pair in census.readings:
            census.kinds["duplicate"] += 1
        else:
            census.readings.add(pair)
            behind = newest.get(pair[0], pair[1]) - pair[1]
            census.kinds[
                "late" if behind >= 2 else "out_of_order" if behind == 1 else "intact"
            ] += 1
            newest[pair[0]] = max(newest.get(pair[0], pair[1]), pair[1])
    return census


def _contract_fault(reading: dict[str, Any]) -> str:
    if reading.get("sensor_type") not in ("traffic", "weather", "energy"):
        return "missing_field"  # the faults never change the type, they may drop it
    template = {
        "traffic": {"vehicle_count", "average_speed_kmh", "occupancy_pct", "congestion_level"},
        "weather": {
            "temperature_c",
            "humidity_pct",
            "pressure_hpa",
            "wind_speed_ms",
            "precipitation_mm",
            "source",
        },
        "energy": {"power_kw", "voltage_v", "current_a", "energy_kwh"},
    }[reading["sensor_type"]] | {"schema_version", "sensor_id", "sensor_type", "event_time", "seq"}
    if template - reading.keys():
        return "missing_field"
    if any(isinstance(v, str) for k, v in reading.items() if k not in _NOT_NUMERIC):
        return "wrong_type"
    return "out_of_range"


def known_ids(registry: Registry) -> set[str]:
    return {sensor for t in ("traffic", "weather", "energy") for sensor in registry.group(t).ids}
