"""The `smartcity` command as a user runs it: in a subprocess, from a plain folder."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import psutil
import pytest

from smartcity.services.processes import free_port

SMARTCITY = shutil.which("smartcity") or str(Path(__file__).parents[1] / ".venv/bin/smartcity")


def run(
    args: list[str], cwd: Path, timeout: float = 180, **env: str
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SMARTCITY_")}
    return subprocess.run(
        [SMARTCITY, *args],
        cwd=cwd,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_unreachable_broker_is_one_line_not_a_hang(tmp_path: Path) -> None:
    """The CLI gives up after its configured wait (6 s, under the promised 10 s); the test's
    own limit only catches a hang, since a loaded machine may be slow to start Python."""
    closed = f"127.0.0.1:{free_port()}"
    result = run(["topics", "create"], tmp_path, timeout=60, SMARTCITY_KAFKA_BOOTSTRAP=closed)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "SMARTCITY_KAFKA_BOOTSTRAP" in lines[0]
    assert "within 6 s" in lines[0]
    assert "Traceback" not in result.stderr


def test_wrong_lake_uri_is_one_line(tmp_path: Path) -> None:
    result = run(["topics", "create"], tmp_path, SMARTCITY_LAKE_URI="ftp://x")
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: SMARTCITY_LAKE_URI: ")
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.integration
def test_services_up_status_down_leaves_nothing_behind(tmp_path: Path) -> None:
    up = run(["services", "up"], tmp_path)
    assert up.returncode == 0, up.stderr
    exported = dict(
        line.removeprefix("export ").split("=", 1) for line in up.stdout.strip().splitlines()
    )
    assert set(exported) == {
        "SMARTCITY_KAFKA_BOOTSTRAP",
        "SMARTCITY_S3_ENDPOINT",
        "SMARTCITY_S3_ACCESS_KEY",
        "SMARTCITY_S3_SECRET_KEY",
    }
    runtime = tmp_path / ".runtime"
    pids = [int(p) for p in _recorded_pids(runtime)]
    assert len(pids) == 2 and all(psutil.pid_exists(pid) for pid in pids)

    created = run(["topics", "create"], tmp_path)
    assert created.returncode == 0, created.stderr
    assert created.stdout.count("created") == 5
    again = run(["topics", "create"], tmp_path)
    assert again.stdout.count("exists") == 5

    status = run(["services", "status"], tmp_path)
    assert status.stdout.count("running") == 2

    down = run(["services", "down"], tmp_path)
    assert down.returncode == 0
    assert "kafka" in down.stdout and "s3" in down.stdout
    for pid in pids:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    leftovers = [
        p.info["pid"]
        for p in psutil.process_iter(["pid", "cmdline"])
        if str(runtime) in " ".join(p.info["cmdline"] or [])
    ]
    assert leftovers == []
    assert run(["services", "status"], tmp_path).stdout.count("running") == 0


def _recorded_pids(runtime: Path) -> list[str]:
    import orjson

    records = orjson.loads((runtime / "services.json").read_bytes())
    return [str(record["pid"]) for record in records.values()]
