"""The simulated city: where the sensors stand and which clock and climate they live in.

Patterns such as rush hours are local-time phenomena while readings carry UTC timestamps, so
the city owns its time zone; the climate numbers let the weather model give a November day in
Berlin November temperatures.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from zoneinfo import ZoneInfo


@dataclass(frozen=True)
class District:
    name: str
    latitude: float
    longitude: float


@dataclass(frozen=True)
class City:
    """A real city's frame: time zone, bounding box, districts and monthly climate."""

    name: str
    timezone: str
    south: float
    west: float
    north: float
    east: float
    districts: tuple[District, ...]
    monthly_mean_temp_c: tuple[float, ...]  # January..December, daily mean
    diurnal_temp_amplitude_c: float  # half of the typical day-night difference
    mean_humidity_pct: float
    mean_pressure_hpa: float
    mean_wind_ms: float

    @cached_property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def local_time(self, epoch_ms: int) -> datetime:
        """The city's wall-clock time at a UTC instant (daylight saving included)."""
        return datetime.fromtimestamp(epoch_ms / 1000, UTC).astimezone(self.zone)

    def contains(self, latitude: float, longitude: float) -> bool:
        return self.south <= latitude <= self.north and self.west <= longitude <= self.east


BERLIN = City(
    name="Berlin",
    timezone="Europe/Berlin",
    south=52.3383,
    west=13.0884,
    north=52.6755,
    east=13.7611,
    districts=(
        District("Mitte", 52.5200, 13.3700),
        District("Friedrichshain-Kreuzberg", 52.5000, 13.4300),
        District("Pankow", 52.5950, 13.4300),
        District("Charlottenburg-Wilmersdorf", 52.5000, 13.2800),
        District("Spandau", 52.5400, 13.1900),
        District("Steglitz-Zehlendorf", 52.4350, 13.2400),
        District("Tempelhof-Schöneberg", 52.4500, 13.3800),
        District("Neukölln", 52.4450, 13.4500),
        District("Treptow-Köpenick", 52.4300, 13.5800),
        District("Marzahn-Hellersdorf", 52.5300, 13.5900),
        District("Lichtenberg", 52.5300, 13.5000),
        District("Reinickendorf", 52.6000, 13.2900),
    ),
    monthly_mean_temp_c=(0.6, 1.4, 4.8, 9.8, 14.5, 17.6, 19.8, 19.3, 15.1, 10.0, 5.1, 1.8),
    diurnal_temp_amplitude_c=3.5,
    mean_humidity_pct=78.0,
    mean_pressure_hpa=1013.0,
    mean_wind_ms=3.8,
)
"""The default city: Berlin's twelve districts, its bounding box and its climate normals."""
