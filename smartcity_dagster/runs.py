"""A date (or a range) through the daily pipeline in this process, the way every in-process
caller (the CLI, the class archive's exercise run, the tests) builds one."""

from __future__ import annotations

from typing import Any

import dagster as dg

from smartcity_dagster.assets.quality import sensor_registry
from smartcity_dagster.definitions import defs


def materialize_daily(
    instance: dg.DagsterInstance, partition_key: str | None, **run: Any
) -> dg.ExecuteInProcessResult:
    """The sensor registry first (unpartitioned: the clean steps join it), then the daily
    pipeline job for `partition_key`; `run` goes to `execute_in_process` (tags,
    raise_on_error)."""
    dg.materialize([sensor_registry], instance=instance, resources=defs.resources)
    job = defs.resolve_job_def("daily_pipeline")
    return job.execute_in_process(partition_key=partition_key, instance=instance, **run)
