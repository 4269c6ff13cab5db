"""A lake for the API tests: landed by the real stream worker, built by the real assets.

`api_lake` produces the day's first hour of the default city (10 s interval, 2 % duplicates,
planted anomalies) into this run's own topics, runs the real stream worker until idle and
materializes the date with the real Dagster assets (`smartcity materialize --date`, in its
own process, as an operator would). Then it produces and lands another half hour: the
shape of a date built while it is still going on (hour 00 in the clean tables, half of hour
01 only in the landing), which the reading-history tests rely on. Built once per session.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.dataset as ds
import pytest
from fastapi.testclient import TestClient
from starlette.types import ASGIApp, Message

from smartcity.lake import Lake
from smartcity.layout import LANDING
from smartcity.services.processes import free_port
from smartcity.settings import Settings
from smartcity_api.app import create_app
from smartcity_api.metrics import route_template
from smartcity_stream.landing import landing_schema
from tests.stream_support import (
    SMARTCITY,
    Produced,
    isolated,
    produce_simulation,
    start_worker,
    worker_env,
)

DAY = date(2026, 11, 27)
START = datetime(2026, 11, 27, tzinfo=UTC)
INTERVAL_MS = 10_000
BUILT_STEPS = 360  # the first hour is landed when the date is materialized
LATER_STEPS = 180  # then another half hour lands, after the build
SENSOR = "TRAFFIC_0001"
MATERIALIZE_TIMEOUT_S = 900
CLOSED_PORT = "http://127.0.0.1:9"
"""An S3 endpoint nothing answers on (the discard port, closed here)."""


@dataclass(frozen=True)
class ApiLake:
    settings: Settings
    produced: Produced

    @property
    def lake(self) -> Lake:
        return Lake.from_settings(self.settings)


def _landing(lake: Lake, sensor_type: str) -> pa.Table:
    prefix = f"{LANDING}/{sensor_type}/date={DAY}"
    paths = [i.path for i in lake.list_files(prefix) if i.path.endswith(".parquet")]
    dataset = ds.dataset(paths, schema=landing_schema(sensor_type), filesystem=lake.filesystem)
    return dataset.to_table()


def _run_worker_to_idle(settings: Settings, attempts: int = 2) -> None:
    """The real worker until idle; a run that fails (e.g. a broker still warming up its
    coordinator) is simply started again: it resumes from its committed offsets."""
    for attempt in range(attempts):
        worker = start_worker(settings, "--until-idle", "4")
        _, stderr = worker.communicate(timeout=300)
        if worker.returncode == 0:
            return
        assert attempt + 1 < attempts, stderr.decode()[-2000:]


def materialize(settings: Settings, day: date, dagster_home: Path) -> None:
    """`smartcity materialize --date` on `settings`' lake, in a process of its own (its
    Spark session, with the S3 connector, is not this test process's)."""
    dagster_home.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [SMARTCITY, "materialize", "--date", day.isoformat()],
        env=worker_env(settings) | {"DAGSTER_HOME": str(dagster_home)},
        capture_output=True,
        text=True,
        timeout=MATERIALIZE_TIMEOUT_S,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]


def _produce(settings: Settings, steps: int, start_ms: int) -> Produced:
    return produce_simulation(
        settings,
        steps=steps,
        interval_ms=INTERVAL_MS,
        faults="duplicate=0.02",
        start_ms=start_ms,
        anomaly_rate_per_hour=1.0,
    )


def build_api_lake(settings: Settings, dagster_home: Path) -> ApiLake:
    """Land an hour, build the date, land half an hour more (see the module's docstring).
    A later simulation run continues each sensor's `seq` where the first one stopped."""
    start_ms = int(START.timestamp() * 1000)
    built = _produce(settings, BUILT_STEPS, start_ms)
    _run_worker_to_idle(settings)
    materialize(settings, DAY, dagster_home)
    later = _produce(settings, LATER_STEPS, start_ms + BUILT_STEPS * INTERVAL_MS)
    _run_worker_to_idle(settings)
    produced = Produced(
        readings=built.readings | later.readings,
        invalid=built.invalid + later.invalid,
        faults=built.faults + later.faults,
        planted=built.planted + later.planted,
    )
    return ApiLake(settings, produced)


@pytest.fixture(scope="session")
def api_lake(live_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> ApiLake:
    settings = isolated(live_settings, "api")
    return build_api_lake(settings, tmp_path_factory.mktemp("api-dagster"))


@pytest.fixture(scope="session")
def api_client(api_lake: ApiLake) -> Iterator[TestClient]:
    """The app in-process (fast); `test_api_http` covers the real socket."""
    with TestClient(create_app(api_lake.settings)) as client:
        yield client


def unreadable(tmp_path: Path) -> Path:
    """A lake folder nothing can list or read: a symbolic link to itself, so every access
    fails (ELOOP). Permissions would not do: they do not stop root, whom tests may run as."""
    folder = tmp_path / "unreadable-lake"
    folder.symlink_to(folder)
    return folder


def expected_seqs(api_lake: ApiLake, sensor_id: str) -> set[int]:
    """What the producer had acknowledged for the sensor."""
    return {seq for sensor, seq in api_lake.produced.readings if sensor == sensor_id}


def landing_table(api_lake: ApiLake, sensor_type: str) -> pa.Table:
    return _landing(api_lake.lake, sensor_type)


def asgi_get(
    app: ASGIApp,
    path: str,
    query_string: bytes = b"",
    key: bytes | None = None,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> tuple[int, bytes, str]:
    """One GET straight through an ASGI app: status, last body, the route the metrics see."""
    scope = {"type": "http", "method": "GET", "path": path, "query_string": query_string}
    scope["headers"] = [(b"x-api-key", key)] if key is not None else []
    scope["headers"] += headers or []
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    asyncio.run(app(scope, receive, send))
    return sent[0]["status"], sent[-1]["body"], route_template(scope)


@dataclass
class ServedApi:
    """An API served for a test: its address, and what it logged once it has stopped."""

    base: str
    log: str = ""


@contextmanager
def serve_api(env: dict[str, str], stop_timeout_s: float = 30) -> Iterator[ServedApi]:
    """`smartcity api` on a free port, over a real socket, until the block ends."""
    port = free_port()
    process = subprocess.Popen(
        [SMARTCITY, "api", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    served = ServedApi(f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{served.base}/", timeout=1)
                break
            except httpx.TransportError:
                assert process.poll() is None, process.stderr.read().decode()[-2000:]
                assert time.monotonic() < deadline, "the API did not start in 30 s"
                time.sleep(0.2)
        yield served
    finally:
        process.terminate()
        process.wait(timeout=stop_timeout_s)
        served.log = process.stderr.read().decode()
