"""The deployment's Dagster instance (dagster-postgres) against a real PostgreSQL server.

The test starts Debian's PostgreSQL in a temporary folder on a free loopback port, points
the deployment's own `docker/dagster/dagster.yaml` at it, materializes a date partition and
reads the run and its materializations back from PostgreSQL.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from smartcity.services.processes import free_port
from tests.dagster_support import materialize_day, smartcity_env

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]
DAY = "2026-11-27"


def _as_postgres(*command: str) -> list[str]:
    """Run as the `postgres` user when root (PostgreSQL refuses to run as root)."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else list(command)


@pytest.fixture
def postgres() -> Iterator[int]:
    binaries = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    assert binaries, "PostgreSQL is not installed: `make postgresql` installs it"
    bin_dir = Path(binaries[-1])
    folder = Path(tempfile.mkdtemp(prefix="smartcity-pg-"))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    data, port = folder / "data", free_port()
    subprocess.run(
        _as_postgres(str(bin_dir / "initdb"), "-D", str(data), "-U", "dagster", "--auth=trust"),
        check=True,
        capture_output=True,
    )
    subprocess.run(
        _as_postgres(
            str(bin_dir / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(folder / "log"),
            "-w",
            "-o",
            f"-p {port} -k {folder} -c listen_addresses=127.0.0.1",
            "start",
        ),
        check=True,
        capture_output=True,
    )
    try:
        deadline = time.monotonic() + 30
        while (
            subprocess.run(
                [str(bin_dir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)],
                capture_output=True,
            ).returncode
            != 0
        ):
            assert time.monotonic() < deadline, "PostgreSQL did not start"
            time.sleep(0.5)
        yield port
    finally:
        subprocess.run(
            _as_postgres(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"),
            capture_output=True,
        )
        shutil.rmtree(folder, ignore_errors=True)


def test_a_partition_materialized_on_the_deployment_instance(
    two_day_landing, postgres: int, tmp_path: Path
) -> None:
    settings, _ = two_day_landing
    home = tmp_path / "dagster"
    home.mkdir()
    shutil.copyfile(REPO / "docker" / "dagster" / "dagster.yaml", home / "dagster.yaml")
    with pytest.MonkeyPatch.context() as monkeypatch, smartcity_env(monkeypatch, settings):
        for name, value in {
            "DAGSTER_HOME": str(home),
            "DAGSTER_PG_HOST": "127.0.0.1",
            "DAGSTER_PG_PORT": str(postgres),
            "DAGSTER_PG_DB": "postgres",
            "DAGSTER_PG_USER": "dagster",
            "DAGSTER_PG_PASSWORD": "unused-with-trust",
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
