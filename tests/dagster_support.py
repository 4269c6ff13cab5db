"""Running the Dagster definitions in-process against a test's settings."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import pytest

from smartcity.settings import Settings
from tests.stream_support import worker_env

REPO = Path(__file__).resolve().parents[1]
BIN = REPO / ".venv" / "bin"
MATERIALIZE = [
    str(BIN / "dagster"),
    *("asset", "materialize", "-m", "smartcity_dagster.definitions"),
]
"""Dagster's own command to materialize assets of the project's definitions."""
LOCATION = "smartcity"
"""The code location's name, as the code server reports it and the deployment's workspace
(`docker/dagster/workspace.yaml`) names it."""


@contextmanager
def smartcity_env(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> Iterator[None]:
    """`SMARTCITY_*` of `settings` in this process (the resources read them at run time)."""
    for name in [n for n in os.environ if n.startswith("SMARTCITY_")]:
        monkeypatch.delenv(name)
    for name, value in worker_env(settings).items():
        if name.startswith("SMARTCITY_"):
            monkeypatch.setenv(name, value)
    yield


def dagster_home(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    with resources.as_file(resources.files("smartcity_dagster").joinpath("dagster.yaml")) as f:
        shutil.copyfile(f, path / "dagster.yaml")
    return path


def materialize_day(day: str, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    from smartcity_dagster.runs import materialize_daily

    return materialize_daily(instance, day, raise_on_error=False)


BROWSER_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
CHROMIUM = "/usr/bin/chromium"


def screenshot_asset_graph(base_url: str, target: Path) -> None:
    """The global asset lineage with every group expanded (the UI's own shortcut, Alt+E)
    and zoomed out one step so that the whole graph fits, in Debian's headless Chromium."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=BROWSER_FLAGS)
        page = browser.new_page(viewport={"width": 1800, "height": 1250})
        page.goto(f"{base_url}/asset-groups", wait_until="networkidle")
        with contextlib.suppress(PlaywrightTimeout):  # a greeting dialog for new visitors
            page.get_by_role("button", name="Skip").click(timeout=5000)
        groups = page.locator("svg foreignObject.group")
        groups.first.wait_for()
        page.keyboard.press("Alt+KeyE")
        page.wait_for_function(
            "() => [...document.querySelectorAll('svg foreignObject.group')]"
            ".every(g => parseFloat(g.getAttribute('height')) > 120)"
        )
        page.mouse.move(600, 650)  # empty canvas left of the graph: no hover, no tooltip
        page.keyboard.down("Control")
        page.mouse.wheel(0, 70)
        page.keyboard.up("Control")
        page.wait_for_timeout(2500)
        target.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(target))
        browser.close()


def spark_session() -> Any:
    """The process's Spark session with the batch layer's own configuration (the assets'
    `LazyPySparkResource` gets the same session later in this process)."""
    from pyspark.sql import SparkSession

    from smartcity.settings import Settings
    from smartcity_dagster.spark import spark_config

    builder = SparkSession.builder
    for key, value in spark_config(Settings(_env_file=None)).items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


def answers(url: str) -> bool:
    """Whether `url` answers 200 now."""
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def graphql(url: str, query: str, variables: dict | None = None) -> dict:
    """The data of a GraphQL query to the webserver, which must carry no errors."""
    response = httpx.post(url, json={"query": query, "variables": variables or {}}, timeout=60)
    assert response.status_code == 200, f"{response.status_code}: {response.text[:2000]}"
    body = response.json()
    assert "errors" not in body, body["errors"]
    return body["data"]


def wait_for(ready, timeout_s: float, what: str) -> None:  # type: ignore[no-untyped-def]
    """Poll `ready` every 2 s (a webserver or daemon on a loaded machine is slow)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(2)
    raise AssertionError(f"{what} not ready within {timeout_s:g} s")


def start_dagster(
    command: list[str], env: dict[str, str], log: Path | None = None
) -> subprocess.Popen[bytes]:
    """A Dagster process (webserver, daemon, code server) run from the repo's root as a user
    runs it, with exactly `env`, in a session of its own, so that `stop_sessions` also stops
    the code servers and runs it starts; its output goes to `log` when given."""
    with open(log or os.devnull, "ab") as out:
        return subprocess.Popen(
            command,
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def webserver_graphql(port: int) -> str:
    """The GraphQL address of the webserver on `port`, once it answers."""
    wait_for(lambda: answers(f"http://127.0.0.1:{port}/server_info"), 180, "webserver")
    return f"http://127.0.0.1:{port}/graphql"


def code_server_command(port: int) -> list[str]:
    """The code location as a gRPC server on loopback, as compose's `dagster-code` runs it."""
    return [
        str(BIN / "dagster"),
        *("code-server", "start", "-m", "smartcity_dagster.definitions"),
        *("-h", "127.0.0.1", "-p", str(port), "--location-name", LOCATION),
    ]


def code_server_answers(port: int) -> bool:
    """Whether the gRPC server on `port` passes Dagster's own health check now."""
    check = [str(BIN / "dagster"), "api", "grpc-health-check", "-h", "127.0.0.1", "-p", str(port)]
    return subprocess.run(check, capture_output=True, timeout=60).returncode == 0
