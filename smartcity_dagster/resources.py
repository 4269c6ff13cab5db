"""Resources of the batch layer, configured once from the platform's settings.

The environment switch lives here and only here: the lake URI decides local folder or S3
(and then Dagster gets dagster-aws's `S3Resource` for the same endpoint), the Spark master
decides local mode or a cluster. A cluster's settings are checked here, when the definitions
load (`spark_config`): a master that does not answer, or executors without a Python, stops
`smartcity materialize` with one line before any run starts.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

import dagster as dg
from dagster_pyspark import LazyPySparkResource
from pydantic import PrivateAttr

from smartcity.lake import Lake
from smartcity.settings import Settings, load_settings
from smartcity_dagster.spark import connect_retry_policy, spark_config


class SmartcityResource(dg.ConfigurableResource):
    """The platform's settings and lake, read from `SMARTCITY_*` when the run starts."""

    @cached_property
    def settings(self) -> Settings:
        return load_settings()

    @cached_property
    def lake(self) -> Lake:
        return Lake.from_settings(self.settings)


class SparkResource(LazyPySparkResource):
    """The pyspark resource. A Spark Connect session (when the configuration names a server)
    stops retrying a server that stays unreachable for `connect_patience_s`, so that a run
    that lost its server fails its step instead of waiting ten minutes or more; and it is
    stopped when the run ends: the client closed, no request of it (a release of a finished
    query, each retried for as long again) holds the process back from exiting."""

    connect_patience_s: float
    _connect_session: Any = PrivateAttr(default=None)

    @property
    def spark_session(self) -> Any:
        session = super().spark_session
        if "spark.remote" in self.spark_config and self._connect_session is None:
            session.client.set_retry_policies([connect_retry_policy(self.connect_patience_s)])
            self._connect_session = session
        return session

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        """The session released on the server (at most `RELEASE_PATIENCE_S` of retries: the
        server drops an abandoned session after its own timeout) and its client closed."""
        if self._connect_session is not None:
            self._connect_session.client.set_retry_policies(
                [connect_retry_policy(RELEASE_PATIENCE_S)]
            )
            self._connect_session.stop()


RELEASE_PATIENCE_S = 5.0


def build_resources(settings: Settings | None = None) -> dict[str, Any]:
    settings = settings or load_settings()
    resources: dict[str, Any] = {
        "smartcity": SmartcityResource(),
        "pyspark": SparkResource(
            spark_config=spark_config(settings),
            connect_patience_s=settings.spark_connect_patience_s,
        ),
    }
    if settings.lake_scheme == "s3":
        # Here, not at the top: dagster-aws (boto3, its components) takes about a second to
        # import, which every run's process and command would pay for a lake without S3.
        from dagster_aws.s3 import S3Resource

        resources["s3"] = S3Resource(
            endpoint_url=settings.s3_endpoint,
            region_name=settings.s3_region,
            aws_access_key_id=dg.EnvVar("SMARTCITY_S3_ACCESS_KEY"),
            aws_secret_access_key=dg.EnvVar("SMARTCITY_S3_SECRET_KEY"),
        )
    return resources
