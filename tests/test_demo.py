"""`smartcity demo --small` in a fresh folder: without serving, then the API on what it built;
serving, its printed examples, and a Ctrl-C that stops everything it started."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson
import psutil
import pytest

from smartcity.demo import API_PORT, DAGSTER_UI_PORT, examples
from smartcity.services.processes import family, free_port, terminate
from tests.stream_support import SMARTCITY
from tests.test_quiet_console import LOG_LINE, NOISE

pytestmark = pytest.mark.integration

STOPPED_WITHIN_S = 10.0
"""The promise: Ctrl-C stops everything within this."""
DEMO_TIMEOUT_S = 1200.0
"""Only to catch a hang: `--small` reaches its summary in about 80 s on 2 cores."""
INTO_THE_STEP_S = 2.0
"""Once the step's process has started: late enough that it is at work."""


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
    assert [line for line in demo.stdout.splitlines() if any(w in line for w in NOISE)] == []
    assert demo.stderr == ""
    assert re.search(r"^  ✓ sensor_tables \(\d+\.\d s\)$", demo.stdout, re.M), demo.stdout
    assert re.search(r"^    ✓ clean_traffic \(\d+\.\d s\)$", demo.stdout, re.M), demo.stdout
    named = LOG_LINE.fullmatch(demo.stdout.splitlines()[-1])
    assert named, demo.stdout[-2000:]
    log = Path(named.group(1))
    assert log.parent == runtime / "logs"
    assert 'STEP_SUCCESS - Finished execution of step "anomaly_summary"' in log.read_text()
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


@dataclass
class RunningDemo:
    process: subprocess.Popen[bytes]
    output: Path
    tree: list[psutil.Process] = field(default_factory=list)

    def wait_for(self, line: str) -> str:
        """The demo's output once it holds `line`."""
        deadline = time.monotonic() + DEMO_TIMEOUT_S
        while time.monotonic() < deadline:
            text = self.output.read_text(errors="replace")
            if line in text:
                return text
            assert self.process.poll() is None, f"the demo exited:\n{text[-3000:]}"
            time.sleep(0.5)
        raise AssertionError(f"the demo did not print {line!r} within {DEMO_TIMEOUT_S:g} s")

    def wait_for_child(self, part: str) -> None:
        """Until a process of the demo has `part` in its command line."""
        deadline = time.monotonic() + DEMO_TIMEOUT_S
        while time.monotonic() < deadline:
            if any(part in " ".join(_command(p)) for p in family(self.process.pid)):
                return
            assert self.process.poll() is None, self.output.read_text(errors="replace")[-3000:]
            time.sleep(0.2)
        raise AssertionError(f"no {part!r} under the demo within {DEMO_TIMEOUT_S:g} s")

    def ctrl_c(self) -> float:
        """Ctrl-C as a terminal sends it, to the demo's process group; the seconds until the
        demo exited, once nothing it started is left."""
        self.tree = family(self.process.pid)
        started = time.monotonic()
        os.killpg(self.process.pid, signal.SIGINT)
        self.process.wait(timeout=120)
        stopped_in = time.monotonic() - started
        assert [_command(p) for p in self.tree if _running(p)] == []
        assert [_command(p) for p in _touching(self.output.parent)] == []
        return stopped_in


@contextmanager
def demo_in(folder: Path, *args: str) -> Iterator[RunningDemo]:
    """`smartcity demo` in `folder` and its own process group, as a terminal starts it;
    whatever is left of it afterwards is killed, so a failed test leaves nothing running."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMARTCITY_")}
    output = folder / "demo.out"
    with output.open("wb") as sink:
        process = subprocess.Popen(
            [SMARTCITY, "demo", "--small", *args],
            cwd=folder,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    demo = RunningDemo(process, output)
    try:
        yield demo
    finally:
        demo.tree += family(process.pid)
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
        terminate([*demo.tree, *_touching(folder)], grace_s=5)


def test_demo_serves_what_it_prints_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    free_before = {port: free_port(port) == port for port in (API_PORT, DAGSTER_UI_PORT)}
    with demo_in(tmp_path) as demo:
        printed = demo.wait_for("Ctrl-C stops everything.")
        api = _printed_port(printed, "Map:", "/map")
        ui = _printed_port(printed, "Dagster UI:", "/")
        _assert_port(printed, "API", API_PORT, api, free_before[API_PORT])
        _assert_port(printed, "Dagster UI", DAGSTER_UI_PORT, ui, free_before[DAGSTER_UI_PORT])
        assert f"API docs:   http://127.0.0.1:{api}/docs" in printed

        summary = orjson.loads((tmp_path / ".runtime" / "demo" / "summary.json").read_bytes())
        urls = examples(f"http://127.0.0.1:{api}", summary["first_event_time"][:10])
        curl_lines = [line.strip() for line in printed.splitlines() if "curl " in line]
        assert curl_lines == [f"curl -s '{url}'" for url in urls]
        for url in urls:
            answer = httpx.get(url, timeout=60)
            assert answer.is_success, f"{url}: {answer.status_code} {answer.text[:500]}"
        assert httpx.get(f"http://127.0.0.1:{ui}/server_info", timeout=30).is_success

        commands = [" ".join(_command(p)) for p in family(demo.process.pid)]
        for part in ("kafka.Kafka", "dagster-webserver", "dagster-daemon", "api grpc", " api "):
            assert any(part in c for c in commands), f"no {part!r} among {commands}"
        stopped_in = demo.ctrl_c()
        print(f"Ctrl-C stopped the serving demo in {stopped_in:.1f} s")
        assert stopped_in < STOPPED_WITHIN_S
        assert demo.process.returncode == 0


@pytest.mark.parametrize(
    "step_child",
    ["smartcity stream", "org.apache.spark.deploy.SparkSubmit"],
    ids=["stream-worker", "dagster-on-spark"],
)
def test_ctrl_c_during_a_step_stops_everything(tmp_path: Path, step_child: str) -> None:
    with demo_in(tmp_path, "--no-serve") as demo:
        demo.wait_for_child(step_child)
        time.sleep(INTO_THE_STEP_S)
        stopped_in = demo.ctrl_c()
        print(f"Ctrl-C while {step_child!r} ran stopped the demo in {stopped_in:.1f} s")
        assert demo.process.returncode == 130


def _printed_port(printed: str, label: str, path: str) -> int:
    pattern = rf"^{re.escape(label)} +http://127\.0\.0\.1:(\d+){re.escape(path)}$"
    found = re.search(pattern, printed, re.M)
    assert found, f"no {label} line in:\n{printed[-3000:]}"
    return int(found.group(1))


def _assert_port(printed: str, what: str, wanted: int, port: int, free_before: bool) -> None:
    """The expected port, or a fallback said in one line; never silent."""
    fallback = f"port {wanted} is taken: the {what} is on {port}"
    if port != wanted or not free_before:
        assert fallback in printed, printed[-3000:]
    else:
        assert f"port {wanted} is taken" not in printed


def _command(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return []


def _running(process: psutil.Process) -> bool:
    """A zombie has exited: only its parent (here possibly an init that never reaps) is left
    to read its status."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _touching(folder: Path) -> list[psutil.Process]:
    """Processes with `folder` as working directory or in their command line, but this one."""
    found = []
    for process in psutil.process_iter(["pid", "cwd", "cmdline"]):
        try:
            cwd, cmdline = process.info["cwd"] or "", process.info["cmdline"] or []
            if (
                process.pid != os.getpid()
                and _running(process)
                and (Path(cwd) == folder or any(str(folder) in part for part in cmdline))
            ):
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found
