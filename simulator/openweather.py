"""Optional live weather: a share of weather readings observed by OpenWeather instead of made up.

Used only in live mode with `SMARTCITY_OPENWEATHER_API_KEY` set. The free API allows about one
call a second, so answers are cached per location (rounded to ~1 km) for `cache_ttl_s`, calls
are spaced by `min_interval_s`, each has a short timeout and one retry on a server error, and
anything that goes wrong (no call allowed yet, timeout, error status, an answer outside the
contract) falls back to the simulated reading and is counted by reason. Calls are made from the
run loop, so the timeout also bounds how long one can hold a live run back.
"""

from __future__ import annotations

import collections
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
from tenacity import retry, retry_if_exception, stop_after_attempt, wait_fixed

from simulator.encoding import WEATHER_SOURCES, Columns
from simulator.registry import WeatherSensors
from smartcity.contract import ContractError, validate_reading

API_KEY_ENV = "SMARTCITY_OPENWEATHER_API_KEY"
URL_ENV = "SMARTCITY_OPENWEATHER_URL"
DEFAULT_URL = "https://api.openweathermap.org/data/2.5/weather"
OPENWEATHER = WEATHER_SOURCES.index("openweather")


@dataclass(frozen=True)
class Observation:
    temperature_c: float
    humidity_pct: float
    pressure_hpa: float
    wind_speed_ms: float
    rain_mm_h: float
    fetched_at: float


class Fallback(Exception):
    """Why an observation could not be used; the reason names the counter."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _server_error(error: BaseException) -> bool:
    return isinstance(error, httpx.HTTPStatusError) and error.response.status_code >= 500


class OpenWeatherSource:
    """Replaces a share of simulated weather readings with current observations."""

    def __init__(
        self,
        api_key: str,
        *,
        share: float = 0.1,
        interval_s: float = 1.0,
        url: str | None = None,
        cache_ttl_s: float = 600.0,
        min_interval_s: float = 1.0,
        timeout_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._api_key = api_key
        self._share = share
        self._interval_s = interval_s
        self._url = url or os.environ.get(URL_ENV, DEFAULT_URL)
        self._cache_ttl_s = cache_ttl_s
        self._min_interval_s = min_interval_s
        self._clock = clock
        self._client = httpx.Client(timeout=httpx.Timeout(timeout_s))
        self._cache: dict[tuple[float, float], Observation] = {}
        self._last_call = -float("inf")
        self.stats: collections.Counter[str] = collections.Counter()

    def counts(self) -> dict[str, int]:
        """used, requests, cache_hits and fallback_<reason> counters for the run summary."""
        return dict(sorted(self.stats.items()))

    def override(
        self,
        sensors: WeatherSensors,
        columns: Columns,
        eligible: np.ndarray,
        rng: np.random.Generator,
    ) -> None:
        """Overwrite the chosen rows of one step's weather columns with observations."""
        chosen = np.flatnonzero(eligible & (rng.random(sensors.size) < self._share))
        for sensor in chosen.tolist():
            try:
                observed = self.observe(sensors.latitude[sensor], sensors.longitude[sensor])
            except Fallback as fallback:
                self.stats[f"fallback_{fallback.reason}"] += 1
                continue
            self.stats["used"] += 1
            columns["temperature_c"][sensor] = round(observed.temperature_c, 1)
            columns["humidity_pct"][sensor] = round(observed.humidity_pct)
            columns["pressure_hpa"][sensor] = round(observed.pressure_hpa, 1)
            columns["wind_speed_ms"][sensor] = round(observed.wind_speed_ms, 1)
            rain = observed.rain_mm_h * self._interval_s / 3600
            columns["precipitation_mm"][sensor] = round(rain, 2)
            columns["source"][sensor] = OPENWEATHER

    def observe(self, latitude: float, longitude: float) -> Observation:
        """The current weather at a place: cached, rate limited, or `Fallback` with a reason."""
        place = (round(float(latitude), 2), round(float(longitude), 2))
        now = self._clock()
        cached = self._cache.get(place)
        if cached is not None and now - cached.fetched_at < self._cache_ttl_s:
            self.stats["cache_hits"] += 1
            return cached
        if now - self._last_call < self._min_interval_s:
            raise Fallback("rate_limited")
        self._last_call = now
        self.stats["requests"] += 1
        try:
            answer = self._get(place)
        except httpx.TimeoutException:
            raise Fallback("timeout") from None
        except httpx.HTTPStatusError as error:
            raise Fallback(f"http_{error.response.status_code}") from None
        except (httpx.HTTPError, ValueError):
            raise Fallback("unreachable_or_malformed") from None
        observation = self._parse(answer, now)
        self._cache[place] = observation
        return observation

    @retry(
        retry=retry_if_exception(_server_error),
        stop=stop_after_attempt(2),
        wait=wait_fixed(0.2),
        reraise=True,
    )
    def _get(self, place: tuple[float, float]) -> Any:
        response = self._client.get(
            self._url,
            params={"lat": place[0], "lon": place[1], "appid": self._api_key, "units": "metric"},
        )
        response.raise_for_status()
        return response.json()

    def _parse(self, answer: Any, now: float) -> Observation:
        """Map the API's fields; an answer that breaks the contract is not used."""
        try:
            main, wind = answer["main"], answer["wind"]
            observation = Observation(
                temperature_c=float(main["temp"]),
                humidity_pct=float(main["humidity"]),
                pressure_hpa=float(main["pressure"]),
                wind_speed_ms=float(wind["speed"]),
                rain_mm_h=float((answer.get("rain") or {}).get("1h", 0.0)),
                fetched_at=now,
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            raise Fallback("unexpected_answer") from None
        try:
            validate_reading(
                {
                    "schema_version": 1,
                    "sensor_id": "WEATHER_0000",
                    "sensor_type": "weather",
                    "event_time": "2026-01-01T00:00:00.000Z",
                    "seq": 0,
                    "temperature_c": observation.temperature_c,
                    "humidity_pct": observation.humidity_pct,
                    "pressure_hpa": observation.pressure_hpa,
                    "wind_speed_ms": observation.wind_speed_ms,
                    "precipitation_mm": observation.rain_mm_h,
                    "source": "openweather",
                }
            )
        except ContractError:
            raise Fallback("out_of_contract") from None
        return observation

    def close(self) -> None:
        self._client.close()
