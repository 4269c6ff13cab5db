"""`smartcity demo --no-serve --small` in a fresh folder, then the API on what it built."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import httpx
import orjson
import pytest

from smartcity.services.processes import free_port
from tests.stream_support import SMARTCITY

pytestmark = pytest.mark.integration


def test_demo_builds_a_day_the_api_serves(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMARTCITY_")}
    demo = subprocess.run(
        [SMARTCITY, "demo", "--no-serve", "--small"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    assert "asset checks passed" in demo.stdout

    runtime = tmp_path / ".runtime"
    summary = orjson.loads((runtime / "demo" / "summary.json").read_bytes())
    acknowledged = sum(t["readings_acknowledged"] for t in summary["topics"].values())
    day = summary["first_event_time"][:10]
    planted = {
        orjson.loads(line)["kind"]
        for line in (runtime / "demo" / "ground-truth.jsonl").read_bytes().splitlines()
    }

    up = subprocess.run(
        [SMARTCITY, "services", "up", "--no-s3"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert up.returncode == 0, up.stderr
    port = free_port()
    started = [
        subprocess.Popen(
            [SMARTCITY, "stream", "--worker-id", "demo-worker", "--metrics-port", "0"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ),
        subprocess.Popen(
            [SMARTCITY, "api", "--port", str(port)],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ),
    ]
    base = f"http://127.0.0.1:{port}"
    try:
        health = _wait_for_health(base)
        assert health["status"] == "ok", health

        sensors = httpx.get(f"{base}/api/v1/sensors", params={"limit": 1000}).json()
        ids = [s["sensor_id"] for s in sensors["items"]]
        assert len(ids) == 210
        readings = 0
        for sensor_id in ids:
            page = httpx.get(
                f"{base}/api/v1/sensors/{sensor_id}/readings",
                params={"start": f"{day}T00:00:00Z", "end": f"{day}T23:59:59.999Z", "limit": 10000},
            ).json()
            readings += len(page["items"])
        assert readings == acknowledged

        anomalies = httpx.get(
            f"{base}/api/v1/anomalies",
            params={
                "source": "all",
                "start": f"{day}T00:00:00Z",
                "end": f"{day}T23:59:59.999Z",
                "limit": 10000,
            },
        ).json()
        assert planted <= {a["kind"] for a in anomalies["items"]}

        quality = httpx.get(f"{base}/api/v1/quality", params={"date": day}).json()
        blocking = [c for a in quality["items"] for c in a["checks"] if c["blocking"]]
        assert blocking and all(c["passed"] for c in blocking)
    finally:
        for process in started:
            process.terminate()
        for process in started:
            process.wait(30)
        subprocess.run(
            [SMARTCITY, "services", "down"], cwd=tmp_path, env=env, check=False, capture_output=True
        )


def _wait_for_health(base: str) -> dict:
    deadline = time.monotonic() + 90
    body: dict = {}
    while time.monotonic() < deadline:
        try:
            body = httpx.get(f"{base}/health", timeout=5).json()
            if body.get("status") == "ok":
                return body
        except httpx.HTTPError:
            pass
        time.sleep(1)
    return body
