"""One Spark configuration for the whole batch layer, local or on a cluster.

Executors read and write the lake themselves: a local lake is a `file://` URL, an S3 lake an
`s3a://` URL through Hadoop's S3A connector (jars resolved by Maven), so no table's data
passes through the driver.
"""

from __future__ import annotations

import os
import sys
from urllib.parse import urlsplit

from smartcity.lake import Lake
from smartcity.services.jvm import classpath
from smartcity.settings import Settings
from smartcity_dagster.class_archive import driver_options

LOCAL_DRIVER_JVM_OPTIONS = " ".join(
    [
        # The driver runs the tasks: the throughput collector spends less CPU than the
        # default G1 on a batch of short-lived rows (about 9 % less JVM CPU time measured
        # for the clean step on 2 cores).
        "-XX:+UseParallelGC",
        # The optimising compiler waits for four times the default calls (or loop turns)
        # before it compiles a method. Per-row code reaches that in a fraction of a second;
        # the planner's and the codegen compiler's merely warm code mostly never does. A
        # day's run: JIT threads 54 -> 37 CPU-s, the whole JVM 222 -> 182 CPU-s.
        "-XX:Tier4InvocationThreshold=20000",
        "-XX:Tier4MinInvocationThreshold=2400",
        "-XX:Tier4CompileThreshold=60000",
        "-XX:Tier4BackEdgeThreshold=160000",
    ]
)


def spark_config(settings: Settings) -> dict[str, str]:
    """Spark properties for `LazyPySparkResource`; small-machine defaults, UTC, zstd.

    In local mode shuffles get one partition per core (not 200: a day's table is a few
    hundred MB, and each partition is a task and a part file), AQE may merge them further,
    and the JVM uses the parallel (throughput) garbage collector and maps Spark's classes
    from the class archive when one has been written (see `class_archive`);
    the Parquet reader stays vectorised and the writer uses zstd, as every lake writer does.
    """
    config = {
        "spark.master": settings.spark_master,
        "spark.app.name": "smartcity-batch",
        "spark.driver.memory": settings.spark_driver_memory,
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.parquet.compression.codec": "zstd",
        # Parquet's v2 pages (integers and times delta-encoded once a dictionary gives up):
        # measured on a day's energy table, 30 % smaller, about a tenth less CPU to write
        # and a third less to read.
        "spark.hadoop.parquet.writer.version": "v2",
        "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MILLIS",
        "spark.sql.parquet.enableVectorizedReader": "true",
        "spark.sql.adaptive.enabled": "true",
        "spark.sql.adaptive.coalescePartitions.enabled": "true",
        # Up to this many groups per task, aggregates with object buffers (the traffic
        # speed sketches) stay in a hash map; Spark's default of 128 sorts a day's rows
        # once a task has seen 128 sensor-hours.
        "spark.sql.objectHashAggregate.sortBased.fallbackThreshold": "8192",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
    }
    if settings.spark_master.startswith("local"):
        # Python workers must be this interpreter (the project's venv), which Spark only
        # takes from the environment.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        config["spark.sql.shuffle.partitions"] = str(os.cpu_count() or 2)
        config["spark.driver.extraJavaOptions"] = " ".join(
            [LOCAL_DRIVER_JVM_OPTIONS, *driver_options()]
        )
        # Sort and shuffle pages off the heap: the collector no longer copies or scans
        # a day's sort buffers (GC threads: about 10 CPU-s of a bench run down to 3).
        config["spark.memory.offHeap.enabled"] = "true"
        config["spark.memory.offHeap.size"] = settings.spark_offheap_memory
        config["spark.driver.host"] = "127.0.0.1"
        config["spark.driver.bindAddress"] = "127.0.0.1"
    if urlsplit(settings.lake_uri).scheme == "s3":
        config.update(_s3a_config(settings))
    return config


ENV_CREDENTIALS = "software.amazon.awssdk.auth.credentials.EnvironmentVariableCredentialsProvider"


def _s3a_config(settings: Settings) -> dict[str, str]:
    """S3A's endpoint and jars, and where it takes its keys from: the JVM's environment
    (`s3a_credentials_env`), never a Spark property, because the Spark properties are the
    pyspark resource's configuration, which Dagster's UI and GraphQL show."""
    endpoint = urlsplit(settings.s3_endpoint) if settings.s3_endpoint else None
    config = {
        "spark.jars": classpath("spark-s3a").replace(os.pathsep, ","),
        "spark.hadoop.fs.s3a.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
        "spark.hadoop.fs.s3a.path.style.access": "true",
        "spark.hadoop.fs.s3a.endpoint.region": settings.s3_region,
        # Only the environment: S3A's default chain would also try the instance metadata
        # service, which off a cloud VM costs a timeout before a missing key is reported.
        "spark.hadoop.fs.s3a.aws.credentials.provider": ENV_CREDENTIALS,
    }
    if endpoint:
        config["spark.hadoop.fs.s3a.endpoint"] = f"{endpoint.scheme}://{endpoint.netloc}"
        config["spark.hadoop.fs.s3a.connection.ssl.enabled"] = str(endpoint.scheme == "https")
    os.environ.update(s3a_credentials_env(settings))
    return config


def s3a_credentials_env(settings: Settings) -> dict[str, str]:
    """The AWS SDK's variables for the platform's S3 keys. The driver JVM, which pyspark
    starts from this process, inherits them, and so do the executors of local mode (they
    run in it). A cluster's executors take them from the environment their worker was
    started with: `spark.executorEnv.*` would put the keys back into the Spark properties."""
    if not (settings.s3_access_key and settings.s3_secret_key):
        return {}
    return {
        "AWS_ACCESS_KEY_ID": settings.s3_access_key.get_secret_value(),
        "AWS_SECRET_ACCESS_KEY": settings.s3_secret_key.get_secret_value(),
    }


def spark_url(lake: Lake, key: str) -> str:
    """The URL under which Spark's executors reach `key` of the lake."""
    path = lake.path(key)
    return f"file://{path}" if lake.is_local else f"s3a://{path}"
