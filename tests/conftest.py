"""Session fixtures: the real Kafka broker and S3 server, started once per test run.

If `SMARTCITY_KAFKA_BOOTSTRAP` and `SMARTCITY_S3_ENDPOINT` point at running services, the
tests use those; otherwise the fixtures start them in `.runtime/test-services` and stop
them at the end. Each run isolates itself with a unique topic prefix and bucket.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from smartcity.services import kafka_broker, manager, minio_server
from smartcity.settings import Settings
from smartcity.topics import create_topics
from tests.stream_support import BACKFILL_BEHIND_S, for_this_run

REPO = Path(__file__).resolve().parents[1]
pytest_plugins = (  # session fixtures, registered once
    "tests.api_support",
    "tests.mqtt_support",
    "tests.cluster_support",
)


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A `Settings` that reaches a running broker and S3 server (ours or the caller's)."""
    if os.environ.get("SMARTCITY_KAFKA_BOOTSTRAP") and os.environ.get("SMARTCITY_S3_ENDPOINT"):
        yield Settings(
            _env_file=None,
            runtime_dir=tmp_path_factory.mktemp("runtime"),
            event_time_behind_s=BACKFILL_BEHIND_S,
        )
        return
    runtime = REPO / ".runtime" / "test-services"
    base = Settings(_env_file=None, runtime_dir=runtime)
    names = [kafka_broker.NAME, minio_server.NAME]
    running = {status.name for status in manager.status(base) if status.running}
    shared = set(names) <= running  # another test session started them and stops them
    records = manager.up(base, names)
    env = {key: value for record in records.values() for key, value in record.env.items()}
    try:
        yield Settings(
            _env_file=None,
            runtime_dir=runtime,
            kafka_bootstrap=env["SMARTCITY_KAFKA_BOOTSTRAP"],
            s3_endpoint=env["SMARTCITY_S3_ENDPOINT"],
            s3_access_key=env["SMARTCITY_S3_ACCESS_KEY"],
            s3_secret_key=env["SMARTCITY_S3_SECRET_KEY"],
            event_time_behind_s=BACKFILL_BEHIND_S,
        )
    finally:
        if not shared:
            manager.down(base)


@pytest.fixture(scope="session")
def live_settings(services: Settings) -> Settings:
    """The services with this run's own topic prefix and bucket; topics and bucket created."""
    return for_this_run(services)


@pytest.fixture(scope="session")
def two_day_landing(live_settings: Settings, tmp_path_factory: pytest.TempPathFactory):
    """Readings across 2026-11-26 22:00 .. 2026-11-27 02:00 UTC landed by the real worker into
    a local-folder lake (Spark in local mode reads it), with faults on."""
    from tests.stream_support import produce_simulation, start_worker

    lake_dir = tmp_path_factory.mktemp("lake")
    settings = live_settings.model_copy(
        update={"topic_prefix": f"{live_settings.topic_prefix}dg.", "lake_uri": lake_dir.as_uri()}
    )
    create_topics(settings)
    produced = produce_simulation(
        settings,
        steps=240,
        interval_ms=60_000,
        start_ms=1_795_730_400_000,
        faults="duplicate=0.01,malformed=0.005,out_of_range=0.005,late=0.005",
    )
    worker = start_worker(settings, "--until-idle", "5")
    _, stderr = worker.communicate(timeout=600)
    assert worker.returncode == 0, stderr.decode()[-2000:]
    return settings, produced
