"""Reading models: the numbers each sensor type reports at one time step, for all sensors.

Each model turns the pure daily shapes of `patterns` into device readings: it adds smooth
noise that carries over from step to step (an Ornstein-Uhlenbeck process, so a busy minute is
followed by a busy minute), the effect of the planted anomalies, and the rounding a real device
applies. One `block` call computes a block of time steps for every sensor of a type, as numpy
columns of shape (steps, sensors): per-step work in numpy has a fixed cost of a few
microseconds per operation, which a block of steps shares (the simulator's throughput needs it).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np

from simulator.anomalies import AnomalyKind, code
from simulator.city import City
from simulator.encoding import Columns
from simulator.patterns import (
    LocalClock,
    congested_speed,
    congestion_level,
    diurnal_temp_c,
    energy_load_share,
    occupancy_pct,
    relative_humidity_pct,
    seasonal_mean_temp_c,
    temperature_load_factor,
    traffic_demand,
)
from simulator.registry import EnergySensors, TrafficSensors, WeatherSensors

RAIN_TIP_MM = 0.2  # a tipping-bucket rain gauge reports rain in whole tips
METERS_COMMISSIONED = datetime(2024, 1, 1, tzinfo=UTC)
METER_BOUND_SHARE = 2.0
"""Meters start each run at `capacity * share * hours since commissioning`, whatever the seed:
no feeder averages twice its capacity, so this bounds what the meter counted before and
`energy_kwh` never decreases from one run to a later one."""


class SmoothNoise:
    """Mean-reverting noise sampled at the interval: correlated over `tau_s`, spread `sigma`.

    A block of steps is one matrix product: x[k] = keep**(k+1) x[-1] + sum_j kick keep**(k-j) e[j].
    """

    def __init__(
        self, size: int, tau_s: float, sigma: float, interval_s: float, rng: np.random.Generator
    ) -> None:
        self._rng = rng
        self._size = size
        self._keep = math.exp(-interval_s / tau_s)
        self._kick = sigma * math.sqrt(1 - self._keep**2)
        self._last = rng.normal(0.0, sigma, size)
        self._filters: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def _filter(self, steps: int) -> tuple[np.ndarray, np.ndarray]:
        if steps not in self._filters:
            lag = np.arange(steps)[:, None] - np.arange(steps)[None, :]
            weights = np.where(lag >= 0, self._kick * self._keep ** np.maximum(lag, 0), 0.0)
            self._filters[steps] = weights, self._keep ** np.arange(1, steps + 1)[:, None]
        return self._filters[steps]

    def block(self, steps: int) -> np.ndarray:
        weights, decay = self._filter(steps)
        values = weights @ self._rng.normal(0.0, 1.0, (steps, self._size)) + decay * self._last
        self._last = values[-1]
        return values


class TrafficModel:
    """Loop detectors: counts, mean speed, occupancy; congestion derived from the last two."""

    def __init__(self, sensors: TrafficSensors, interval_s: float, rng: np.random.Generator):
        self._s = sensors
        self._interval_s = interval_s
        self._rng = rng
        self._busyness = np.exp(rng.normal(0.0, 0.15, sensors.size))
        self._free_speed = sensors.speed_limit_kmh * rng.uniform(0.92, 1.08, sensors.size)
        self._noise = SmoothNoise(sensors.size, 600, 0.08, interval_s, rng)

    def block(self, clock: LocalClock, kinds: np.ndarray, severity: np.ndarray) -> Columns:
        s, rng, shape = self._s, self._rng, kinds.shape
        load = traffic_demand(clock.hour, clock.weekend) * self._busyness
        load = np.maximum(load * (1 + self._noise.block(shape[0])), 0.005)
        speed = congested_speed(self._free_speed, load)
        high_volume = kinds == code(AnomalyKind.HIGH_VOLUME)
        # a surge beyond what the road carries even at rush hour (normal peaks reach ~1.2)
        surge = np.maximum(load * (2.2 + 1.3 * severity), 1.45 + 0.6 * severity)
        load = np.where(high_volume, surge, load)
        jammed = kinds == code(AnomalyKind.SEVERE_CONGESTION)
        load = np.where(jammed, 0.35, load)
        speed = np.where(jammed, 4 + 10 * severity, speed)
        speeding = kinds == code(AnomalyKind.SPEED_ANOMALY)
        fast = np.minimum(s.speed_limit_kmh * (1.8 + 0.8 * severity), 240)
        speed = np.where(speeding, fast, speed)
        flow_vph = load * s.capacity_vph
        occupancy = occupancy_pct(flow_vph / s.lanes, speed) * (1 + rng.normal(0, 0.05, shape))
        occupancy = np.where(jammed, 70 + 25 * severity, occupancy)
        count = rng.poisson(flow_vph * self._interval_s / 3600)
        # the mean of fewer vehicles is noisier; no vehicle, no speed (null on the wire)
        spread = 0.15 / np.sqrt(np.maximum(count, 1))
        measured = np.clip(speed * (1 + spread * rng.normal(0, 1, shape)), 1, 250)
        measured = np.where(count > 0, np.round(measured, 1), np.nan)
        # occupancy is the time vehicles covered the loop: none passed, none covered it
        occupancy = np.where(count > 0, np.round(np.clip(occupancy, 0, 100), 1), 0.0)
        return {
            "vehicle_count": count,
            "average_speed_kmh": measured,
            "occupancy_pct": occupancy,
            "congestion_level": congestion_level(measured, occupancy, s.speed_limit_kmh),
        }


class WeatherModel:
    """Stations sharing the city's weather (fronts, pressure, rain) with local differences."""

    def __init__(
        self, sensors: WeatherSensors, city: City, interval_s: float, rng: np.random.Generator
    ):
        n = sensors.size
        self._city = city
        self._interval_s = interval_s
        self._rng = rng
        self._temp_offset = rng.normal(0.0, 0.4, n) - 0.0065 * (sensors.elevation_m - 34)
        self._pressure_offset = -sensors.elevation_m / 8.3  # station pressure, not sea level
        self._rain_factor = np.exp(rng.normal(0.0, 0.3, n))
        self._front = SmoothNoise(1, 36 * 3600, 3.0, interval_s, rng)  # warmer/colder days
        self._pressure = SmoothNoise(1, 18 * 3600, 8.0, interval_s, rng)
        self._dryness = SmoothNoise(1, 12 * 3600, 1.0, interval_s, rng)
        self._windiness = SmoothNoise(1, 4 * 3600, 0.35, interval_s, rng)
        self._rain = SmoothNoise(1, 2 * 3600, 1.0, interval_s, rng)
        self._local = SmoothNoise(n, 1200, 0.3, interval_s, rng)
        self._bucket = np.zeros(n)
        self.city_temperature_c = np.zeros((1, 1))
        """The city's temperature at each step of the last block (what loads react to)."""

    def block(self, clock: LocalClock, kinds: np.ndarray, severity: np.ndarray) -> Columns:
        city, rng, shape = self._city, self._rng, kinds.shape
        steps = shape[0]
        pressure_anomaly = self._pressure.block(steps)
        # rain comes with low pressure; ~10 % of the time it rains somewhere
        rain_mm_h = np.maximum(0.0, self._rain.block(steps) - 1.2 - pressure_anomaly / 10) * 2.5
        daily_mean = seasonal_mean_temp_c(city, clock.day_of_year) + self._front.block(steps)
        # overcast, rainy and winter days vary less between night and afternoon
        summer = 0.5 - 0.5 * np.cos(2 * np.pi * (clock.day_of_year - 15) / 365.25)
        amplitude = city.diurnal_temp_amplitude_c * (0.6 + 0.4 * summer)
        amplitude = amplitude * (1 - 0.5 * np.minimum(1.0, rain_mm_h))
        self.city_temperature_c = diurnal_temp_c(clock.hour, daily_mean, amplitude)
        temp = self.city_temperature_c + self._temp_offset + self._local.block(steps)
        spread = np.maximum(0.3, 1.5 + self._dryness.block(steps))
        spread = np.where(rain_mm_h > 0, 0.2 * spread, spread)
        humidity = relative_humidity_pct(temp, daily_mean - 0.5 * amplitude - spread)
        out_of_range = kinds == code(AnomalyKind.TEMPERATURE_OUT_OF_RANGE)
        implausible = np.where(severity >= 0.5, 45 + 26 * (severity - 0.5), -40 - 30 * severity)
        temp = np.where(out_of_range, implausible, temp)
        afternoon = 1 + 0.3 * np.exp(-0.5 * ((clock.hour - 14) / 4) ** 2)
        wind = city.mean_wind_ms * np.exp(self._windiness.block(steps)) * afternoon
        wind = wind * np.exp(rng.normal(0.0, 0.25, shape))  # gusts
        # a tipping bucket: rain collects and is reported in whole tips
        collected = self._bucket + np.cumsum(
            rain_mm_h * self._rain_factor * self._interval_s / 3600, axis=0
        )
        tips = np.floor(collected / RAIN_TIP_MM)
        self._bucket = collected[-1] - tips[-1] * RAIN_TIP_MM
        tips_per_step = np.diff(tips, axis=0, prepend=0.0)
        pressure = city.mean_pressure_hpa + pressure_anomaly + self._pressure_offset
        return {
            "temperature_c": np.round(temp, 1),
            "humidity_pct": np.round(humidity),
            "pressure_hpa": np.round(pressure + rng.normal(0.0, 0.1, shape), 1),
            "wind_speed_ms": np.round(np.clip(wind, 0, 74), 1),
            "precipitation_mm": np.round(tips_per_step * RAIN_TIP_MM, 1),
            "source": np.zeros(shape, dtype=np.int64),
        }


class EnergyModel:
    """Feeder meters: load by profile, time and temperature; V, I and P consistent (P = V*I)."""

    def __init__(
        self,
        sensors: EnergySensors,
        interval_s: float,
        start_ms: int,
        rng: np.random.Generator,
    ):
        n = sensors.size
        self._s = sensors
        self._interval_s = interval_s
        self._rng = rng
        self._scale = rng.uniform(0.75, 1.05, n)
        self._noise = SmoothNoise(n, 900, 0.06, interval_s, rng)
        hours = max(0.0, (start_ms / 1000 - METERS_COMMISSIONED.timestamp()) / 3600)
        self._meter = sensors.feeder_capacity_kw * METER_BOUND_SHARE * hours

    def block(
        self, clock: LocalClock, temp_c: np.ndarray, kinds: np.ndarray, severity: np.ndarray
    ) -> Columns:
        s, rng, shape = self._s, self._rng, kinds.shape
        share = energy_load_share(clock.hour, clock.weekend, s.load_profile) * self._scale
        load_kw = s.feeder_capacity_kw * share * temperature_load_factor(temp_c)
        load_kw = np.maximum(load_kw * (1 + self._noise.block(shape[0])), 0.0)
        spike = kinds == code(AnomalyKind.ENERGY_SPIKE)
        load_kw = np.where(spike, load_kw * (3 + 3 * severity), load_kw)
        sag = 0.04 * np.clip(load_kw / s.feeder_capacity_kw, 0, 2)  # heavy load pulls V down
        voltage = np.round(s.nominal_voltage_v * (1 - sag) + rng.normal(0.0, 0.6, shape), 1)
        current = np.round(load_kw * 1000 / voltage, 2)
        power = np.round(voltage * current / 1000, 3)  # from the rounded V and I: consistent
        meter = self._meter + np.cumsum(power * self._interval_s / 3600, axis=0)
        self._meter = meter[-1]
        return {
            "power_kw": power,
            "voltage_v": voltage,
            "current_a": current,
            "energy_kwh": np.round(meter, 3),
        }
