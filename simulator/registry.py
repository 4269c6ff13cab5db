"""The sensor registry: which sensors exist, where they stand and what they measure.

The registry is the simulator's ground for every later join (the `sensor_registry` asset is
this table), so it must not change from run to run: it depends only on its own seed and the
counts, never on the reading seed. Every attribute comes from its own random stream drawn in
sensor order, so the registry is prefix-stable: `TRAFFIC_0005` is the same sensor whether 21
or 100,000 sensors are simulated.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import cached_property

import numpy as np
import pyarrow as pa

from simulator.city import BERLIN, City, District
from smartcity.registry import REGISTRY_SCHEMA
from smartcity.settings import SENSOR_TYPES

REGISTRY_SEED = 20261127
"""Fixed on purpose: the registry is reference data shared by every part of the platform."""

DEFAULT_COUNTS: dict[str, int] = {"traffic": 100, "weather": 10, "energy": 100}
MAX_PER_TYPE = 100_000
ID_PREFIX: dict[str, str] = {"traffic": "TRAFFIC", "weather": "WEATHER", "energy": "ENERGY"}
MIN_ID_DIGITS = 4
MAX_ID_DIGITS = 6  # the contract's pattern: (TRAFFIC|WEATHER|ENERGY)_[0-9]{4,6}

ROAD_CLASSES = ("motorway", "arterial", "collector", "local")
_ROAD_SHARE = np.array([0.1, 0.4, 0.3, 0.2])
_ROAD_LANES_MIN = np.array([2, 2, 1, 1])
_ROAD_LANES_MAX = np.array([4, 3, 2, 1])
_ROAD_LANE_CAPACITY_VPH = np.array([1900, 900, 700, 450])  # signalised roads carry less
_ROAD_SPEED_LIMIT_KMH = np.array([80, 50, 50, 30])

LOAD_PROFILES = ("residential", "commercial", "industrial")
_LOAD_SHARE = np.array([0.5, 0.35, 0.15])
_FEEDER_KW_MIN = np.array([100, 200, 500])
_FEEDER_KW_MAX = np.array([600, 1000, 2000])
NOMINAL_VOLTAGE_V = 230.0
DEFAULT_ROAD_CLASS = "arterial"
DEFAULT_LOAD_PROFILE = "residential"
DEFAULT_FEEDER_KW = 400.0
DEFAULT_ELEVATION_M = 40.0
DECLARED_INTERVAL_S = 60.0
"""What the default city's sensors declare in the registry (a run may simulate another)."""
INSTALLED_AT = datetime(2026, 1, 1, tzinfo=UTC)


class SensorCountError(ValueError):
    """Sensor counts the registry cannot honour (the message says which and why)."""


def parse_sensor_counts(spec: str) -> dict[str, int]:
    """`"210"` (split 10:1:10 like the default city) or `"traffic=100,weather=10,energy=100"`."""
    spec = spec.strip()
    if spec.isdigit():
        total = int(spec)
        if total < len(SENSOR_TYPES):
            raise SensorCountError(f"--sensors {total}: need at least one sensor of each type")
        default_total = sum(DEFAULT_COUNTS.values())
        weather = max(1, round(total * DEFAULT_COUNTS["weather"] / default_total))
        traffic = (total - weather + 1) // 2
        counts = {"traffic": traffic, "weather": weather, "energy": total - weather - traffic}
    else:
        counts = dict.fromkeys(SENSOR_TYPES, 0)
        for part in filter(None, (p.strip() for p in spec.split(","))):
            name, sep, value = part.partition("=")
            if not sep or name not in counts or not value.strip().isdigit():
                raise SensorCountError(
                    f"--sensors {spec!r}: expected N or traffic=N,weather=N,energy=N"
                )
            counts[name] = int(value)
    for sensor_type, count in counts.items():
        if not 1 <= count <= MAX_PER_TYPE:
            raise SensorCountError(f"{sensor_type} sensors: {count}, expected 1..{MAX_PER_TYPE}")
    return counts


def id_digits(count: int) -> int:
    """Digits of the id number: 4 like the default city, more when the count needs them."""
    return max(MIN_ID_DIGITS, len(str(count - 1)))


def sensor_id(sensor_type: str, index: int, digits: int) -> str:
    return f"{ID_PREFIX[sensor_type]}_{index:0{digits}d}"


@dataclass(frozen=True, eq=False)
class SensorGroup:
    """All sensors of one type, as arrays in id order (what the vectorised models need)."""

    sensor_type: str
    ids: tuple[str, ...]
    district: np.ndarray  # index into City.districts
    latitude: np.ndarray
    longitude: np.ndarray

    @property
    def size(self) -> int:
        return len(self.ids)

    @cached_property
    def keys(self) -> tuple[bytes, ...]:
        """The ids as Kafka message keys, encoded once."""
        return tuple(sensor_id.encode() for sensor_id in self.ids)

    def unknown_id(self, k: int) -> str:
        """A contract-valid id of this type that is not in the registry (the k-th such)."""
        digits = id_digits(self.size)
        if self.size >= 10**digits:
            digits += 1
        spare = 10**digits - self.size
        number = self.size + k % spare
        while (candidate := sensor_id(self.sensor_type, number, digits)) in self.id_set:
            number = (number + 1) % 10**digits  # a registry's ids need not be 0..size-1
        return candidate

    @cached_property
    def id_set(self) -> frozenset[str]:
        return frozenset(self.ids)

    def profile_columns(self) -> dict[str, list[object]]:
        """The type-specific registry columns (names as in `REGISTRY_SCHEMA`)."""
        return {}


@dataclass(frozen=True, eq=False)
class TrafficSensors(SensorGroup):
    road_class: np.ndarray  # index into ROAD_CLASSES
    lanes: np.ndarray
    speed_limit_kmh: np.ndarray
    capacity_vph: np.ndarray  # vehicles per hour the road section carries at saturation

    def profile_columns(self) -> dict[str, list[object]]:
        return {
            "road_class": [ROAD_CLASSES[i] for i in self.road_class.tolist()],
            "lanes": self.lanes.tolist(),
            "speed_limit_kmh": self.speed_limit_kmh.tolist(),
            "capacity_vph": self.capacity_vph.tolist(),
        }


@dataclass(frozen=True, eq=False)
class WeatherSensors(SensorGroup):
    elevation_m: np.ndarray

    def profile_columns(self) -> dict[str, list[object]]:
        return {"elevation_m": self.elevation_m.tolist()}


@dataclass(frozen=True, eq=False)
class EnergySensors(SensorGroup):
    load_profile: np.ndarray  # index into LOAD_PROFILES
    feeder_capacity_kw: np.ndarray
    nominal_voltage_v: np.ndarray

    def profile_columns(self) -> dict[str, list[object]]:
        return {
            "load_profile": [LOAD_PROFILES[i] for i in self.load_profile.tolist()],
            "feeder_capacity_kw": self.feeder_capacity_kw.tolist(),
            "nominal_voltage_v": self.nominal_voltage_v.tolist(),
        }


class _Draws:
    """Uniform draws per (type, attribute), each from its own seeded stream: prefix-stable."""

    def __init__(self, seed: int, sensor_type: str, size: int) -> None:
        self._seed = seed
        self._type = SENSOR_TYPES.index(sensor_type)
        self._size = size

    def uniform(self, attribute: int) -> np.ndarray:
        rng = np.random.default_rng([self._seed, self._type, attribute])
        return rng.random(self._size)

    def choice(self, attribute: int, shares: np.ndarray) -> np.ndarray:
        """Category indices with the given shares, by inverse CDF of one uniform per sensor."""
        edges = np.cumsum(shares / shares.sum())
        return np.minimum(
            np.searchsorted(edges, self.uniform(attribute), side="right"), len(shares) - 1
        )

    def integers(self, attribute: int, low: np.ndarray, high: np.ndarray) -> np.ndarray:
        """Integers in [low, high] (inclusive, per sensor)."""
        return (low + np.floor(self.uniform(attribute) * (high - low + 1))).astype(np.int64)


def _place(city: City, draws: _Draws) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """District, latitude and longitude: scattered around the district's centre, in the bbox."""
    district = draws.choice(0, np.ones(len(city.districts)))
    centre_lat = np.array([d.latitude for d in city.districts])[district]
    centre_lon = np.array([d.longitude for d in city.districts])[district]
    radius = 0.025 * np.sqrt(draws.uniform(1))  # uniform over a disc of ~2.5 km
    angle = 2 * np.pi * draws.uniform(2)
    latitude = np.clip(centre_lat + radius * np.sin(angle), city.south, city.north)
    longitude = np.clip(centre_lon + 1.6 * radius * np.cos(angle), city.west, city.east)
    return district, np.round(latitude, 6), np.round(longitude, 6)


def _common(
    city: City, sensor_type: str, count: int, seed: int
) -> tuple[_Draws, dict[str, object]]:
    draws = _Draws(seed, sensor_type, count)
    district, latitude, longitude = _place(city, draws)
    digits = id_digits(count)
    ids = tuple(sensor_id(sensor_type, i, digits) for i in range(count))
    common = {
        "sensor_type": sensor_type,
        "ids": ids,
        "district": district,
        "latitude": latitude,
        "longitude": longitude,
    }
    return draws, common


def _traffic(city: City, count: int, seed: int) -> TrafficSensors:
    draws, common = _common(city, "traffic", count, seed)
    road = draws.choice(10, _ROAD_SHARE)
    lanes = draws.integers(11, _ROAD_LANES_MIN[road], _ROAD_LANES_MAX[road])
    return TrafficSensors(
        **common,  # type: ignore[arg-type]
        road_class=road,
        lanes=lanes,
        speed_limit_kmh=_ROAD_SPEED_LIMIT_KMH[road],
        capacity_vph=lanes * _ROAD_LANE_CAPACITY_VPH[road],
    )


def _weather(city: City, count: int, seed: int) -> WeatherSensors:
    draws, common = _common(city, "weather", count, seed)
    elevation = np.round(34 + 60 * draws.uniform(10) ** 2)  # Berlin: mostly 34-60 m, hills ~100
    return WeatherSensors(**common, elevation_m=elevation)  # type: ignore[arg-type]


def _energy(city: City, count: int, seed: int) -> EnergySensors:
    draws, common = _common(city, "energy", count, seed)
    profile = draws.choice(10, _LOAD_SHARE)
    low, high = _FEEDER_KW_MIN[profile], _FEEDER_KW_MAX[profile]
    capacity = np.round((low + (high - low) * draws.uniform(11)) / 10) * 10
    return EnergySensors(
        **common,  # type: ignore[arg-type]
        load_profile=profile,
        feeder_capacity_kw=capacity,
        nominal_voltage_v=np.full(count, NOMINAL_VOLTAGE_V),
    )


@dataclass(frozen=True, eq=False)
class Registry:
    """Every simulated sensor of one city, grouped by type."""

    city: City
    traffic: TrafficSensors
    weather: WeatherSensors
    energy: EnergySensors

    def group(self, sensor_type: str) -> SensorGroup:
        return {"traffic": self.traffic, "weather": self.weather, "energy": self.energy}[
            sensor_type
        ]

    @property
    def size(self) -> int:
        return self.traffic.size + self.weather.size + self.energy.size

    @property
    def counts(self) -> dict[str, int]:
        return {t: self.group(t).size for t in SENSOR_TYPES}

    def table(self) -> pa.Table:
        """One row per sensor; type-specific columns are null for the other types."""
        return registry_table(self)


def build_registry(
    counts: dict[str, int] | None = None, city: City = BERLIN, seed: int = REGISTRY_SEED
) -> Registry:
    counts = {**DEFAULT_COUNTS, **(counts or {})}
    return Registry(
        city=city,
        traffic=_traffic(city, counts["traffic"], seed),
        weather=_weather(city, counts["weather"], seed),
        energy=_energy(city, counts["energy"], seed),
    )


def registry_from_table(table: pa.Table, climate: City = BERLIN) -> Registry:
    """The city a registry table describes, to simulate readings for any city's sensors.

    Districts and the bounding box come from the sensors themselves; the clock and the
    climate are `climate`'s (the models know no other). An attribute the registry leaves
    out gets the value of the most common class of its kind (an arterial road, a
    residential feeder), so a registry with only the required fields still simulates.
    """
    rows = sorted(table.to_pylist(), key=lambda row: row["sensor_id"])
    names = sorted({row["district"] for row in rows})
    members = {name: [r for r in rows if r["district"] == name] for name in names}
    city = replace(
        climate,
        districts=tuple(
            District(
                name,
                float(np.mean([r["latitude"] for r in sensors])),
                float(np.mean([r["longitude"] for r in sensors])),
            )
            for name, sensors in members.items()
        ),
        south=min(r["latitude"] for r in rows),
        north=max(r["latitude"] for r in rows),
        west=min(r["longitude"] for r in rows),
        east=max(r["longitude"] for r in rows),
    )
    by_type = {t: [r for r in rows if r["sensor_type"] == t] for t in SENSOR_TYPES}
    return Registry(
        city=city,
        traffic=_traffic_from_rows(by_type["traffic"], names),
        weather=WeatherSensors(
            **_common_from_rows("weather", by_type["weather"], names),
            elevation_m=_column(by_type["weather"], "elevation_m", DEFAULT_ELEVATION_M),
        ),
        energy=_energy_from_rows(by_type["energy"], names),
    )


def _common_from_rows(sensor_type: str, rows: list[dict], districts: list[str]) -> dict:
    return {
        "sensor_type": sensor_type,
        "ids": tuple(row["sensor_id"] for row in rows),
        "district": np.array([districts.index(row["district"]) for row in rows], dtype=np.int64),
        "latitude": _column(rows, "latitude", 0.0),
        "longitude": _column(rows, "longitude", 0.0),
    }


def _column(rows: list[dict], name: str, default: float) -> np.ndarray:
    return np.array(
        [default if row.get(name) is None else row[name] for row in rows], dtype=np.float64
    )


def _traffic_from_rows(rows: list[dict], districts: list[str]) -> TrafficSensors:
    road = np.array(
        [ROAD_CLASSES.index(row.get("road_class") or DEFAULT_ROAD_CLASS) for row in rows],
        dtype=np.int64,
    )
    lanes = _column(rows, "lanes", np.nan)
    lanes = np.where(np.isnan(lanes), _ROAD_LANES_MIN[road], lanes).astype(np.int64)
    speed = _column(rows, "speed_limit_kmh", np.nan)
    capacity = _column(rows, "capacity_vph", np.nan)
    return TrafficSensors(
        **_common_from_rows("traffic", rows, districts),
        road_class=road,
        lanes=lanes,
        speed_limit_kmh=np.where(np.isnan(speed), _ROAD_SPEED_LIMIT_KMH[road], speed).astype(
            np.int64
        ),
        capacity_vph=np.where(
            np.isnan(capacity), lanes * _ROAD_LANE_CAPACITY_VPH[road], capacity
        ).astype(np.int64),
    )


def _energy_from_rows(rows: list[dict], districts: list[str]) -> EnergySensors:
    profile = np.array(
        [LOAD_PROFILES.index(row.get("load_profile") or DEFAULT_LOAD_PROFILE) for row in rows],
        dtype=np.int64,
    )
    return EnergySensors(
        **_common_from_rows("energy", rows, districts),
        load_profile=profile,
        feeder_capacity_kw=_column(rows, "feeder_capacity_kw", DEFAULT_FEEDER_KW),
        nominal_voltage_v=_column(rows, "nominal_voltage_v", NOMINAL_VOLTAGE_V),
    )


def registry_table(registry: Registry | None = None) -> pa.Table:
    """The registry as an Arrow table (the `sensor_registry` asset), default city if none."""
    registry = registry or build_registry()
    districts = [d.name for d in registry.city.districts]
    columns: dict[str, list[object]] = {field.name: [] for field in REGISTRY_SCHEMA}
    for sensor_type in SENSOR_TYPES:
        group = registry.group(sensor_type)
        values = {
            "sensor_id": list(group.ids),
            "sensor_type": [sensor_type] * group.size,
            "district": [districts[i] for i in group.district.tolist()],
            "latitude": group.latitude.tolist(),
            "longitude": group.longitude.tolist(),
            "interval_s": [DECLARED_INTERVAL_S] * group.size,
            "installed_at": [INSTALLED_AT] * group.size,
            "active": [True] * group.size,
            **group.profile_columns(),
        }
        for name, column in columns.items():
            column.extend(values.get(name, [None] * group.size))
    return pa.table(columns, schema=REGISTRY_SCHEMA)
