"""A real Prometheus (Debian's server) scraping a real stream worker and the API: the
targets come up, the alert rules load, every dashboard query runs, and every metric a
dashboard or rule names is one the running code exports."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest
import yaml

from smartcity.settings import Settings
from tests.deploy_support import (
    PROMETHEUS,
    THIRD_PARTY_METRICS,
    alert_exprs,
    dashboard_exprs,
    exported_names,
    referenced_metrics,
)
from tests.stream_support import SMARTCITY, produce_simulation, worker_env

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait(url: str, deadline_s: float, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{process.args[0]} exited: {process.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    pytest.fail(f"{url} did not answer within {deadline_s} s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Stack:
    def __init__(self, worker: str, api: str, prometheus: str) -> None:
        self.worker, self.api, self.prometheus = worker, api, prometheus

    def query(self, expr: str) -> list[dict]:
        answer = httpx.get(f"{self.prometheus}/api/v1/query", params={"query": expr}, timeout=10)
        body = answer.json()
        assert body["status"] == "success", f"{expr}: {body}"
        return body["data"]["result"]


@pytest.fixture(scope="module")
def stack(live_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    prometheus_bin = shutil.which("prometheus")
    if prometheus_bin is None:
        pytest.fail("prometheus not found: run `make prometheus` (Debian's prometheus package)")
    # Readings of every type, with contract faults so dead letters flow too.
    produce_simulation(live_settings, steps=20, interval_ms=5_000, faults="malformed=0.01")
    tmp = tmp_path_factory.mktemp("prometheus")
    worker_port, api_port, prom_port = _free_port(), _free_port(), _free_port()
    env = worker_env(live_settings)
    processes = []
    try:
        processes.append(
            subprocess.Popen(
                [SMARTCITY, "stream", "--metrics-port", str(worker_port)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
        )
        processes.append(
            subprocess.Popen(
                [SMARTCITY, "api", "--port", str(api_port)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
        )
        # The stack's own rules, with a config that points the two jobs at this machine.
        shutil.copy(PROMETHEUS / "alerts.yml", tmp / "alerts.yml")
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": ["alerts.yml"],
            "scrape_configs": [
                {
                    "job_name": "stream-worker",
                    "static_configs": [{"targets": [f"127.0.0.1:{worker_port}"]}],
                },
                {"job_name": "api", "static_configs": [{"targets": [f"127.0.0.1:{api_port}"]}]},
            ],
        }
        (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
        processes.append(
            subprocess.Popen(
                [
                    prometheus_bin,
                    f"--config.file={tmp / 'prometheus.yml'}",
                    f"--storage.tsdb.path={tmp / 'data'}",
                    f"--web.listen-address=127.0.0.1:{prom_port}",
                    "--web.console.templates=/nonexistent",
                    "--web.console.libraries=/nonexistent",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
        )
        stack = Stack(
            f"http://127.0.0.1:{worker_port}",
            f"http://127.0.0.1:{api_port}",
            f"http://127.0.0.1:{prom_port}",
        )
        _wait(f"{stack.worker}/metrics", 30, processes[0])
        _wait(f"{stack.api}/health", 30, processes[1])
        _wait(f"{stack.prometheus}/-/ready", 30, processes[2])
        yield stack
    finally:
        for process in reversed(processes):
            _stop(process)


def _assert_series(stack: Stack, expr: str) -> None:
    assert stack.query(expr), f"no series for {expr}"


def _eventually(check, deadline_s: float = 30) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            check()
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_targets_come_up_and_rules_load(stack: Stack) -> None:
    def targets_up() -> None:
        active = httpx.get(f"{stack.prometheus}/api/v1/targets").json()["data"]["activeTargets"]
        assert {t["labels"]["job"]: t["health"] for t in active} == {
            "stream-worker": "up",
            "api": "up",
        }

    _eventually(targets_up)
    groups = httpx.get(f"{stack.prometheus}/api/v1/rules").json()["data"]["groups"]
    loaded = {rule["name"]: rule["health"] for group in groups for rule in group["rules"]}
    assert set(loaded) == set(alert_exprs())
    assert set(loaded.values()) <= {"ok", "unknown"}, loaded


def test_the_dashboards_metrics_arrive(stack: Stack) -> None:
    def landed() -> None:
        rows = stack.query("smartcity_stream_rows_landed_total")
        types = {r["metric"]["sensor_type"] for r in rows}
        assert types == {"traffic", "weather", "energy"}

    _eventually(landed, 45)
    for expr in (
        "smartcity_stream_messages_consumed_total",
        "smartcity_stream_consumer_lag",
        "smartcity_stream_dead_letters_total",
        "smartcity_stream_batch_seconds_bucket",
        "smartcity_stream_watermark_seconds",
    ):
        _eventually(lambda expr=expr: _assert_series(stack, expr), 15)
    places = stack.query("smartcity_stream_sensor_congestion_level")
    assert places
    for place in places:
        assert place["metric"]["sensor_id"].startswith("TRAFFIC_")
        assert -90 <= float(place["metric"]["latitude"]) <= 90
    httpx.get(f"{stack.api}/health", timeout=10)

    def api_seen() -> None:
        assert stack.query('smartcity_api_requests_total{route="/health"}')

    _eventually(api_seen)


def test_every_dashboard_query_runs(stack: Stack) -> None:
    for name, exprs in dashboard_exprs().items():
        for expr in exprs:
            stack.query(expr)  # asserts the server accepted it
        assert exprs, name


def test_every_referenced_metric_is_exported(stack: Stack) -> None:
    exported = exported_names(httpx.get(f"{stack.worker}/metrics").text)
    exported |= exported_names(httpx.get(f"{stack.api}/metrics").text)
    for name in sorted(referenced_metrics()):
        if name in THIRD_PARTY_METRICS:
            continue
        assert name in exported, f"{name} is named by a dashboard or rule but nobody exports it"
