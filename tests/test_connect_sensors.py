"""The README's "Connect your sensors" block, run as it stands, in an empty folder."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]
SECTION = "## Connect your sensors"
API_PORT = 8000
"""The block serves the API on the port a newcomer expects; the test needs it free."""


def readme_block() -> str:
    """The first bash block of the section."""
    text = (REPO / "README.md").read_text()
    section = text[text.index(SECTION) :]
    found = re.search(r"```bash\n(.*?)```", section, re.S)
    assert found, f"no bash block under {SECTION!r}"
    return found.group(1)


def _json_objects(text: str) -> list[dict]:
    """The JSON objects curl printed, one after another (its answers end without a newline)."""
    decoder, found, at = json.JSONDecoder(), [], text.find("{")
    while at != -1:
        value, end = decoder.raw_decode(text, at)
        found.append(value)
        at = text.find("{", end)
    return found


def _port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _leftovers(folder: Path) -> list[psutil.Process]:
    mine = []
    for process in psutil.process_iter(["cwd"]):
        try:
            if process.info["cwd"] and Path(process.info["cwd"]) == folder:
                mine.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return mine


def test_the_readme_section_works_as_written(tmp_path: Path) -> None:
    assert _port_is_free(API_PORT), f"port {API_PORT} is taken: the README's block needs it"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMARTCITY_")}
    env["PATH"] = f"{REPO / '.venv' / 'bin'}{os.pathsep}{env['PATH']}"
    try:
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", readme_block()],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=420,
            check=False,
        )
    finally:
        subprocess.run(
            [str(REPO / ".venv" / "bin" / "smartcity"), "services", "down"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            timeout=120,
            check=False,
        )
        for process in _leftovers(tmp_path):
            process.kill()
    logs = "".join(
        f"\n--- {log.name}\n{log.read_text()[-1500:]}" for log in sorted(tmp_path.glob("*.log"))
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:] + logs
    accepted, traffic, energy = _json_objects(result.stdout)[-3:]
    assert accepted["accepted"] == 1, accepted
    assert (traffic["sensor_id"], traffic["seq"], traffic["vehicle_count"]) == (
        "TRAFFIC_0001",
        1,
        12,
    )
    assert (energy["sensor_id"], energy["seq"], energy["power_kw"]) == ("ENERGY_0001", 1, 120.5)
    assert "2 sensors (1 energy, 1 traffic) imported as registry version 1" in result.stdout
