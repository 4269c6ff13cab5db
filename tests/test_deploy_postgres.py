"""The deployment's Dagster instance (dagster-postgres) against a real PostgreSQL server.

The test starts Debian's PostgreSQL as `services up --cluster` does, in a temporary folder
on a free loopback port, points the deployment's own instance (`dagster-deployment.yaml`)
at it, materializes a date partition and reads the run and its materializations back from
PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from smartcity.services.postgres import deployment_home
from tests.dagster_support import materialize_day, smartcity_env
from tests.postgres_support import postgres_server

pytestmark = pytest.mark.integration

DAY = "2026-11-27"


@pytest.fixture
def postgres() -> Iterator[dict[str, str]]:
    with postgres_server() as server:
        yield server


def test_a_partition_materialized_on_the_deployment_instance(
    two_day_landing, postgres: dict[str, str], tmp_path: Path
) -> None:
    settings, _ = two_day_landing
    home = deployment_home(tmp_path / "dagster")
    with pytest.MonkeyPatch.context() as monkeypatch, smartcity_env(monkeypatch, settings):
        for name, value in {
            "DAGSTER_HOME": str(home),
            **postgres,
            "DAGSTER_MAX_CONCURRENT_RUNS": "1",
        }.items():
            monkeypatch.setenv(name, value)
        with dg.DagsterInstance.get() as instance:
            assert type(instance.run_storage).__name__ == "PostgresRunStorage"
            assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
            result = materialize_day(DAY, instance)
            assert result.success
            run = instance.get_run_by_id(result.run_id)
            assert run is not None and run.status == dg.DagsterRunStatus.SUCCESS
            assert run.tags["dagster/partition"] == DAY
            records = instance.fetch_materializations(dg.AssetKey("clean_traffic"), limit=5)
            assert [r.partition_key for r in records.records] == [DAY]
            checks = instance.event_log_storage.get_asset_check_execution_history(
                dg.AssetCheckKey(dg.AssetKey("clean_traffic"), "contract_schema"), limit=5
            )
            assert checks and checks[0].run_id == result.run_id
