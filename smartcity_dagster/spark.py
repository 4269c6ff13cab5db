"""One Spark configuration for the whole batch layer, local or on a cluster.

Executors read and write the lake themselves: a local lake is a `file://` URL, an S3 lake an
`s3a://` URL through Hadoop's S3A connector (jars resolved by Maven), so no table's data
passes through the driver.

On a cluster the platform does not own, nothing of the project is installed where the
executors run: their Python (`SMARTCITY_SPARK_EXECUTOR_PYTHON`) has numpy, pandas and pyarrow
only. The driver sends them what a run needs: the project's code as one zip
(`spark.submit.pyFiles`, see `shipping`) and the S3A jars it resolved with Maven
(`spark.jars`), so no worker runs Maven or pip.
"""

from __future__ import annotations

import os
import socket
import sys
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from smartcity.lake import Lake
from smartcity.services.jvm import classpath
from smartcity.settings import Settings, SettingsError
from smartcity_dagster.class_archive import driver_options
from smartcity_dagster.shipping import code_zip

if TYPE_CHECKING:
    from pyspark.sql.connect.client.retries import RetryPolicy

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
    """Spark properties for `LazyPySparkResource`: a session of the kept Spark Connect server
    when SMARTCITY_SPARK_REMOTE names one, else a driver of this process's own.

    The server was started with `driver_config`, which every session it hands out inherits,
    so a remote run's properties are the address alone. Its token travels as the variable
    the Connect client reads, never as a property (Dagster's UI shows the properties); the
    client sends a token without TLS only to the host `localhost` (see `spark_connect`).
    """
    if settings.spark_remote is None:
        return driver_config(settings)
    check_connect_server(settings.spark_remote)
    if settings.spark_connect_token:
        os.environ[CONNECT_TOKEN_VARIABLE] = settings.spark_connect_token.get_secret_value()
    return {"spark.remote": settings.spark_remote}


CONNECT_TOKEN_VARIABLE = "SPARK_CONNECT_AUTHENTICATE_TOKEN"
"""Where a Spark Connect client and server take their shared token from."""


CONNECT_LONGEST_WAIT_MS = 5_000
"""Here a retry comes at most 5 s after the last (the default's 60 s): a server back from a
restart is found within seconds, while the patience bounds the whole wait."""


def connect_retry_policy(patience_s: float) -> RetryPolicy:
    """Spark Connect's default retry policy (the same errors retried, the same backoff from
    50 ms, four times longer each), its waits capped at `CONNECT_LONGEST_WAIT_MS` and given up
    after as many retries as add up to `patience_s` without jitter (which adds at most half a
    second to a wait of 2 s or more): the default's 15 retries wait through at least ten
    minutes of an unreachable server, and so long a run that had lost its server hung before
    its step failed. The retries are counted on the policy's own state, not a copy of it."""
    from pyspark.sql.connect.client.retries import DefaultPolicy

    backoff = DefaultPolicy(max_retries=None, jitter=0, max_backoff=CONNECT_LONGEST_WAIT_MS)
    waits = backoff.to_state()
    waited_ms, retries = 0, 0
    while waited_ms < patience_s * 1000:
        waited_ms += waits.next_attempt() or 0
        retries += 1
    return DefaultPolicy(max_retries=retries, max_backoff=CONNECT_LONGEST_WAIT_MS)


def driver_config(settings: Settings) -> dict[str, str]:
    """Spark properties of a driver; small-machine defaults, UTC, zstd.

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
        # Once a stage turns out empty, this rule replaces the plan above it with an empty
        # relation, and the metrics observed below it (the clean step's counts, which the
        # no-loss check adds up) are never reported: a day without a clean row would fail.
        "spark.sql.adaptive.optimizer.excludedRules": (
            "org.apache.spark.sql.execution.adaptive.AQEPropagateEmptyRelation"
        ),
        # Up to this many groups per task, aggregates with object buffers (the traffic
        # speeds of an hour) stay in a hash map; Spark's default of 128 sorts a day's rows
        # once a task has seen 128 sensor-hours.
        "spark.sql.objectHashAggregate.sortBased.fallbackThreshold": "8192",
        # The driver lists a day's landing files itself and names each one to the reader
        # (`transforms.raw`), and a day has at least one per hour and Kafka partition (72
        # with 3 partitions). Past Spark's default of 32 paths, Spark checks the names in a
        # job of one task per file: 1-1.6 s per type on a small day, where the driver's own
        # look-up of the same files takes milliseconds (a request per file on S3).
        "spark.sql.sources.parallelPartitionDiscovery.threshold": "1024",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
    }
    if on_loopback(settings.spark_master):
        # Local mode, or a cluster on this machine: the driver listens and advertises on
        # loopback only, so no traffic of a run leaves the machine. A master elsewhere (a
        # compose service, another host) needs a driver its executors can reach, which is
        # Spark's default: the host's own name.
        config["spark.driver.host"] = "127.0.0.1"
        config["spark.driver.bindAddress"] = "127.0.0.1"
    if settings.spark_master.startswith("local"):
        # Python workers must be this interpreter (the project's venv: local mode ships no
        # code), which Spark only takes from the environment; whatever PYSPARK_PYTHON the
        # shell holds (a cluster's executors' Python, set by a run on the cluster before)
        # would not import the project.
        os.environ["PYSPARK_PYTHON"] = sys.executable
        config["spark.sql.shuffle.partitions"] = str(os.cpu_count() or 2)
        config["spark.driver.extraJavaOptions"] = " ".join(
            [LOCAL_DRIVER_JVM_OPTIONS, *driver_options()]
        )
        # Sort and shuffle pages off the heap: the collector no longer copies or scans
        # a day's sort buffers (GC threads: about 10 CPU-s of a bench run down to 3).
        config["spark.memory.offHeap.enabled"] = "true"
        config["spark.memory.offHeap.size"] = settings.spark_offheap_memory
    else:
        config.update(_cluster_config(settings))
    if urlsplit(settings.lake_uri).scheme == "s3":
        config.update(_s3a_config(settings))
    return config


ANSWER_TIMEOUT_S = 5.0
"""How long the definitions wait for a cluster's master or a Connect server to accept a
connection before they stop: Spark itself would retry for minutes (the Connect client for its
patience, `SMARTCITY_SPARK_CONNECT_PATIENCE_S`)."""


def _cluster_config(settings: Settings) -> dict[str, str]:
    """A cluster's executors: their Python and the project's code, shipped from here.

    The settings are checked first, each failure one line that names its variable:
    executors without a Python, a master that does not answer.
    """
    master = settings.spark_master
    if not settings.spark_executor_python:
        raise SettingsError(
            f"SMARTCITY_SPARK_EXECUTOR_PYTHON is not set: the executors of {master} need a "
            "Python 3.11 with numpy, pandas and pyarrow"
        )
    check_master(master)
    # pyspark names the Python of every task it sends after the driver's PYSPARK_PYTHON (a
    # driver started from Python reads no property for it); the property says the same to
    # spark-submit and to whoever reads the configuration.
    os.environ["PYSPARK_PYTHON"] = settings.spark_executor_python
    code = str(code_zip())
    config = {
        "spark.pyspark.python": settings.spark_executor_python,
        # Served by the driver to each executor and put first on its Python workers' path.
        "spark.submit.pyFiles": code,
    }
    if settings.spark_cores_max:
        # A standalone master gives an application every free core by default, so a second
        # concurrent run would wait for the first to finish.
        config["spark.cores.max"] = str(settings.spark_cores_max)
    return config


def on_loopback(master: str) -> bool:
    """Whether `master` is local mode or a standalone master on a loopback address."""
    if master.startswith("local"):
        return True
    hosts = [address.rpartition(":")[0] for address in urlsplit(master).netloc.split(",")]
    return all(host in LOOPBACK_HOSTS or host.startswith("127.") for host in hosts)


LOOPBACK_HOSTS = {"localhost", "::1", "[::1]"}


def check_master(master: str) -> None:
    """Raise a one-line `SettingsError` unless a master of `master` (spark://host:port,
    several comma-separated for a standby master) accepts a connection."""
    parts = urlsplit(master)
    if parts.scheme != "spark":
        return  # YARN or Kubernetes: their own clients report an unreachable cluster
    if not any(_answers(address) for address in parts.netloc.split(",")):
        raise SettingsError(f"SMARTCITY_SPARK_MASTER {master}: no Spark master answers there")


CONNECT_PORT = 15002
"""Where a Connect address without a port points (Spark's default)."""


def check_connect_server(remote: str) -> None:
    """Raise a one-line `SettingsError` unless the Connect server at `remote` (sc://host:port)
    accepts a connection."""
    parts = urlsplit(remote)
    if not _answers(f"{parts.hostname}:{parts.port or CONNECT_PORT}"):
        raise SettingsError(
            f"SMARTCITY_SPARK_REMOTE {remote}: no Spark Connect server answers there (start "
            "one with `smartcity services up --spark`)"
        )


def _answers(address: str) -> bool:
    """Whether `address` (host:port) accepts a connection within `ANSWER_TIMEOUT_S`."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=ANSWER_TIMEOUT_S):
            return True
    except (OSError, ValueError):
        return False


ENV_CREDENTIALS = "software.amazon.awssdk.auth.credentials.EnvironmentVariableCredentialsProvider"


def _s3a_config(settings: Settings) -> dict[str, str]:
    """S3A's endpoint and jars, and where it takes its keys from: the JVM's environment
    (`s3a_credentials_env`), never a Spark property, because the Spark properties are the
    pyspark resource's configuration, which Dagster's UI and GraphQL show."""
    if not (s3a_credentials_env(settings) or os.environ.keys() >= CREDENTIAL_VARIABLES):
        raise SettingsError(
            f"SMARTCITY_S3_ACCESS_KEY and SMARTCITY_S3_SECRET_KEY are not set: the lake "
            f"{settings.lake_uri} needs them"
        )
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


CREDENTIAL_VARIABLES = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}


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
