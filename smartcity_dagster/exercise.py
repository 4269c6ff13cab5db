"""The class archive's exercise run (`python -m smartcity_dagster.exercise TARGET`): a small
simulated day through the daily pipeline on a Spark driver that writes the classes it
loaded to TARGET when it exits (see `class_archive`)."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from importlib.metadata import entry_points
from pathlib import Path

import dagster as dg
from pyspark import SparkContext
from pyspark.sql import SparkSession

from smartcity.lake import Lake
from smartcity.services.jvm import JvmSetupError
from smartcity.settings import Settings
from smartcity_dagster.runs import materialize_daily
from smartcity_dagster.spark import LOCAL_DRIVER_JVM_OPTIONS, driver_config

EXERCISE_INTERVAL_S = 300.0
"""Every sensor every five minutes: 60,480 readings, enough for every code path of a step."""
EXIT_TIMEOUT_S = 300
SAMPLE_DATA = "smartcity.sample_data"
"""Entry points that land a sample day: (lake, start_ms, interval_s) -> readings landed."""


def sample_day_producer() -> Callable[..., int]:
    """The installed producer of a landed sample day (the simulator's), which the platform
    finds by entry point instead of importing it."""
    found = entry_points(group=SAMPLE_DATA, name="day")
    if not found:
        raise JvmSetupError(f"no `{SAMPLE_DATA}` producer installed to exercise Spark with")
    return next(iter(found)).load()


def exercise(target: Path) -> None:
    """Run a small simulated day through the daily pipeline on a Spark driver that writes
    its loaded classes to `target` when it exits, and let it exit."""
    land_sample_day = sample_day_producer()

    with tempfile.TemporaryDirectory(prefix="smartcity-class-archive-") as folder:
        settings = Settings(
            _env_file=None, lake_uri=Path(folder).as_uri(), runtime_dir=Path(folder) / "runtime"
        )
        os.environ.update(
            SMARTCITY_LAKE_URI=settings.lake_uri, SMARTCITY_RUNTIME_DIR=str(settings.runtime_dir)
        )
        day = settings.partitions_start
        start = datetime.fromisoformat(day).replace(tzinfo=UTC)
        lake = Lake.from_settings(settings)
        land_sample_day(lake, int(start.timestamp() * 1000), EXERCISE_INTERVAL_S)
        builder = SparkSession.builder
        for key, value in driver_config(settings).items():
            if key == "spark.driver.extraJavaOptions":
                value = f"{LOCAL_DRIVER_JVM_OPTIONS} -XX:ArchiveClassesAtExit={target}"
            builder = builder.config(key, value)
        spark = builder.getOrCreate()
        with dg.DagsterInstance.ephemeral() as instance:
            materialize_daily(instance, day)
        driver = SparkContext._gateway.proc
        spark.stop()
        driver.stdin.close()
        driver.wait(timeout=EXIT_TIMEOUT_S)


if __name__ == "__main__":
    exercise(Path(sys.argv[1]))
