"""A date (or a range) through the daily pipeline in this process, the way every in-process
caller (the CLI, the demo, the class archive's exercise run, the tests) builds one."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
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

    With `steps`, each step is reported there as it starts and ends (the pipeline's through
    a logger of its run, `dagster_loggers`); Dagster's detail goes to stderr either way."""
    job = defs.resolve_job_def(PIPELINE)
    registry: AbstractContextManager[None] = nullcontext()
    if steps is not None:
        loggers = dg.Definitions(loggers=dagster_loggers(steps))
        job = dg.Definitions.merge(defs, loggers).resolve_job_def(PIPELINE)
        steps.expect([REGISTRY, *(node.name for node in job.graph.nodes)])
        registry = steps.step(REGISTRY)
        run["run_config"] = {"loggers": LOGGERS_CONFIG}
    with registry:
        dg.materialize([sensor_registry], instance=instance, resources=defs.resources)
    result = job.execute_in_process(partition_key=partition_key, instance=instance, **run)
    if steps is not None:
        steps.not_run()
    return result
