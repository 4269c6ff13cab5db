"""API latency and throughput: one uvicorn worker under wrk on loopback.

Lands three simulated hours of the default city (10 s interval) with the real stream worker
into a local-folder lake, builds the first hour's batch tables (clean, daily aggregates,
anomaly events; the same hand-built format the API tests use, docs/lake.md), starts
`smartcity api` with one worker, and drives it with wrk: a mix of `sensors/latest`, one
sensor's readings for one hour (sensor and hour vary per request; built and landed hours
both), and daily aggregates; then `/` alone as the ceiling of the server itself. Prints
requests/s and p50/p95/p99 for both and the ratio. Run: `make bench` or
`python -m bench.bench_api`.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from bench.bench_simulator import broker, fresh_topics
from simulator.producer import ReadingProducer
from simulator.registry import build_registry, registry_table
from simulator.simulation import Simulation, SimulationConfig
from smartcity.lake import Lake
from smartcity.settings import SENSOR_TYPES, Settings
from smartcity_stream.sensors import sensors_by_id
from smartcity_stream.worker import StreamWorker, WorkerOptions
from tests.api_support import DAY, START, build_first_hour
from tests.stream_support import SMARTCITY, worker_env

INTERVAL_MS = 10_000
WRK_SCRIPT = """
paths = {%s}
counter = 0
request = function()
  counter = counter + 1
  return wrk.format("GET", paths[(counter %% #paths) + 1])
end
done = function(summary, latency, requests)
  io.write(string.format("RESULT %%d %%.3f %%d %%d %%d %%d\\n", summary.requests,
    summary.duration / 1e6, latency:percentile(50), latency:percentile(95),
    latency:percentile(99), summary.errors.status + summary.errors.connect
    + summary.errors.read + summary.errors.timeout))
end
"""


def land(settings: Settings, lake_dir: Path, hours: int) -> Settings:
    """Produce `hours` of readings and land them with the real worker (in process)."""
    config = SimulationConfig(start_ms=int(START.timestamp() * 1000), interval_ms=INTERVAL_MS)
    simulation = Simulation(build_registry(), config)
    producer = ReadingProducer(settings)
    for _ in range(hours * 3600 * 1000 // INTERVAL_MS):
        for batch in simulation.next_step():
            producer.send(batch)
    assert producer.flush(120) == 0
    local = settings.model_copy(update={"lake_uri": lake_dir.as_uri()})
    options = WorkerOptions(until_idle_s=2.0, group_id=f"bench-api-{uuid.uuid4().hex[:6]}")
    StreamWorker(local, sensors_by_id(registry_table(build_registry())), options).run()
    return local


def paths(hours: int, count: int = 600) -> list[str]:
    """The request mix: a third each of latest, one sensor-hour of readings, aggregates."""
    rng = random.Random(7)
    ids = registry_table(build_registry()).column("sensor_id").to_pylist()
    mix = []
    for n in range(count):
        if n % 3 == 0:
            mix.append("/api/v1/sensors/latest?sensor_type=" + SENSOR_TYPES[n % 9 // 3])
        elif n % 3 == 1:
            hour = rng.randrange(hours)
            start, end = f"{DAY}T{hour:02d}:00:00Z", f"{DAY}T{hour:02d}:59:59Z"
            mix.append(f"/api/v1/sensors/{rng.choice(ids)}/readings?start={start}&end={end}")
        else:
            granularity = ("day", "hour")[n % 2]
            mix.append(
                f"/api/v1/aggregates/daily?date={DAY}&sensor_type=traffic&granularity={granularity}"
            )
    return mix


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wrk(base: str, targets: list[str], seconds: int, connections: int) -> dict[str, float]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT % ", ".join(f'"{p}"' for p in targets))
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", script.name, base]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    os.unlink(script.name)
    match = re.search(r"RESULT (\d+) ([\d.]+) (\d+) (\d+) (\d+) (\d+)", output)
    assert match, output
    requests, duration, p50, p95, p99, errors = match.groups()
    return {
        "rps": int(requests) / float(duration),
        "p50": int(p50) / 1000,
        "p95": int(p95) / 1000,
        "p99": int(p99) / 1000,
        "errors": int(errors),
    }


def serve(settings: Settings) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = subprocess.Popen(
        [SMARTCITY, "api", "--port", str(port), "--workers", "1"],
        env=worker_env(settings),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    for _ in range(150):
        try:
            httpx.get(base + "/", timeout=1)
            return process, base
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("the API did not start")


def line(name: str, result: dict[str, float]) -> str:
    return (
        f"{name:10}: {result['rps']:8,.0f} req/s  p50 {result['p50']:6.2f} ms  "
        f"p95 {result['p95']:6.2f} ms  p99 {result['p99']:6.2f} ms  errors {result['errors']:.0f}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=int, default=3, help="simulated hours landed")
    parser.add_argument("--seconds", type=int, default=10, help="wrk duration per run")
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args(argv)
    with broker() as base, tempfile.TemporaryDirectory(prefix="smartcity-api-lake-") as lake:
        settings = land(fresh_topics(base), Path(lake), args.hours)
        build_first_hour(Lake.from_settings(settings))
        process, url = serve(settings)
        try:
            mix = paths(args.hours)
            wrk(url, mix, 2, args.connections)  # warm the caches and the threadpool
            api = wrk(url, mix, args.seconds, args.connections)
            ceiling = wrk(url, ["/"], args.seconds, args.connections)
        finally:
            process.terminate()
            process.wait(timeout=10)
    print(line("API mix", api))
    print(line("ceiling /", ceiling))
    print(f"ratio     : the mix at {api['rps'] / ceiling['rps']:.0%} of the ceiling's requests/s")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
