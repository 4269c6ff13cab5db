"""`smartcity services up --cluster`: the deployment's topology on one machine, no Docker.

Three Kafka brokers in one KRaft quorum, MinIO, a Spark master with two workers whose
executors run their own Python, and PostgreSQL for Dagster. What needs nothing else starts
at once; the workers follow, since they need the master's address, the S3 keys and the
executor Python. Then the platform topics (replicated three times) and the bucket.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

from pydantic import SecretStr

from smartcity.lake import s3_filesystem
from smartcity.services import kafka_broker, manager, minio_server, postgres, spark_cluster
from smartcity.services.executor_python import executor_python
from smartcity.services.processes import ServiceRecord, ServiceRegistry
from smartcity.settings import Settings
from smartcity.topics import create_topics

FIRST = (*kafka_broker.MEMBER_NAMES, minio_server.NAME, postgres.NAME, spark_cluster.MASTER)
"""Started side by side: they need nothing from each other (the brokers wait for a quorum)."""
NAMES = (*FIRST, *spark_cluster.WORKER_NAMES)


class ClusterConflict(RuntimeError):
    """The runtime folder already runs the single-node broker, which the cluster replaces."""


def up(settings: Settings) -> dict[str, ServiceRecord]:
    """Start what of the cluster is not running, create topics and bucket; the records."""
    single = ServiceRegistry(settings.runtime_dir).load().get(kafka_broker.NAME)
    if single is not None and single.running:
        raise ClusterConflict(
            f"{settings.runtime_dir} runs the single-node Kafka broker: "
            "`smartcity services down` first, or use another SMARTCITY_RUNTIME_DIR"
        )
    with ThreadPoolExecutor(max_workers=1) as pool:
        python = pool.submit(executor_python)  # a pip install the first time: meanwhile, start
        records = manager.up(settings, FIRST)
        executor = str(python.result())
    reaching = client_settings(settings, manager.merged_env(records.values()))
    reaching = reaching.model_copy(update={"spark_executor_python": executor})
    records |= manager.up(reaching, spark_cluster.WORKER_NAMES)
    create_topics(reaching)
    s3_filesystem(reaching).create_dir(minio_server.DEFAULT_BUCKET)
    return records


def client_settings(base: Settings, env: Mapping[str, str]) -> Settings:
    """`base` pointed at the cluster whose variables are `env` (what `up` prints)."""
    return base.model_copy(
        update={
            "kafka_bootstrap": env["SMARTCITY_KAFKA_BOOTSTRAP"],
            "topic_replication": int(env["SMARTCITY_TOPIC_REPLICATION"]),
            "s3_endpoint": env["SMARTCITY_S3_ENDPOINT"],
            "s3_access_key": SecretStr(env["SMARTCITY_S3_ACCESS_KEY"]),
            "s3_secret_key": SecretStr(env["SMARTCITY_S3_SECRET_KEY"]),
            "spark_master": env["SMARTCITY_SPARK_MASTER"],
            **{
                field: env[variable]
                for field, variable in (
                    ("lake_uri", "SMARTCITY_LAKE_URI"),
                    ("spark_executor_python", "SMARTCITY_SPARK_EXECUTOR_PYTHON"),
                )
                if variable in env
            },
        }
    )
