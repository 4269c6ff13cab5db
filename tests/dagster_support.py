"""Running the Dagster definitions in-process against a test's settings."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

import dagster as dg
import pytest

from smartcity.settings import Settings
from tests.stream_support import worker_env


@contextmanager
def smartcity_env(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> Iterator[None]:
    """`SMARTCITY_*` of `settings` in this process (the resources read them at run time)."""
    for name in [n for n in os.environ if n.startswith("SMARTCITY_")]:
        monkeypatch.delenv(name)
    for name, value in worker_env(settings).items():
        if name.startswith("SMARTCITY_"):
            monkeypatch.setenv(name, value)
    yield


def dagster_home(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    with resources.as_file(resources.files("smartcity_dagster").joinpath("dagster.yaml")) as f:
        shutil.copyfile(f, path / "dagster.yaml")
    return path


def materialize_day(day: str, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    from smartcity_dagster.assets.quality import sensor_registry
    from smartcity_dagster.definitions import defs

    dg.materialize([sensor_registry], instance=instance, resources=defs.resources)
    job = defs.resolve_job_def("daily_pipeline")
    return job.execute_in_process(partition_key=day, instance=instance, raise_on_error=False)
