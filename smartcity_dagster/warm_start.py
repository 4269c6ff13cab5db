"""The Spark session of an in-process run, started while the caller still has other work.

A local driver's JVM takes seconds to start and its first job seconds more (classes loaded,
the planner and code generator interpreted until they are compiled): on the demo's
ten-minute day that was most of the first asset's time. A caller that knows a run is coming
(`smartcity demo`, while the stream worker lands the day) starts the session here, in a
thread, and waits for it just before the run; the run's `LazyPySparkResource` then finds
the session already there (`SparkSession.builder.getOrCreate` returns the active one), with
the same configuration, since both come from `spark_config` of the same settings.
"""

from __future__ import annotations

import tempfile
import threading

from smartcity.settings import Settings

WARM_UP_ROWS = 10_000
"""A first job over a few rows: the planner, the code generator, a shuffle and Parquet's
writer and reader run once."""


class SparkWarmStart:
    """Starts the session in a daemon thread (a Ctrl-C meanwhile does not wait for it);
    `wait` returns once it is up, and raises what starting it raised."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._start, name="spark-warm-start", daemon=True)
        self._thread.start()

    def _start(self) -> None:
        try:
            # Imported here, in the thread: pyspark and Dagster take seconds to import too
            # (not the definitions: they read the run's settings from the environment).
            import dagster  # noqa: F401
            from dagster_pyspark.resources import spark_session_from_config

            from smartcity_dagster.spark import spark_config

            spark = spark_session_from_config(spark_config(self._settings))
            numbers = spark.range(WARM_UP_ROWS)
            with tempfile.TemporaryDirectory(prefix="smartcity-warm-start-") as folder:
                counts = numbers.groupBy((numbers.id % 7).alias("k")).count()
                counts.write.parquet(folder, "overwrite")
                spark.read.parquet(folder).collect()
        except BaseException as error:  # re-raised in the caller's thread by `wait`
            self._error = error

    def wait(self) -> None:
        self._thread.join()
        if self._error is not None:
            raise self._error
