"""The demo's warm start: a Spark session made in a thread of its own is the one the run
finds and the one the demo stops at its end (left running, its JVM is killed under it and
pyspark's threads print tracebacks after the quiet console has given the terminal back); and
once it is stopped and its JVM killed, Java objects that Python frees send nothing to the dead
JVM (py4j logs each such try, an error when the JVM's end resets the connection), while a new
session still starts."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.integration

SCRIPT = textwrap.dedent(
    """
    import gc
    import logging
    import time

    from pyspark.errors import PySparkRuntimeError
    from pyspark.sql import SparkSession

    from smartcity.demo import stop_leftovers, stop_spark
    from smartcity.settings import Settings
    from smartcity_dagster.warm_start import SparkWarmStart

    logging.basicConfig(level=logging.INFO)
    SparkWarmStart(Settings(_env_file=None)).wait()
    found = SparkSession.builder.getOrCreate()
    print("same session:", found is SparkSession.active())
    frames = [found.range(10).selectExpr(f"id + {i} AS v") for i in range(20)]
    del frames[:10]
    gc.collect()
    time.sleep(1)
    stop_spark()
    try:
        SparkSession.active()
        print("stopped: no")
    except PySparkRuntimeError:
        print("stopped: yes")
    stop_leftovers()
    del frames, found
    gc.collect()
    time.sleep(1)
    again = SparkSession.builder.master("local[1]").getOrCreate()
    print("a new session counts:", again.range(3).count())
    again.stop()
    """
)


def test_the_warm_session_is_the_runs_and_once_stopped_nothing_reaches_its_dead_jvm() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines()[-3:] == [
        "same session: True",
        "stopped: yes",
        "a new session counts: 3",
    ], done.stdout
    assert "Exception while sending command" not in done.stderr, done.stderr[-3000:]
