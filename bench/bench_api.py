"""API latency and throughput: one uvicorn worker under vegeta on loopback.

Lands one simulated day of the default city (10 s interval, 1.8 million readings) with the
real stream worker into a local-folder lake, builds that day's batch tables with the real
assets (`smartcity materialize`, as the API tests do),
starts `smartcity api` with one worker, and drives it with vegeta: a mix of
`sensors/latest`, one sensor's readings for one hour (3,000 requests cycled, sensor and hour
drawn at random), and daily aggregates. First one pass over the mix at 200 requests/s with
nothing in memory yet (the cold figures: files read, hour blocks rendered the first time);
then the mix paced at 1,000 requests/s twice (open loop: latency counts from when each request
was due): the first run, printed as "settling", still pays for the cold pass (the garbage
collector working through what it left, the last hour blocks rendered); the second is the
steady-state figure. Then the same paced run again with `--sse-clients` (50 by default)
clients on the live stream (`/api/v1/live/stream`, held by a separate process) while the live
simulator produces the default city's 2,100 readings/s: the stream must not cost the other
requests their latency. Then flat out over 16 connections, then `/` alone flat out as the
ceiling of the server itself. Prints requests/s and p50/p95/p99 of each and the ratio.
Run: `make bench` or `python -m bench.bench_api [--sse-clients 0]`.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import orjson

from bench.bench_simulator import REPLAY_BEHIND_S, broker, fresh_topics
from simulator.producer import ReadingProducer
from simulator.registry import build_registry, registry_table
from simulator.simulation import Simulation, SimulationConfig
from smartcity.lake import Lake
from smartcity.registry import import_registry
from smartcity.services.processes import free_port
from smartcity.settings import SENSOR_TYPES, Settings
from smartcity_stream.worker import StreamWorker, WorkerOptions
from tests.api_support import DAY, START, materialize
from tests.stream_support import SMARTCITY, worker_env

INTERVAL_MS = 10_000
RATE = 1000
COLD_RATE = 200
SSE_CLIENTS = 50
LIVE_STREAM = "/api/v1/live/stream"
SSE_SETTLE_S = 3
CURL_TIMED_OUT = 28
"""curl's exit status at `--max-time`: the stream was held to the end, not dropped."""
"""Time for the SSE clients to connect and the API's consumer to reach the topics' ends."""
VEGETA_MODULE = "github.com/tsenart/vegeta/v12"


def land(settings: Settings, lake_dir: Path, hours: int) -> Settings:
    """Produce `hours` of readings and land them with the real worker (in process)."""
    config = SimulationConfig(start_ms=int(START.timestamp() * 1000), interval_ms=INTERVAL_MS)
    registry = build_registry()
    local = settings.model_copy(
        update={"lake_uri": lake_dir.as_uri(), "event_time_behind_s": REPLAY_BEHIND_S}
    )
    imported, _ = import_registry(Lake.from_settings(local), registry.table())
    simulation = Simulation(registry, config)
    producer = ReadingProducer(settings)
    for _ in range(hours * 3600 * 1000 // INTERVAL_MS):
        for batch in simulation.next_step():
            producer.send(batch)
    assert producer.flush(120) == 0
    options = WorkerOptions(until_idle_s=2.0, group_id=f"bench-api-{uuid.uuid4().hex[:6]}")
    StreamWorker(local, imported.active_sensors(), options).run()
    return local


def paths(hours: int, count: int) -> list[str]:
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
            mix.append(f"/api/v1/aggregates/daily?date={DAY}&sensor_type=traffic")
    return mix


def vegeta() -> str:
    """The load generator: on the PATH, or in Go's bin folder where `make bench` puts it."""
    found = shutil.which("vegeta")
    gopath = subprocess.run(["go", "env", "GOPATH"], capture_output=True, text=True).stdout
    built = Path(gopath.strip() or Path.home() / "go") / "bin" / "vegeta"
    if found or built.exists():
        return found or str(built)
    raise SystemExit(f"vegeta not found: `make bench` installs it (go install {VEGETA_MODULE})")


def attack(
    base: str, targets: list[str], seconds: int, rate: int, workers: int
) -> dict[str, float]:
    """One vegeta run; `rate` 0 means as fast as `workers` connections go (closed loop),
    otherwise requests start at that rate whatever the answers' latency (open loop)."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as script:
        script.write("".join(f"GET {base}{path}\n" for path in targets))
    pacing = ["-rate=0", f"-max-workers={workers}"] if rate == 0 else [f"-rate={rate}/s"]
    attack = subprocess.run(
        [
            vegeta(),
            "attack",
            f"-targets={script.name}",
            f"-duration={seconds}s",
            "-max-body=0",  # bodies are read, not kept: keeping them costs the generator more
            *pacing,
        ],
        capture_output=True,
        check=True,
    )
    os.unlink(script.name)
    report = subprocess.run(
        [vegeta(), "report", "-type=json"], input=attack.stdout, capture_output=True, check=True
    )
    result = orjson.loads(report.stdout)
    latencies = result["latencies"]
    return {
        "rps": result["throughput"],
        "p50": latencies["50th"] / 1e6,
        "p95": latencies["95th"] / 1e6,
        "p99": latencies["99th"] / 1e6,
        "errors": result["requests"] - result["status_codes"].get("200", 0),
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


@contextmanager
def live_load(settings: Settings, url: str, clients: int, seconds: int) -> Iterator[dict[str, int]]:
    """The live simulator at its default 2,100 readings/s and `clients` SSE clients (`curl -N`,
    which costs the shared machine far less than Python clients would), for `seconds` after
    they have settled; yields the bytes the clients received and how many held on to the end,
    filled in when they are done."""
    held_s = seconds + 2 * SSE_SETTLE_S
    simulator = subprocess.Popen(
        [SMARTCITY, "simulate", "--duration", f"{held_s}s", "--no-progress"],
        env=worker_env(settings),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    curl = ["curl", "-sN", "--max-time", str(held_s), "-o", os.devnull, "-w", "%{size_download}"]
    streams = [
        subprocess.Popen([*curl, url + LIVE_STREAM], stdout=subprocess.PIPE) for _ in range(clients)
    ]
    received: dict[str, int] = {}
    try:
        time.sleep(SSE_SETTLE_S)
        yield received
        for stream in streams:
            output, _ = stream.communicate(timeout=held_s + 30)
            received["bytes"] = received.get("bytes", 0) + int(output or 0)
            received["held"] = received.get("held", 0) + (stream.returncode == CURL_TIMED_OUT)
    finally:
        for process in (*streams, simulator):
            process.terminate()
            process.wait(timeout=30)


def line(name: str, result: dict[str, float]) -> str:
    return (
        f"{name:22}: {result['rps']:8,.0f} req/s  p50 {result['p50']:6.2f} ms  "
        f"p95 {result['p95']:6.2f} ms  p99 {result['p99']:6.2f} ms  errors {result['errors']:.0f}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=int, default=24, help="simulated hours landed and built")
    parser.add_argument("--seconds", type=int, default=15, help="duration of each run")
    parser.add_argument("--rate", type=int, default=RATE, help="requests/s of the paced run")
    parser.add_argument("--connections", type=int, default=16, help="of the flat-out runs")
    parser.add_argument("--paths", type=int, default=3000, help="distinct requests in the mix")
    parser.add_argument(
        "--sse-clients",
        type=int,
        default=SSE_CLIENTS,
        help="live-stream clients held during a second paced run (0: no such run)",
    )
    args = parser.parse_args(argv)
    with broker() as base, tempfile.TemporaryDirectory(prefix="smartcity-api-lake-") as lake:
        settings = land(fresh_topics(base), Path(lake), args.hours)
        materialize(settings, DAY, Path(lake) / "dagster")  # the real assets build the day
        process, url = serve(settings)
        try:
            mix = paths(args.hours, args.paths)
            cold = attack(url, mix, len(mix) // COLD_RATE, COLD_RATE, args.connections)
            settling = attack(url, mix, args.seconds, args.rate, args.connections)
            paced = attack(url, mix, args.seconds, args.rate, args.connections)
            with_sse: dict[str, float] = {}
            streams: dict[str, int] = {}
            if args.sse_clients:
                with live_load(settings, url, args.sse_clients, args.seconds) as streams:
                    with_sse = attack(url, mix, args.seconds, args.rate, args.connections)
            flat_out = attack(url, mix, args.seconds, 0, args.connections)
            ceiling = attack(url, ["/"], args.seconds, 0, args.connections)
        finally:
            process.terminate()
            process.wait(timeout=10)
    print(line(f"cold pass at {COLD_RATE}/s", cold))
    print(line(f"settling at {args.rate:,}/s", settling))
    print(line(f"API mix at {args.rate:,}/s", paced))
    if args.sse_clients:
        print(line(f"  + {args.sse_clients} SSE clients", with_sse))
        print(
            f"SSE clients           : {streams.get('held', 0)} of {args.sse_clients} held to the "
            f"end, {streams.get('bytes', 0) / (args.seconds + 2 * SSE_SETTLE_S) / 1e6:.1f} MB/s "
            "received in all"
        )
    print(line("API mix, flat out", flat_out))
    print(line("ceiling /, flat out", ceiling))
    print(
        f"ratio                 : the mix at {flat_out['rps'] / ceiling['rps']:.0%} of the ceiling"
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
