"""Pure, vectorised shapes of city life: when traffic peaks, how warm the afternoon gets.

Every function here is free of randomness and state so that the patterns can be tested on
their own (rush hour slower than 03:00, afternoon warmer than dawn) and reused by the stream
worker (`congestion_level` is the one definition of congestion). Times are local hours of the
day (0..24, fractional); arrays broadcast, so one call computes a whole time step of sensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
from numpy.typing import ArrayLike, NDArray

from simulator.city import City

FloatArray = NDArray[np.float64]

CONGESTION_LEVELS = ("low", "medium", "high", "severe")
VEHICLE_SPACE_KM = 0.0065  # a 5 m car plus a 1.5 m detector loop: what occupancy measures


@dataclass(frozen=True)
class LocalClock:
    """The city's wall clock at some UTC instants: what the daily patterns are functions of.

    Arrays of shape (steps, 1), so that they broadcast against (steps, sensors) readings.
    """

    hour: FloatArray  # 0..24 local, fractional
    weekend: NDArray[np.bool_]
    day_of_year: NDArray[np.int64]

    @classmethod
    def at(cls, city: City, epoch_ms: ArrayLike) -> LocalClock:
        times: list[datetime] = [city.local_time(int(t)) for t in np.ravel(epoch_ms)]
        hour = [t.hour + t.minute / 60 + (t.second + t.microsecond / 1e6) / 3600 for t in times]
        return cls(
            hour=np.array(hour).reshape(-1, 1),
            weekend=np.array([t.weekday() >= 5 for t in times]).reshape(-1, 1),
            day_of_year=np.array([t.timetuple().tm_yday for t in times]).reshape(-1, 1),
        )


def _bump(hour: ArrayLike, centre: float, width: float) -> FloatArray:
    """A Gaussian bump on the 24-hour circle (so a peak at 23:00 also lifts 01:00)."""
    distance = (np.asarray(hour, dtype=float) - centre + 12) % 24 - 12
    return np.exp(-0.5 * (distance / width) ** 2)


def _plateau(hour: ArrayLike, start: float, end: float, edge: float = 0.6) -> FloatArray:
    """Near 1 between start and end, near 0 outside, with soft edges (opening hours)."""
    h = np.asarray(hour, dtype=float)
    return 1 / (1 + np.exp(-(h - start) / edge)) / (1 + np.exp(-(end - h) / edge))


def traffic_demand(hour: ArrayLike, weekend: ArrayLike) -> FloatArray:
    """Expected volume as a share of road capacity: two weekday rush hours, a weekend hump.

    The minimum is around 03:00 local time; the weekday peaks are at 08:00 and 17:30, slightly
    above capacity on busy roads, which is what makes rush hour slow.
    """
    weekend_shape = 0.06 + 0.50 * _bump(hour, 14.0, 3.5) + 0.05 * _bump(hour, 22.0, 2.0)
    weekday_shape = (
        0.05
        + 0.50 * _bump(hour, 8.0, 1.0)
        + 0.55 * _bump(hour, 17.5, 1.4)
        + 0.38 * _plateau(hour, 6.5, 20.0, 0.8)
    )
    return np.where(weekend, weekend_shape, weekday_shape)


def congested_speed(free_speed_kmh: ArrayLike, volume_to_capacity: ArrayLike) -> FloatArray:
    """Mean speed falling with load (a BPR-style curve: flat at night, steep near capacity)."""
    x = np.maximum(np.asarray(volume_to_capacity, dtype=float), 0.0)
    return np.asarray(free_speed_kmh, dtype=float) / (1 + 0.8 * x**4)


def occupancy_pct(flow_vph_per_lane: ArrayLike, speed_kmh: ArrayLike) -> FloatArray:
    """Share of time a detector is covered: density (flow / speed) times vehicle length."""
    density = np.asarray(flow_vph_per_lane, dtype=float) / np.maximum(speed_kmh, 1.0)
    return np.clip(100 * density * VEHICLE_SPACE_KM, 0.0, 100.0)


def congestion_level(
    speed_kmh: ArrayLike, occupancy: ArrayLike, speed_limit_kmh: ArrayLike
) -> NDArray[np.int64]:
    """Index into `CONGESTION_LEVELS`, from occupancy and speed relative to the limit.

    A NaN speed (no vehicle passed) is judged by occupancy alone. Thresholds follow the usual
    loop-detector rules of thumb: above ~18 % occupancy traffic is no longer free-flowing.
    """
    occ = np.asarray(occupancy, dtype=float)
    ratio = np.asarray(speed_kmh, dtype=float) / np.asarray(speed_limit_kmh, dtype=float)
    ratio = np.where(np.isnan(ratio), np.inf, ratio)
    level = np.zeros(np.broadcast(occ, ratio).shape, dtype=np.int64)
    for code, (min_occupancy, max_ratio) in enumerate(((18, 0.70), (35, 0.45), (60, 0.25)), 1):
        level = np.where((occ >= min_occupancy) | (ratio < max_ratio), code, level)
    return level


def seasonal_mean_temp_c(city: City, day_of_year: ArrayLike) -> FloatArray:
    """Daily mean temperature of the season, interpolated between monthly normals (cyclic)."""
    mid_month = (np.arange(12) + 0.5) * 365.25 / 12
    days = np.concatenate([mid_month - 365.25, mid_month, mid_month + 365.25])
    temps = np.tile(city.monthly_mean_temp_c, 3)
    return np.interp(np.asarray(day_of_year, dtype=float), days, temps)


def diurnal_temp_c(hour: ArrayLike, daily_mean_c: ArrayLike, amplitude_c: float) -> FloatArray:
    """Coldest just before dawn (~04:00), warmest mid-afternoon (~15:00) local time."""
    h = np.asarray(hour, dtype=float)
    phase = np.where(h < 4, h + 24, h)  # warming 04->15 (11 h), cooling 15->04 (13 h)
    warming = np.cos(np.pi * (phase - 15) / 11)
    cooling = np.cos(np.pi * (phase - 15) / 13)
    return np.asarray(daily_mean_c) + amplitude_c * np.where(phase <= 15, warming, cooling)


def relative_humidity_pct(temp_c: ArrayLike, dew_point_c: ArrayLike) -> FloatArray:
    """Relative humidity from temperature and dew point (Magnus formula).

    With the dew point steady over a day, humidity falls as the afternoon warms: the inverse
    movement real stations show.
    """
    t = np.asarray(temp_c, dtype=float)
    td = np.minimum(np.asarray(dew_point_c, dtype=float), t)
    magnus = np.exp(17.625 * td / (243.04 + td) - 17.625 * t / (243.04 + t))
    return np.clip(100 * magnus, 0.0, 100.0)


def energy_load_share(hour: ArrayLike, weekend: ArrayLike, profile: ArrayLike) -> FloatArray:
    """Load as a share of feeder capacity by profile (0 residential, 1 commercial, 2 industrial).

    Homes peak at breakfast and in the evening, offices and shops during opening hours, industry
    runs two shifts on weekdays and idles lower at the weekend.
    """
    morning = np.where(weekend, _bump(hour, 9.5, 1.3), _bump(hour, 7.5, 1.3))
    residential = 0.22 + 0.18 * morning + 0.40 * _bump(hour, 19.5, 2.2)
    commercial = np.where(
        weekend, 0.18 + 0.22 * _plateau(hour, 10.0, 16.0), 0.18 + 0.55 * _plateau(hour, 7.5, 18.5)
    )
    industrial = np.where(
        weekend, 0.42 + 0.05 * _plateau(hour, 6.0, 14.0), 0.45 + 0.35 * _plateau(hour, 6.0, 22.0)
    )
    return np.choose(np.asarray(profile), (residential, commercial, industrial))


def temperature_load_factor(temp_c: ArrayLike) -> FloatArray:
    """More load when it is cold (heating below 15 °C) or hot (cooling above 22 °C)."""
    t = np.asarray(temp_c, dtype=float)
    return 1 + 0.022 * np.maximum(15 - t, 0) + 0.035 * np.maximum(t - 22, 0)
