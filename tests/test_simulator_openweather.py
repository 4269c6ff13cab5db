"""Live weather against a local server that plays the OpenWeather API, errors and slowness too."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest

from simulator.openweather import OPENWEATHER, Fallback, OpenWeatherSource
from simulator.registry import build_registry

ANSWER = {"main": {"temp": 3.46, "humidity": 87, "pressure": 1009}, "wind": {"speed": 4.12}}


class FakeApi(BaseHTTPRequestHandler):
    """`mode` picks the behaviour: ok, rain, 500-then-ok, 401, slow, garbage, hot."""

    mode = "ok"
    calls: list[dict[str, list[str]]] = []  # noqa: RUF012 - shared with the test on purpose

    def do_GET(self) -> None:
        params = parse_qs(urlsplit(self.path).query)
        FakeApi.calls.append(params)
        mode = FakeApi.mode
        if mode == "500-then-ok" and len(FakeApi.calls) == 1:
            return self._send(500, b"{}")
        if mode == "401":
            return self._send(401, b'{"cod": 401, "message": "Invalid API key"}')
        if mode == "slow":
            time.sleep(1.0)
        if mode == "garbage":
            return self._send(200, b"<html>")
        body = dict(ANSWER)
        if mode == "rain":
            body["rain"] = {"1h": 3.6}
        if mode == "hot":
            body = {**ANSWER, "main": {**ANSWER["main"], "temp": 71.0}}
        return self._send(200, json.dumps(body).encode())

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture(scope="module")
def api_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/data/2.5/weather"
    server.shutdown()


@pytest.fixture
def api(api_url: str) -> Iterator[type[FakeApi]]:
    FakeApi.mode, FakeApi.calls = "ok", []
    yield FakeApi


def _source(url: str, **options: object) -> OpenWeatherSource:
    defaults = {"min_interval_s": 0.0, "timeout_s": 0.3, "interval_s": 3600.0}
    return OpenWeatherSource("test-key", url=url, **{**defaults, **options})  # type: ignore[arg-type]


def test_observations_replace_a_share_of_readings(api: type[FakeApi], api_url: str) -> None:
    api.mode = "rain"
    sensors = build_registry().weather
    columns = {
        name: np.zeros(sensors.size, dtype=np.int64 if name == "source" else float)
        for name in (
            "temperature_c",
            "humidity_pct",
            "pressure_hpa",
            "wind_speed_ms",
            "precipitation_mm",
            "source",
        )
    }
    source = _source(api_url, share=1.0)
    source.override(sensors, columns, np.ones(sensors.size, bool), np.random.default_rng(0))
    assert (columns["source"] == OPENWEATHER).all()
    assert columns["temperature_c"][0] == 3.5 and columns["humidity_pct"][0] == 87
    assert columns["precipitation_mm"][0] == pytest.approx(3.6)  # 3.6 mm/h over one hour
    assert api.calls[0]["appid"] == ["test-key"] and api.calls[0]["units"] == ["metric"]
    assert source.counts()["used"] == sensors.size


def test_answers_are_cached_per_place(api: type[FakeApi], api_url: str) -> None:
    source = _source(api_url)
    first = source.observe(52.52, 13.40)
    assert source.observe(52.5201, 13.4001) == first
    assert len(api.calls) == 1 and source.counts()["cache_hits"] == 1


def test_calls_are_rate_limited(api: type[FakeApi], api_url: str) -> None:
    source = _source(api_url, min_interval_s=60.0)
    source.observe(52.52, 13.40)
    with pytest.raises(Fallback, match="rate_limited"):
        source.observe(52.45, 13.30)
    assert len(api.calls) == 1


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("401", "http_401"),
        ("slow", "timeout"),
        ("garbage", "unreachable_or_malformed"),
        ("hot", "out_of_contract"),
    ],
)
def test_failures_fall_back_and_are_counted(
    api: type[FakeApi], api_url: str, mode: str, reason: str
) -> None:
    api.mode = mode
    sensors = build_registry().weather
    temperature = np.full(sensors.size, 4.2)
    columns = {"temperature_c": temperature, "source": np.zeros(sensors.size, np.int64)}
    source = _source(api_url, share=1.0, min_interval_s=0.0)
    started = time.monotonic()
    source.override(sensors, columns, np.arange(sensors.size) < 2, np.random.default_rng(0))
    assert (columns["source"] == 0).all() and (temperature == 4.2).all()
    assert source.counts()[f"fallback_{reason}"] == 2
    assert time.monotonic() - started < 3.0


def test_a_server_error_is_retried_once(api: type[FakeApi], api_url: str) -> None:
    api.mode = "500-then-ok"
    source = _source(api_url)
    assert source.observe(52.52, 13.40).temperature_c == pytest.approx(3.46)
    assert len(api.calls) == 2


def test_unreachable_api_falls_back(api: type[FakeApi]) -> None:
    source = _source("http://127.0.0.1:9/nothing-listens-here")
    with pytest.raises(Fallback, match="unreachable_or_malformed"):
        source.observe(52.52, 13.40)
