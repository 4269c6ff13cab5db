"""HTTP ingest throughput: readings/s acknowledged through one API worker, against the same
readings produced straight to Kafka.

Simulated readings of the default city (1 s interval) are encoded once, up front, into JSON
array bodies of `--batch` readings. One `smartcity api` worker (uvicorn, its own process)
takes them from this process over `--connections` concurrent keep-alive connections; a
reading counts once its request was answered 202, i.e. once Kafka acknowledged it. The
direct figure is the same readings, same keys and topics, produced by one confluent-kafka
producer with the ingest producer's settings (`smartcity.ingest.ingest_producer`) in this
process until every delivery report is in. Each way writes to fresh topics of its own.

Uses the broker at SMARTCITY_KAFKA_BOOTSTRAP if set, else starts one with `smartcity.services`
(stopped at the end). Run: `make bench` or `python -m bench.bench_ingest [--readings N]`.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import tempfile
import time
from pathlib import Path

import httpx
import psutil

from bench.bench_api import serve
from bench.bench_simulator import broker, fresh_topics, simulation
from simulator.registry import build_registry
from smartcity.ingest import ingest_producer, produce
from smartcity.lake import Lake
from smartcity.registry import import_registry
from smartcity.settings import Settings

Readings = list[tuple[str, bytes, bytes]]
"""(sensor type, key, value) of each reading, in the simulator's order."""


def readings(count: int, seed: int) -> Readings:
    sim = simulation(seed)
    out: Readings = []
    while len(out) < count:
        for batch in sim.next_step():
            out.extend((batch.sensor_type, key, value) for key, value, _, _ in batch.messages)
    return out[:count]


def bodies(all_readings: Readings, batch: int) -> list[bytes]:
    values = [value for _, _, value in all_readings]
    return [
        b"[" + b",".join(values[start : start + batch]) + b"]"
        for start in range(0, len(values), batch)
    ]


def direct(settings: Settings, all_readings: Readings) -> tuple[int, float]:
    """One producer, one process: what Kafka takes without HTTP in between."""
    acknowledged = 0

    def delivered(error: object, _message: object) -> None:
        nonlocal acknowledged
        acknowledged += error is None

    producer = ingest_producer(settings)
    topics = {name: settings.reading_topic(name) for name, _, _ in all_readings[:1000]}
    started = time.perf_counter()
    for sensor_type, key, value in all_readings:
        produce(producer, topics[sensor_type], key, value, delivered)
        producer.poll(0)
    assert producer.flush(120) == 0, "readings left unconfirmed"
    return acknowledged, time.perf_counter() - started


async def post_all(base: str, requests: list[bytes], connections: int) -> int:
    """Every body posted over `connections` connections; the readings acknowledged."""
    queue = iter(requests)
    limits = httpx.Limits(max_connections=connections)
    headers = {"Content-Type": "application/json"}
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=120) as client:

        async def worker() -> int:
            acknowledged = 0
            for body in queue:
                response = await client.post("/api/v1/readings", content=body, headers=headers)
                assert response.status_code == 202, response.text[:500]
                acknowledged += response.json()["accepted"]
            return acknowledged

        return sum(await asyncio.gather(*(worker() for _ in range(connections))))


def through_api(
    settings: Settings, requests: list[bytes], connections: int
) -> tuple[int, float, float]:
    """(acknowledged, seconds, CPU seconds of the API process) after one warm-up request."""
    process, base = serve(settings)
    try:
        asyncio.run(post_all(base, requests[:1], 1))
        cpu = psutil.Process(process.pid).cpu_times()
        started = time.perf_counter()
        acknowledged = asyncio.run(post_all(base, requests[1:], connections))
        elapsed = time.perf_counter() - started
        after = psutil.Process(process.pid).cpu_times()
    finally:
        process.terminate()
        process.wait(timeout=30)
    busy = (after.user + after.system) - (cpu.user + cpu.system)
    return acknowledged, elapsed, busy


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=1_000_000, help="readings each way")
    parser.add_argument("--batch", type=int, default=5_000, help="readings per request")
    parser.add_argument("--connections", type=int, default=4, help="concurrent requests")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    machine = f"{psutil.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GB"
    print(f"ingest bench on {platform.machine()} {machine}, Python {platform.python_version()}")
    all_readings = readings(args.readings + args.batch, args.seed)  # + the warm-up request
    requests = bodies(all_readings, args.batch)
    with broker() as base, tempfile.TemporaryDirectory(prefix="smartcity-ingest-") as lake:
        settings = fresh_topics(base).model_copy(update={"lake_uri": Path(lake).as_uri()})
        import_registry(Lake.from_settings(settings), build_registry().table())
        api_n, api_s, api_cpu = through_api(settings, requests, args.connections)
        direct_n, direct_s = direct(fresh_topics(base), all_readings[args.batch :])
    api, straight = api_n / api_s, direct_n / direct_s
    print(
        f"API    : {api_n:>10,} acknowledged in {api_s:6.2f} s = {api:>9,.0f} readings/s "
        f"({args.batch:,} per request, {args.connections} connections; "
        f"API process {api_cpu / api_n * 1e6:.1f} µs CPU per reading)"
    )
    print(
        f"direct : {direct_n:>10,} acknowledged in {direct_s:6.2f} s = {straight:>9,.0f} readings/s"
    )
    print(
        f"ratio  : the API at {api / straight:.0%} of one producer (target: >= 50,000 readings/s)"
    )


if __name__ == "__main__":
    main()
