"""The live city map (`/map`) in a real browser: Debian's Chromium driven by Playwright, against
the API served by uvicorn over a socket, on the real Kafka broker and S3 lake.

Readings and anomalies are produced straight to Kafka, as sensors and the stream worker do;
the page must show each within 2 s (docs/map.md).
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from confluent_kafka import Producer
from fastapi.testclient import TestClient
from playwright.sync_api import Browser, Page, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from simulator.registry import build_registry
from smartcity.kafka import client_config
from smartcity.lake import Lake
from smartcity.registry import import_registry
from smartcity.settings import Settings
from smartcity_api.app import create_app
from smartcity_api.routers import map as city_map
from tests.api_support import serve_api
from tests.dagster_support import BROWSER_FLAGS, CHROMIUM
from tests.stream_support import isolated, start_worker, worker_env

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]
DOCS_SCREENSHOT = REPO / "docs" / "img" / "city-map.png"
"""Replaced only with `make docs-images` (SMARTCITY_REFRESH_DOCS_IMAGES=1)."""
KEY = "map-key-0123456789"
PROMISE_S = 2.0
MARKER = ".sensor-marker[data-sensor-id]"
HISTORY_MINUTES = 40
VIEWPORT = {"width": 1500, "height": 950}
PROBE = 5
"""The index, among the weather sensors, of the probe of `_following`."""


@dataclass
class City:
    """A registry in a lake of its own, and a producer of its sensors' readings."""

    settings: Settings
    sensors: list[dict[str, Any]]
    producer: Producer
    seqs: dict[str, int] = field(default_factory=dict)

    def of_type(self, sensor_type: str) -> list[dict[str, Any]]:
        return [s for s in self.sensors if s["sensor_type"] == sensor_type]

    def send(self, sensor: dict[str, Any], at: datetime | None = None, **measured: Any) -> None:
        """One reading of `sensor` (its type's usual values, `measured` over them), acknowledged."""
        sensor_id = sensor["sensor_id"]
        self.seqs[sensor_id] = self.seqs.get(sensor_id, 0) + 1
        reading = {
            "schema_version": 1,
            "sensor_id": sensor_id,
            "sensor_type": sensor["sensor_type"],
            "event_time": _rfc3339(at or datetime.now(UTC)),
            "seq": self.seqs[sensor_id],
            "interval_s": 60,
            **USUAL[sensor["sensor_type"]],
            **measured,
        }
        topic = self.settings.reading_topic(sensor["sensor_type"])
        self.producer.produce(topic, key=sensor_id.encode(), value=orjson.dumps(reading))
        self.producer.poll(0)

    def anomaly(
        self, sensor: dict[str, Any], kind: str, values: dict[str, Any], anomaly_id: str
    ) -> None:
        """An anomaly in the stream worker's format on the anomalies topic."""
        now = datetime.now(UTC)
        message = {
            "anomaly_id": anomaly_id,
            "sensor_id": sensor["sensor_id"],
            "sensor_type": sensor["sensor_type"],
            "kind": kind,
            "severity": "critical",
            "event_time": _rfc3339(now),
            "seq": self.seqs.get(sensor["sensor_id"], 0),
            "window_start": _rfc3339(now - timedelta(minutes=1)),
            "window_end": _rfc3339(now),
            "detected_at": _rfc3339(now),
            "values": values,
        }
        self.producer.produce(
            self.settings.topic("anomalies"),
            key=sensor["sensor_id"].encode(),
            value=orjson.dumps(message),
        )
        self.producer.poll(0)

    def flush(self) -> None:
        assert self.producer.flush(30) == 0


USUAL: dict[str, dict[str, Any]] = {
    "traffic": {
        "vehicle_count": 12,
        "average_speed_kmh": 42.0,
        "occupancy_pct": 18.0,
        "congestion_level": "low",
    },
    "weather": {
        "temperature_c": 14.0,
        "humidity_pct": 60.0,
        "pressure_hpa": 1012.0,
        "wind_speed_ms": 3.0,
        "precipitation_mm": 0.0,
        "source": "simulated",
    },
    "energy": {"power_kw": 10.0, "voltage_v": 229.0, "current_a": 43.7, "energy_kwh": 1000.0},
}


def _rfc3339(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _city(live_settings: Settings, name: str, counts: dict[str, int], seed: int) -> City:
    settings = isolated(live_settings, f"{name}-{uuid.uuid4().hex[:6]}")
    registry = build_registry(counts, seed=seed).table()
    import_registry(Lake.from_settings(settings), registry)
    producer = Producer(client_config(settings, **{"enable.idempotence": True, "linger.ms": 0}))
    return City(settings, registry.to_pylist(), producer)


@dataclass
class Served:
    base: str
    city: City
    history: dict[str, list[float]]
    """The charted value of each history sensor, reading by reading."""
    silent: set[str]
    """Sensors that sent nothing before the page opened: grey until a reading comes."""


@contextmanager
def _serve(settings: Settings, extra_env: dict[str, str]) -> Iterator[str]:
    with serve_api(worker_env(settings) | extra_env) as served:
        yield served.base


@pytest.fixture(scope="module")
def served(live_settings: Settings) -> Iterator[Served]:
    """A city of 74 sensors with 40 minutes of history for one sensor of each type, landed by
    the real worker (so the live state has a latest reading of all but a few sensors)."""
    city = _city(live_settings, "map", {"traffic": 38, "weather": 11, "energy": 25}, seed=20261204)
    now = datetime.now(UTC)
    history: dict[str, list[float]] = {}
    for sensor_type, field_name, values in (
        ("traffic", "average_speed_kmh", [30.0 + i % 7 for i in range(HISTORY_MINUTES)]),
        ("weather", "temperature_c", [8.0 + i / 10 for i in range(HISTORY_MINUTES)]),
        ("energy", "power_kw", [50.0 + i for i in range(HISTORY_MINUTES)]),
    ):
        sensor = city.of_type(sensor_type)[0]
        history[sensor["sensor_id"]] = values
        for minute, value in enumerate(values):
            at = now - timedelta(minutes=HISTORY_MINUTES + 2 - minute)
            city.send(sensor, at, **{field_name: value})
    silent = {
        s["sensor_id"] for t in ("traffic", "weather", "energy") for s in city.of_type(t)[-2:]
    }
    for sensor in city.sensors:
        if sensor["sensor_id"] not in history and sensor["sensor_id"] not in silent:
            city.send(sensor, now - timedelta(minutes=1), **_calm(sensor))
    city.flush()
    worker = start_worker(city.settings, "--until-idle", "4")
    _, stderr = worker.communicate(timeout=300)
    assert worker.returncode == 0, stderr.decode()[-2000:]
    with _serve(city.settings, {}) as base:
        yield Served(base, city, history, silent)


def _calm(sensor: dict[str, Any]) -> dict[str, Any]:
    """Values that put the sensor in its lowest state."""
    if sensor["sensor_type"] == "energy":
        return {"power_kw": round(0.2 * sensor["feeder_capacity_kw"], 3)}
    return {}


@pytest.fixture(scope="module")
def keyed(live_settings: Settings) -> Iterator[Served]:
    """A smaller city behind `SMARTCITY_API_KEY`, with no reading before the page opens."""
    city = _city(live_settings, "map-key", {"traffic": 5, "weather": 6, "energy": 4}, seed=7)
    with _serve(city.settings, {"SMARTCITY_API_KEY": KEY}) as base:
        yield Served(base, city, {}, {s["sensor_id"] for s in city.sensors})


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=BROWSER_FLAGS)
        yield browser
        browser.close()


@dataclass
class Opened:
    page: Page
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)


@pytest.fixture
def open_map(browser: Browser) -> Iterator[Callable[[str], Opened]]:
    """Opens a URL in a fresh browser context, collecting console errors and page errors."""
    contexts = []

    def open_url(url: str) -> Opened:
        context = browser.new_context(viewport=VIEWPORT)
        contexts.append(context)
        page = context.new_page()
        opened = Opened(page)
        page.on("request", lambda request: opened.requests.append(request.url))
        page.on(
            "console",
            lambda message: (
                opened.console_errors.append(message.text) if message.type == "error" else None
            ),
        )
        page.on("pageerror", lambda error: opened.page_errors.append(str(error)))
        page.goto(url)
        return opened

    yield open_url
    for context in contexts:
        context.close()


def _wait_live(page: Page) -> None:
    """Until the stream is open and its first clock event came."""
    page.wait_for_selector("#live-status[data-live='open']", timeout=15_000)
    page.wait_for_selector("#clock[data-now]", timeout=15_000)


def _following(page: Page, city: City) -> None:
    """Until a reading of a probe sensor reaches the page: the API's consumer, made by the
    first client of the process, starts at the topics' ends once it has found them, and a
    reading produced before that would never come. The probe is a weather sensor no other
    check looks at, sent alternately freezing and hot."""
    _wait_live(page)
    probe = city.of_type("weather")[PROBE]
    for attempt in range(20):
        state, temperature = ("freezing", -5.0) if attempt % 2 else ("hot", 35.0)
        city.send(probe, temperature_c=temperature)
        city.flush()
        with contextlib.suppress(PlaywrightTimeout):
            page.wait_for_selector(
                f"{_marker(probe['sensor_id'])}[data-state='{state}']", timeout=1500
            )
            return
    raise AssertionError(f"no reading of {probe['sensor_id']} reached the page")


def _timed(page: Page, produce: Callable[[], None], selector: str) -> float:
    """Seconds from producing to `selector` matching in the page."""
    started = time.monotonic()
    produce()
    page.wait_for_selector(selector, state="attached", timeout=15_000)
    return time.monotonic() - started


def _marker(sensor_id: str) -> str:
    return f".sensor-marker[data-sensor-id='{sensor_id}']"


def test_a_browser_lands_on_a_marker_per_sensor_without_console_errors(
    served: Served, open_map: Callable[[str], Opened]
) -> None:
    opened = open_map(f"{served.base}/")  # a browser's `/` is the map
    page = opened.page
    assert page.url == f"{served.base}/map"
    page.wait_for_selector("body[data-ready='true']", timeout=15_000)
    _wait_live(page)
    markers = page.locator(MARKER)
    shown = {markers.nth(i).get_attribute("data-sensor-id") for i in range(markers.count())}
    assert shown == {s["sensor_id"] for s in served.city.sensors}
    assert page.locator("path.district").count() >= 2
    states = {
        markers.nth(i).get_attribute("data-sensor-id"): markers.nth(i).get_attribute("data-state")
        for i in range(markers.count())
    }
    # the initial state comes from the live state the worker left (`sensors/latest`)
    assert {states[sensor_id] for sensor_id in served.silent} == {"unknown"}
    calm = [
        s for s in served.city.sensors if s["sensor_id"] not in served.silent | set(served.history)
    ]
    assert {states[s["sensor_id"]] for s in calm if s["sensor_type"] != "weather"} == {"low"}
    assert {states[s["sensor_id"]] for s in calm if s["sensor_type"] == "weather"} == {"mild"}
    assert (
        page.locator("#shown-count").inner_text() == f"{len(shown)} of {len(shown)} sensors shown"
    )
    assert opened.console_errors == [] and opened.page_errors == []
    assert [url for url in opened.requests if not url.startswith(f"{served.base}/")] == []


def test_a_reading_changes_its_marker_within_2_s(
    served: Served, open_map: Callable[[str], Opened]
) -> None:
    page = open_map(f"{served.base}/map").page
    page.wait_for_selector("body[data-ready='true']", timeout=15_000)
    city = served.city
    _following(page, city)
    traffic, weather, energy = (city.of_type(t)[1] for t in ("traffic", "weather", "energy"))
    changes = [
        (traffic, {"congestion_level": "severe", "average_speed_kmh": 4.0}, "severe"),
        (weather, {"temperature_c": 34.5}, "hot"),
        (energy, {"power_kw": round(1.2 * energy["feeder_capacity_kw"], 3)}, "severe"),
        (traffic, {"congestion_level": "medium"}, "medium"),
    ]
    delays = []
    for sensor, measured, state in changes:

        def produce(sensor: dict[str, Any] = sensor, measured: dict[str, Any] = measured) -> None:
            city.send(sensor, **measured)
            city.flush()

        selector = f"{_marker(sensor['sensor_id'])}[data-state='{state}']"
        delays.append(_timed(page, produce, selector))
    print(f"reading to marker: {', '.join(f'{d:.3f}' for d in delays)} s")
    assert max(delays) < PROMISE_S, delays


def test_an_anomaly_is_listed_within_2_s_and_its_marker_pulses(
    served: Served, open_map: Callable[[str], Opened]
) -> None:
    page = open_map(f"{served.base}/map").page
    page.wait_for_selector("body[data-ready='true']", timeout=15_000)
    city = served.city
    _following(page, city)
    sensor = city.of_type("energy")[2]
    values = {"power_kw": 412.5, "baseline_kw": 120.25}
    anomaly_id = uuid.uuid4().hex

    def produce() -> None:
        city.anomaly(sensor, "energy_spike", values, anomaly_id)
        city.flush()

    delay = _timed(page, produce, f"#anomaly-list li[data-anomaly-id='{anomaly_id}']")
    print(f"anomaly to list: {delay:.3f} s")
    assert delay < PROMISE_S
    item = page.locator(f"#anomaly-list li[data-anomaly-id='{anomaly_id}']")
    assert item.locator(".sensor").inner_text() == sensor["sensor_id"]
    assert item.locator(".kind").inner_text() == "energy_spike"
    assert item.locator(".value").inner_text() == "power_kw 412.5, baseline_kw 120.25"
    marker = page.locator(_marker(sensor["sensor_id"]))
    assert marker.get_attribute("data-pulse") == "energy_spike"
    animation = marker.locator(".shape").evaluate("shape => getComputedStyle(shape).animationName")
    assert animation == "pulse"
    pulsing = page.locator(f"{MARKER}[data-pulse]")
    listed = page.locator("#anomaly-list li")
    assert {pulsing.nth(i).get_attribute("data-sensor-id") for i in range(pulsing.count())} == {
        listed.nth(i).get_attribute("data-sensor-id") for i in range(listed.count())
    }


def test_filters_hide_and_show_markers(served: Served, open_map: Callable[[str], Opened]) -> None:
    page = open_map(f"{served.base}/map").page
    page.wait_for_selector("body[data-ready='true']", timeout=15_000)
    sensors = served.city.sensors
    page.locator("input[name='sensor-type'][value='weather']").uncheck()
    not_weather = [s for s in sensors if s["sensor_type"] != "weather"]
    assert page.locator(MARKER).count() == len(not_weather)
    assert page.locator(f"{MARKER}[data-sensor-type='weather']").count() == 0
    district = sorted({s["district"] for s in sensors})[0]
    page.locator("#district-filter").select_option(district)
    expected = {s["sensor_id"] for s in not_weather if s["district"] == district}
    markers = page.locator(MARKER)
    assert {markers.nth(i).get_attribute("data-sensor-id") for i in range(markers.count())} == (
        expected
    )
    page.locator("#district-filter").select_option("")
    page.locator("input[name='sensor-type'][value='weather']").check()
    assert page.locator(MARKER).count() == len(sensors)
    assert page.locator("#shown-count").inner_text().startswith(f"{len(sensors)} of ")


def test_a_click_opens_the_sensors_last_hour(
    served: Served, open_map: Callable[[str], Opened]
) -> None:
    page = open_map(f"{served.base}/map").page
    page.wait_for_selector("body[data-ready='true']", timeout=15_000)
    for sensor_id, values in served.history.items():
        with page.expect_request(lambda r, s=sensor_id: f"/sensors/{s}/readings?" in r.url) as sent:
            # dispatched to the element itself: a neighbour's marker may overlap it on screen
            page.locator(_marker(sensor_id)).dispatch_event("click")
        params = httpx.URL(sent.value.url).params
        start, end = (datetime.fromisoformat(params[name]) for name in ("start", "end"))
        assert end - start == timedelta(hours=1, milliseconds=1)
        panel = page.locator(f"#chart-panel[data-sensor-id='{sensor_id}'][data-readings]")
        panel.wait_for(timeout=10_000)
        assert panel.get_attribute("data-readings") == str(len(values))
        assert page.locator("#chart .uplot canvas").count() == 1
    page.locator("#chart-close").click()
    assert page.locator("#chart-panel").is_hidden()


def test_with_an_api_key_the_page_asks_for_it_once(
    keyed: Served, open_map: Callable[[str], Opened]
) -> None:
    assert httpx.get(f"{keyed.base}/map").status_code == 200  # the page is open, its data not
    assert httpx.get(f"{keyed.base}/api/v1/sensors").status_code == 401
    opened = open_map(f"{keyed.base}/map")
    page = opened.page
    stream_keys: list[str | None] = []
    page.on(
        "request",
        lambda r: (
            stream_keys.append(r.headers.get("x-api-key")) if "live/stream" in r.url else None
        ),
    )
    page.locator("#key-input").fill("not-the-key")
    page.locator("#key-form button").click()
    page.wait_for_selector("#key-message:text('refused')", timeout=10_000)
    page.locator("#key-input").fill(KEY)
    page.locator("#key-form button").click()
    page.wait_for_selector("body[data-ready='true']", timeout=15_000)
    _following(page, keyed.city)
    assert page.locator(MARKER).count() == len(keyed.city.sensors)
    assert stream_keys and set(stream_keys) == {KEY}
    sensor = keyed.city.of_type("traffic")[0]

    def produce() -> None:
        keyed.city.send(sensor, congestion_level="high")
        keyed.city.flush()

    delay = _timed(page, produce, f"{_marker(sensor['sensor_id'])}[data-state='high']")
    print(f"reading to marker with a key: {delay:.3f} s")
    assert delay < PROMISE_S
    page.reload()  # the key is kept for the browser session
    page.wait_for_selector("body[data-ready='true']", timeout=15_000)
    assert page.locator("#key-dialog").is_hidden()
    assert opened.page_errors == []


def test_a_picture_of_the_live_city(
    served: Served, open_map: Callable[[str], Opened], tmp_path: Path
) -> None:
    page = open_map(f"{served.base}/map").page
    page.wait_for_selector("body[data-ready='true']", timeout=15_000)
    city = served.city
    _following(page, city)
    for index, sensor in enumerate(city.sensors):
        city.send(sensor, **_varied(sensor, index))
    for sensor, kind, values in (
        (city.of_type("traffic")[3], "severe_congestion", {"congestion_level": "severe"}),
        (city.of_type("energy")[4], "energy_spike", {"power_kw": 388.2, "baseline_kw": 121.0}),
        (city.of_type("weather")[2], "temperature_out_of_range", {"temperature_c": 41.3}),
    ):
        city.anomaly(sensor, kind, values, uuid.uuid4().hex)
    city.flush()
    page.wait_for_function(
        f"document.querySelectorAll('{MARKER}[data-state=\"unknown\"]').length === 0",
        timeout=10_000,
    )
    page.locator("#anomaly-list li").nth(2).wait_for(timeout=10_000)
    energy = next(iter(h for h in served.history if h.startswith("ENERGY")))
    page.locator(_marker(energy)).dispatch_event("click")
    page.locator("#chart-panel[data-readings]").wait_for(timeout=10_000)
    page.locator(_marker(energy)).dispatch_event("mouseout")  # the click opened its tooltip
    refresh = os.environ.get("SMARTCITY_REFRESH_DOCS_IMAGES")
    screenshot = DOCS_SCREENSHOT if refresh else tmp_path / "city-map.png"
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(screenshot))
    assert screenshot.stat().st_size > 50_000


def _varied(sensor: dict[str, Any], index: int) -> dict[str, Any]:
    """Readings across each type's states, for a picture that shows them all."""
    if sensor["sensor_type"] == "traffic":
        return {"congestion_level": ("low", "low", "medium", "high", "severe")[index % 5]}
    if sensor["sensor_type"] == "weather":
        return {"temperature_c": (-3.0, 6.0, 14.0, 24.0, 31.0)[index % 5]}
    share = (0.2, 0.35, 0.6, 0.9, 1.1)[index % 5]
    return {"power_kw": round(share * sensor["feeder_capacity_kw"], 3)}


def test_without_its_bundle_the_map_says_how_to_build_it(
    live_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(city_map, "BUNDLE", tmp_path / "map")
    client = TestClient(create_app(live_settings))
    for path in ("/map", "/map/assets/index.js"):
        answer = client.get(path)
        assert answer.status_code == 503
        assert answer.json() == {"detail": "map: the page is not built; `make web` builds it"}
    assert client.get("/").json()["name"] == "smartcity API"  # API clients keep their answer
    assert client.get("/", headers={"Accept": "text/html"}, follow_redirects=False).status_code == (
        307
    )
