"""A date (or a range) through the daily pipeline in this process, the way every in-process
caller (the CLI, the demo, the class archive's exercise run, the tests) builds one."""

from __future__ import annotations

from typing import Any

import dagster as dg

from smartcity_dagster.assets.quality import sensor_registry
from smartcity_dagster.console import LOGGERS_CONFIG, StepConsole, dagster_loggers
from smartcity_dagster.definitions import defs

PIPELINE = "daily_pipeline"
REGISTRY = sensor_registry.key.to_user_string()


def materialize_daily(
    instance: dg.DagsterInstance,
    partition_key: str | None,
    steps: StepConsole | None = None,
    **run: Any,
) -> dg.ExecuteInProcessResult:
    """The sensor registry first (unpartitioned: the clean steps join it), then the daily
    pipeline job for `partition_key`; `run` goes to `execute_in_process` (tags,
    raise_on_error).

    With `steps`, each step is reported there as it starts and ends, through a logger of the
    runs (`dagster_loggers`), which also takes Dagster's own lines; else those go to stderr."""
    registry = dg.Definitions(assets=[sensor_registry], resources=defs.resources)
    job = defs.resolve_job_def(PIPELINE)
    registry_run: dict[str, Any] = {}
    if steps is not None:
        loggers = dg.Definitions(loggers=dagster_loggers(steps))
        registry = dg.Definitions.merge(registry, loggers)
        job = dg.Definitions.merge(defs, loggers).resolve_job_def(PIPELINE)
        steps.expect([REGISTRY, *(node.name for node in job.graph.nodes)])
        run["run_config"] = registry_run["run_config"] = {"loggers": LOGGERS_CONFIG}
    registry.resolve_implicit_global_asset_job_def().execute_in_process(
        instance=instance, **registry_run
    )
    result = job.execute_in_process(partition_key=partition_key, instance=instance, **run)
    if steps is not None:
        steps.not_run()
    return result
