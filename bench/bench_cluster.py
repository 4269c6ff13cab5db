"""The day's build on one machine against the standalone cluster of `services up --cluster`.

The demo's day (the 210 sensors every 60 s, 302,400 readings) is landed once (cached like the
batch bench's days), then `smartcity materialize --date DAY` runs as a user runs it, cold
JVM included, in three set-ups: Spark `local[*]` on a lake folder, `local[*]` on MinIO, and
the 2-worker standalone cluster on MinIO, whose executors run a Python without the project
(the driver ships the code). The middle one separates the object store's share from the
cluster's. Prints the median of `--runs` per set-up and the ratios. Starts the cluster under
`.runtime/bench-cluster` unless it runs there already, and stops what it started.
Run: `make bench` or `python -m bench.bench_cluster [--runs 3]`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from bench.bench_batch import DAY, landed_lake
from simulator.registry import registry_table
from smartcity.lake import Lake, s3_filesystem
from smartcity.registry import import_registry
from smartcity.services import cluster, manager
from smartcity.settings import Settings, settings_env

INTERVAL_S = 60.0
RUNTIME = Path(__file__).resolve().parents[1] / ".runtime" / "bench-cluster"
SMARTCITY = str(Path(sys.executable).parent / "smartcity")


def materialize_s(settings: Settings, runtime: Path) -> float:
    """Wall time of `smartcity materialize --date DAY` with `settings` as its environment (no
    variable of this process's own that would override them)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SMARTCITY_", "AWS_"))}
    env.pop("DAGSTER_HOME", None)
    env |= settings_env(settings.model_copy(update={"runtime_dir": runtime}))
    started = time.perf_counter()
    done = subprocess.run(
        [SMARTCITY, "materialize", "--date", DAY], env=env, capture_output=True, text=True
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"materialize failed on {settings.spark_master}:\n{done.stderr[-3000:]}")
    return seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per set-up (the median)")
    args = parser.parse_args(argv)
    base = Settings(_env_file=None, runtime_dir=RUNTIME)
    running = {status.name for status in manager.status(base) if status.running}
    started_here = not set(cluster.NAMES) <= running
    records = cluster.up(base)
    reaching = cluster.client_settings(base, manager.merged_env(records.values()))
    try:
        with tempfile.TemporaryDirectory(prefix="smartcity-cluster-bench-") as folder:
            local = Settings(_env_file=None, lake_uri=Path(folder).joinpath("lake").as_uri())
            lake = Lake.from_settings(local)
            rows, _ = landed_lake(lake, INTERVAL_S, fresh=False)
            import_registry(lake, registry_table())
            bucket = f"bench-{uuid.uuid4().hex[:8]}"
            s3_filesystem(reaching).create_dir(bucket)
            remote = reaching.model_copy(update={"lake_uri": f"s3://{bucket}/lake"})
            lake.copy_into(Lake.from_settings(remote))
            setups = {
                "local[*], lake folder": local,
                "local[*], MinIO": remote.model_copy(
                    update={"spark_master": "local[*]", "spark_executor_python": None}
                ),
                "standalone, 2 workers, MinIO": remote,
            }
            times = {
                name: [
                    materialize_s(settings, Path(folder) / f"runtime-{n}-{run}")
                    for run in range(args.runs)
                ]
                for n, (name, settings) in enumerate(setups.items())
            }
            s3_filesystem(reaching).delete_dir_contents(bucket)
    finally:
        if started_here:
            manager.down(base)
    print(f"the demo's day, {rows:,} readings, `smartcity materialize` (median of {args.runs}):")
    reference = statistics.median(times["local[*], lake folder"])
    for name, seconds in times.items():
        median = statistics.median(seconds)
        each = " / ".join(f"{s:.1f}" for s in seconds)
        print(f"  {name:30} {median:6.1f} s ({each}), {median / reference:.2f}x local[*]")
    print(f"on {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
