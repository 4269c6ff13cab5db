"""Batch layer throughput: one simulated day landed, then raw -> clean -> aggregates on Spark.

The day (default: the 210 sensors reporting every second, 18.1 million readings) is landed
with the stream worker's own landing code (one file per hour and type), then the Dagster
assets run in process for that date. In the same run DuckDB does the same deduplication and
daily aggregates over the same landing files, as the reference. Prints rows/s and wall time
per asset and the ratio. Run: `make bench` or `python -m bench.bench_batch [--interval 1]`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import duckdb

from bench.bench_simulator import START_MS
from simulator.landed_day import land_simulated_day
from simulator.registry import registry_table
from smartcity.lake import Lake
from smartcity.layout import landing_dir
from smartcity.registry import import_registry
from smartcity.settings import SENSOR_TYPES, Settings

DAY = "2026-11-27"
CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "smartcity" / "bench"


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


def duckdb_reference(lake: Lake) -> float:
    """Dedup by (sensor_id, seq) and per-sensor daily aggregates, as DuckDB does them."""
    started = time.perf_counter()
    db = duckdb.connect()
    for sensor_type, measure in (
        ("traffic", "sum(vehicle_count), avg(average_speed_kmh)"),
        ("weather", "min(temperature_c), avg(temperature_c), max(temperature_c)"),
        ("energy", "max(energy_kwh) - min(energy_kwh), max(power_kw)"),
    ):
        folder = lake.path(landing_dir(sensor_type, DAY))
        db.sql(
            f"CREATE OR REPLACE TABLE clean_{sensor_type} AS SELECT * FROM "
            f"read_parquet('{folder}/*/*.parquet', hive_partitioning=false) QUALIFY "
            "row_number() OVER (PARTITION BY sensor_id, seq ORDER BY kafka_offset) = 1"
        )
        db.sql(
            f"SELECT sensor_id, date_trunc('hour', event_time), {measure} "
            f"FROM clean_{sensor_type} GROUP BY ALL"
        ).fetchall()
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interval", type=float, default=1.0, help="reporting interval, s")
    parser.add_argument("--fresh", action="store_true", help="simulate the day again")
    args = parser.parse_args(argv)
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
        spark_s, jvm_cpu_s, per_asset = spark_pipeline()
        reference_s = duckdb_reference(lake)
    for asset, (seconds, read) in per_asset.items():
        print(f"  {asset:28} {seconds:7.1f} s = {read / seconds:>10,.0f} rows/s")
    print(f"spark raw->clean->aggregates : {spark_s:7.1f} s = {rows / spark_s:>10,.0f} rows/s")
    print(
        f"spark JVM CPU time           : {jvm_cpu_s:7.1f} s on {os.cpu_count()} cores, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    print(
        f"duckdb dedup + aggregates    : {reference_s:7.1f} s = {rows / reference_s:>10,.0f} rows/s"
    )
    print(
        f"ratio                        : spark takes {spark_s / reference_s:.1f}x DuckDB's time "
        "(target: the day in < 90 s)"
    )


def spark_pipeline() -> tuple[float, float, dict[str, tuple[float, int]]]:
    """Wall time of the run, the Spark JVM's CPU time, and per asset its step's wall time and
    the rows of its type (what raw_<type> holds: each asset reads about that many)."""
    import dagster as dg

    from smartcity.settings import load_settings
    from smartcity_dagster.assets.quality import sensor_registry
    from smartcity_dagster.definitions import defs
    from smartcity_dagster.home import dagster_home

    dagster_home(load_settings())
    with dg.DagsterInstance.get() as instance:
        dg.materialize([sensor_registry], instance=instance, resources=defs.resources)
        selection = [f"{layer}_{t}" for layer in ("raw", "clean") for t in SENSOR_TYPES]
        selection += [f"daily_{t}_aggregates" for t in SENSOR_TYPES]
        job = defs.resolve_job_def("daily_pipeline")
        started = time.perf_counter()
        result = job.execute_in_process(
            partition_key=DAY,
            instance=instance,
            asset_selection=[dg.AssetKey(name) for name in selection],
        )
        total = time.perf_counter() - started
        jvm_cpu_s = spark_process_cpu_s()
        seconds: dict[str, float] = {}
        for entry in instance.all_logs(result.run_id):
            event = entry.dagster_event
            if event and event.event_type_value in ("STEP_START", "STEP_SUCCESS"):
                sign = -1 if event.event_type_value == "STEP_START" else 1
                step = event.step_key or "?"
                seconds[step] = seconds.get(step, 0.0) + sign * entry.timestamp
        rows = {}
        for event in result.get_asset_materialization_events():
            materialization = event.event_specific_data.materialization
            name = materialization.asset_key.to_user_string()
            if name.startswith("raw_"):
                rows[name.removeprefix("raw_")] = materialization.metadata[
                    "dagster/row_count"
                ].value
    per_asset = {
        step: (spent, rows[next(t for t in SENSOR_TYPES if t in step)])
        for step, spent in seconds.items()
    }
    return total, jvm_cpu_s, per_asset


def spark_process_cpu_s() -> float:
    """CPU time the run's Spark JVM has used since it started (its whole life is this run):
    unlike wall time it hardly depends on what else the machine runs, so it compares runs
    on a shared machine; on an idle one the wall time is at least this over the cores."""
    from pyspark import SparkContext

    process = SparkContext._gateway.jvm.java.lang.ProcessHandle.current()
    return process.info().totalCpuDuration().get().toMillis() / 1000


if __name__ == "__main__":
    main()
