"""The Spark driver's class archive (the JDK's class data sharing): Spark's classes read,
parsed and verified once per machine instead of at every start of a run.

A local run's driver JVM loads thousands of classes from Spark's jars, most of them on one
core before its first task; mapped from an archive that an earlier JVM wrote, they cost a
fraction of that (measured on 2 cores: the session up and a first job done in 6.3 s instead
of 13.0 s). The archive is written once per JDK, Spark version and jar set, by a JVM that
runs a small simulated day through the daily pipeline, so it holds the classes every step
loads (`smartcity services install --spark`, part of `make jvm`); `spark_config` names it
when it exists. The JVM checks an archive against its own version and classpath and starts
without it if they differ.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from importlib.metadata import entry_points
from pathlib import Path

from smartcity.services.jvm import CACHE_DIR, JvmSetupError, java_binary

EXERCISE_INTERVAL_S = 300.0
"""Every sensor every five minutes: 60,480 readings, enough for every code path of a step."""
EXIT_TIMEOUT_S = 300
SAMPLE_DATA = "smartcity.sample_data"
"""Entry points that land a sample day: (lake, start_ms, interval_s) -> readings landed."""


def archive_path() -> Path | None:
    """Where the archive for this JDK and Spark's jars is (or would be); None without Java."""
    import pyspark

    try:
        java = Path(java_binary()).resolve()
    except JvmSetupError:
        return None
    facts = [str(java), str(java.stat().st_mtime_ns), pyspark.__version__]
    for jar in sorted((Path(pyspark.__file__).parent / "jars").glob("*.jar")):
        facts.append(f"{jar.name} {jar.stat().st_size} {jar.stat().st_mtime_ns}")
    digest = hashlib.sha256("\n".join(facts).encode()).hexdigest()[:16]
    return CACHE_DIR / f"spark-driver-{pyspark.__version__}-{digest}.jsa"


def driver_options() -> list[str]:
    """The driver JVM's option that maps the archive, if it has been written."""
    archive = archive_path()
    return [f"-XX:SharedArchiveFile={archive}"] if archive and archive.exists() else []


def sample_day_producer() -> Callable[..., int]:
    """The installed producer of a landed sample day (the simulator's), which the platform
    finds by entry point instead of importing it."""
    found = entry_points(group=SAMPLE_DATA, name="day")
    if not found:
        raise JvmSetupError(f"no `{SAMPLE_DATA}` producer installed to exercise Spark with")
    return next(iter(found)).load()


def build_archive() -> Path:
    """Write the archive unless it exists: a child process runs the exercise day, and its
    JVM writes the archive under a scratch name as it exits; the name is then made final,
    so a reader never maps a half-written file."""
    archive = archive_path()
    if archive is None:
        raise JvmSetupError("java not found: install JDK 17+ or set JAVA_HOME")
    if archive.exists():
        return archive
    archive.parent.mkdir(parents=True, exist_ok=True)
    scratch = archive.with_name(f"{archive.stem}.{os.getpid()}.tmp")
    result = subprocess.run(
        [sys.executable, "-m", "smartcity_dagster.class_archive", str(scratch)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0 or not scratch.exists():
        scratch.unlink(missing_ok=True)
        output = (result.stdout + result.stderr)[-3000:]
        raise JvmSetupError(f"the Spark class archive was not written:\n{output}")
    scratch.replace(archive)
    return archive


def _exercise(target: Path) -> None:
    """Run a small simulated day through the daily pipeline on a Spark driver that writes
    its loaded classes to `target` when it exits, and let it exit."""
    import dagster as dg
    from pyspark import SparkContext
    from pyspark.sql import SparkSession

    from smartcity.lake import Lake
    from smartcity.settings import Settings
    from smartcity_dagster.runs import materialize_daily
    from smartcity_dagster.spark import LOCAL_DRIVER_JVM_OPTIONS, spark_config

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
        for key, value in spark_config(settings).items():
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
    _exercise(Path(sys.argv[1]))
