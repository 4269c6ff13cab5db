"""Readings to wire bytes: one orjson call per message, fields in the contract's order.

A time step of one sensor type arrives as numpy columns; converting each column to a Python
list once (`tolist`) and building the dicts in one comprehension is what keeps encoding near a
microsecond per message, the simulator's bottleneck.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import orjson

from simulator.patterns import CONGESTION_LEVELS
from smartcity.contract import SCHEMA_VERSION

WEATHER_SOURCES = ("simulated", "openweather")
_LEVEL_NAMES = np.array(CONGESTION_LEVELS, dtype=object)
_SOURCE_NAMES = np.array(WEATHER_SOURCES, dtype=object)

Columns = dict[str, np.ndarray]
Encoder = Callable[[Sequence[str], str, int, float, Columns], list[bytes]]


def format_event_time(epoch_ms: int) -> str:
    """RFC 3339 UTC with milliseconds and `Z`, e.g. `2026-11-27T08:15:00.000Z` (exact: ints)."""
    seconds, millis = divmod(epoch_ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def _nullable(values: np.ndarray) -> list[float | None]:
    """NaN (no value, e.g. no vehicle passed) becomes JSON null."""
    objects = values.astype(object)
    objects[np.isnan(values)] = None
    return objects.tolist()


def encode_traffic(
    ids: Sequence[str], event_time: str, seq: int, interval_s: float, c: Columns
) -> list[bytes]:
    return [
        orjson.dumps(
            {
                "schema_version": SCHEMA_VERSION,
                "sensor_id": sensor,
                "sensor_type": "traffic",
                "event_time": event_time,
                "seq": seq,
                "interval_s": interval_s,
                "vehicle_count": count,
                "average_speed_kmh": speed,
                "occupancy_pct": occupancy,
                "congestion_level": level,
            }
        )
        for sensor, count, speed, occupancy, level in zip(
            ids,
            c["vehicle_count"].tolist(),
            _nullable(c["average_speed_kmh"]),
            c["occupancy_pct"].tolist(),
            _LEVEL_NAMES[c["congestion_level"]].tolist(),
            strict=True,
        )
    ]


def encode_weather(
    ids: Sequence[str], event_time: str, seq: int, interval_s: float, c: Columns
) -> list[bytes]:
    return [
        orjson.dumps(
            {
                "schema_version": SCHEMA_VERSION,
                "sensor_id": sensor,
                "sensor_type": "weather",
                "event_time": event_time,
                "seq": seq,
                "interval_s": interval_s,
                "temperature_c": temperature,
                "humidity_pct": humidity,
                "pressure_hpa": pressure,
                "wind_speed_ms": wind,
                "precipitation_mm": precipitation,
                "source": source,
            }
        )
        for sensor, temperature, humidity, pressure, wind, precipitation, source in zip(
            ids,
            c["temperature_c"].tolist(),
            c["humidity_pct"].tolist(),
            c["pressure_hpa"].tolist(),
            c["wind_speed_ms"].tolist(),
            c["precipitation_mm"].tolist(),
            _SOURCE_NAMES[c["source"]].tolist(),
            strict=True,
        )
    ]


def encode_energy(
    ids: Sequence[str], event_time: str, seq: int, interval_s: float, c: Columns
) -> list[bytes]:
    return [
        orjson.dumps(
            {
                "schema_version": SCHEMA_VERSION,
                "sensor_id": sensor,
                "sensor_type": "energy",
                "event_time": event_time,
                "seq": seq,
                "interval_s": interval_s,
                "power_kw": power,
                "voltage_v": voltage,
                "current_a": current,
                "energy_kwh": energy,
            }
        )
        for sensor, power, voltage, current, energy in zip(
            ids,
            c["power_kw"].tolist(),
            c["voltage_v"].tolist(),
            c["current_a"].tolist(),
            c["energy_kwh"].tolist(),
            strict=True,
        )
    ]


ENCODERS: dict[str, Encoder] = {
    "traffic": encode_traffic,
    "weather": encode_weather,
    "energy": encode_energy,
}
