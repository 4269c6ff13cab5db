"""Batch layer throughput: a simulated day through the daily pipeline on Spark, and the same
work in DuckDB, timed and compared row for row.

The day (default: the 210 sensors reporting every second, 18.1 million readings) is landed
with the stream worker's own landing code (one file per hour and type) and cached. Spark:
the Dagster daily pipeline in this process (raw -> clean -> aggregates -> anomaly_summary).
DuckDB: `bench.duckdb_reference`, the same tables from the same landing files (contract
rules and rejects, dedup, registry join, aggregates, the stream's rules re-run and
reconciled, zstd Parquet), in a process of its own. Each engine runs once to warm up (for
Spark: the JVM's start), then `--runs` times; the bench prints the median time, rows per
second, CPU time and peak memory of each engine's processes and the ratios, then compares
every table of the two builds and fails if one differs.
Run: `make bench` or `python -m bench.bench_batch [--interval 1] [--runs 5]`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

from bench.bench_simulator import START_MS
from bench.duckdb_reference import compare
from simulator.landed_day import land_simulated_day
from simulator.registry import registry_table
from smartcity.lake import Lake
from smartcity.layout import landing_dir
from smartcity.registry import import_registry
from smartcity.services import spark_connect
from smartcity.services.processes import stop
from smartcity.settings import SENSOR_TYPES, Settings, default_runtime_dir
from smartcity_dagster.console import log_file, output_into

if TYPE_CHECKING:
    import dagster as dg

DAY = "2026-11-27"
CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "smartcity" / "bench"
REPO = Path(__file__).resolve().parents[1]
SAMPLE_S = 0.2
"""How often the processes' memory and CPU time are sampled."""


def landed_lake(lake: Lake, interval_s: float, fresh: bool) -> tuple[int, bool]:
    """The day's landing in `lake`, simulated once per interval and then linked from a
    user-level cache (landing 18.1 M readings takes minutes and is setup, not measured).

    Returns the readings landed and whether they came from the cache.
    """
    cached = CACHE_DIR / f"batch-{DAY}-interval-{interval_s:g}"
    done = cached / "readings"
    if fresh or not done.exists():
        shutil.rmtree(cached, ignore_errors=True)
        rows = land_simulated_day(
            Lake.from_settings(Settings(_env_file=None, lake_uri=cached.as_uri())),
            START_MS,
            interval_s,
        )
        done.write_text(str(rows))
        hit = False
    else:
        hit = True
    for sensor_type in SENSOR_TYPES:
        folder = landing_dir(sensor_type, DAY)
        shutil.copytree(cached / folder, lake.path(folder), copy_function=os.link)
    return int(done.read_text()), hit


class ProcessTree:
    """Peak resident memory and CPU time of a process and all its descendants while the
    block runs, sampled: Spark's JVM, its Python daemon and workers, or DuckDB's process and
    its rule workers. Resident sizes are summed, so pages two processes share count twice,
    except a child still in its parent's address space (the same virtual size): a command
    the JVM starts (the Python daemon, Hadoop's shell calls for file permissions) runs in
    the JVM's memory until its `exec` and would count the whole JVM again. A process that
    ends loses the CPU time of its last sample period."""

    def __init__(self, *pids: int) -> None:
        self.roots = [psutil.Process(pid) for pid in pids]
        self.peak_bytes = 0
        self._cpu_at_start: dict[int, float] = {}
        self._cpu: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def cpu_s(self) -> float:
        return sum(cpu - self._cpu_at_start.get(pid, 0.0) for pid, cpu in self._cpu.items())

    def __enter__(self) -> ProcessTree:
        self._sample()
        self._cpu_at_start = dict(self._cpu)
        self.peak_bytes = 0
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            self._sample()

    def _sample(self) -> None:
        processes: list[psutil.Process] = []
        for root in self.roots:
            try:
                processes += [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                continue
        memory: dict[int, tuple[int, int, int]] = {}
        for process in processes:
            try:
                with process.oneshot():
                    info = process.memory_info()
                    memory[process.pid] = (process.ppid(), info.vms, info.rss)
                    times = process.cpu_times()
            except psutil.NoSuchProcess:
                continue
            self._cpu[process.pid] = times.user + times.system
        resident = sum(
            rss
            for parent, vms, rss in memory.values()
            if parent not in memory or memory[parent][1] != vms
        )
        self.peak_bytes = max(self.peak_bytes, resident)


@dataclass(frozen=True)
class Run:
    """One timed run: wall and CPU seconds, and each step's wall seconds."""

    seconds: float
    cpu_s: float
    steps: dict[str, float]


@dataclass
class Engine:
    """One engine's warm-up time, its timed runs, and the peak memory of its processes over
    all of them (the warm-up included: a JVM keeps what it took)."""

    name: str
    warm_up_s: float = 0.0
    runs: list[Run] = field(default_factory=list)
    peak_bytes: int = 0

    def record(
        self, seconds: float, usage: ProcessTree, steps: dict[str, float], warm_up: bool
    ) -> None:
        self.peak_bytes = max(self.peak_bytes, usage.peak_bytes)
        if warm_up:
            self.warm_up_s = seconds
        else:
            self.runs.append(Run(seconds, usage.cpu_s, steps))

    @property
    def median(self) -> Run:
        """The run of the median time (the lower one of an even number of runs)."""
        ordered = sorted(self.runs, key=lambda run: run.seconds)
        return ordered[(len(ordered) - 1) // 2]


def spark_runs(runs: int, server: int | None) -> Engine:
    """The daily pipeline for `DAY` in this process: a warm-up run (the JVM starts in it, or
    the first session of the Spark Connect server whose pid is `server`), then `runs` runs,
    each failing the bench if it fails. The server's processes are measured with this one's."""
    import dagster as dg

    from smartcity.settings import load_settings
    from smartcity_dagster.assets.quality import sensor_registry
    from smartcity_dagster.definitions import defs
    from smartcity_dagster.home import dagster_home

    dagster_home(load_settings())
    engine = Engine("spark")
    with dg.DagsterInstance.get() as instance:
        dg.materialize([sensor_registry], instance=instance, resources=defs.resources)
        job = defs.resolve_job_def("daily_pipeline")
        for run in range(runs + 1):
            pids = [os.getpid()] if server is None else [os.getpid(), server]
            with ProcessTree(*pids) as usage:
                started = time.perf_counter()
                result = job.execute_in_process(partition_key=DAY, instance=instance)
                seconds = time.perf_counter() - started
            if not result.success:
                raise SystemExit(f"the Spark run {run} failed")
            engine.record(seconds, usage, step_seconds(instance, result.run_id), run == 0)
    return engine


def step_seconds(instance: dg.DagsterInstance, run_id: str) -> dict[str, float]:
    """Each step's wall time in a Dagster run, from its start and success events, and
    under `sensor_tables` each of its tables' own (`build_seconds`: the tables of a type
    one after another, the types at once)."""
    from smartcity_dagster.console import built_table

    seconds: dict[str, float] = {}
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event and event.event_type_value in ("STEP_START", "STEP_SUCCESS"):
            sign = -1 if event.event_type_value == "STEP_START" else 1
            step = event.step_key or "?"
            seconds[step] = seconds.get(step, 0.0) + sign * entry.timestamp
        elif event and (built := built_table(event)) is not None:
            seconds[f"  {built[0]}"] = built[1]
    return seconds


@contextmanager
def kept_server(settings: Settings, wanted: bool) -> Iterator[int | None]:
    """With `wanted`, a Spark Connect server for the bench's lake, which the runs' settings
    name while the block runs (its pid); else None, and each run's driver is this process's.
    """
    if not wanted:
        yield None
        return
    record = spark_connect.start(settings)
    os.environ.update(record.env)
    try:
        yield record.pid
    finally:
        stop(record)


def duckdb_runs(lake: Lake, out: Path, runs: int) -> Engine:
    """`bench.duckdb_reference` over the lake's landing into `out`, each run a process of
    its own (its memory is its own): a warm-up run (the page cache, the imports), then
    `runs` runs. Its time is the one it reports, its work without the interpreter's start."""
    engine = Engine("duckdb")
    command = [sys.executable, "-m", "bench.duckdb_reference", lake.root, str(out), DAY]
    for run in range(runs + 1):
        process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, text=True)
        with ProcessTree(process.pid) as usage:
            stdout, _ = process.communicate()
        if process.returncode != 0:
            raise SystemExit(f"the DuckDB reference failed (exit {process.returncode})")
        built = json.loads(stdout)
        engine.record(built["seconds"], usage, built["steps"], run == 0)
    return engine


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interval", type=float, default=1.0, help="reporting interval, s")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per engine (median)")
    parser.add_argument("--fresh", action="store_true", help="simulate the day again")
    parser.add_argument(
        "--spark-connect",
        action="store_true",
        help="Spark's runs on a Spark Connect server started for the bench (a kept session)",
    )
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="smartcity-batch-") as folder:
        settings = Settings(
            _env_file=None, lake_uri=Path(folder).as_uri(), runtime_dir=Path(folder) / "runtime"
        )
        os.environ.update(
            SMARTCITY_LAKE_URI=settings.lake_uri,
            SMARTCITY_RUNTIME_DIR=str(settings.runtime_dir),
        )
        os.environ.pop("DAGSTER_HOME", None)
        lake = Lake.from_settings(settings)
        started = time.perf_counter()
        rows, hit = landed_lake(lake, args.interval, args.fresh)
        how = "linked from the cache" if hit else "landed"
        print(f"{how}: {rows:,} readings in {time.perf_counter() - started:.1f} s")
        import_registry(lake, registry_table())  # the cached landing is linked, not its lake
        log = log_file(default_runtime_dir(), "bench-batch")
        with output_into(log), kept_server(settings, args.spark_connect) as server:
            spark = spark_runs(args.runs, server)
        how = "on a Spark Connect server" if server else "in this process's driver"
        runs = ", ".join(f"{run.seconds:.1f} s" for run in spark.runs)
        print(f"Spark runs ({how}): {runs}; log: {log}")
        reference = Path(folder) / "duckdb"
        duckdb = duckdb_runs(lake, reference, args.runs)
        report(rows, spark, duckdb, load_before)
        problems = compare(Path(lake.root), reference, DAY)
    if problems:
        print("\n".join(["OUTPUTS DIFFER:", *problems]))
        raise SystemExit("Spark and the DuckDB reference built different tables")
    print("outputs: every table the same, row for row (floats within 1e-9 relative)")


def report(rows: int, spark: Engine, duckdb: Engine, load_before: tuple[float, ...]) -> None:
    """Per step the median run's seconds, then per engine its figures, then the ratios."""
    print(f"{'step (median run)':28} {'spark s':>8} {'duckdb s':>9}")
    for step in spark.median.steps | duckdb.median.steps:
        times = [engine.median.steps.get(step) for engine in (spark, duckdb)]
        shown = [f"{t:.1f}" if t is not None else "-" for t in times]
        print(f"  {step:26} {shown[0]:>8} {shown[1]:>9}")
    print(
        f"{'engine':8} {'warm-up s':>9} {'median s':>9} {'rows/s':>11} {'CPU s':>7} "
        f"{'peak GB':>8}  runs s"
    )
    for engine in (spark, duckdb):
        median = engine.median
        runs = ", ".join(f"{run.seconds:.1f}" for run in engine.runs)
        print(
            f"{engine.name:8} {engine.warm_up_s:9.1f} {median.seconds:9.1f} "
            f"{rows / median.seconds:11,.0f} {median.cpu_s:7.0f} "
            f"{engine.peak_bytes / 1e9:8.2f}  [{runs}]"
        )
    loads = [" ".join(f"{a:.1f}" for a in load) for load in (load_before, os.getloadavg())]
    print(
        f"ratio spark/duckdb: time {spark.median.seconds / duckdb.median.seconds:.1f}x, "
        f"CPU {spark.median.cpu_s / duckdb.median.cpu_s:.1f}x, "
        f"peak memory {spark.peak_bytes / duckdb.peak_bytes:.1f}x "
        f"({os.cpu_count()} cores; load average 1/5/15 min before: {loads[0]}, "
        f"after: {loads[1]})"
    )


if __name__ == "__main__":
    main()
