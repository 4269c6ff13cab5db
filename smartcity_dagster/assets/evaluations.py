"""One check evaluation per date, also when one run builds many dates.

`AssetCheckResult` has no partition of its own: Dagster 1.13 takes the run's partition key,
and a single-run backfill over a range has none, so every date's result would land on one
undated evaluation. The step therefore logs `AssetCheckEvaluation`s (public) with their
date, aimed at the date's newest materialization as `AssetCheckResult` would be (that is
what makes the date's status current in the UI and in GraphQL's `partitionStatuses`), and
then yields each selected check's output itself, which `AssetCheckResult` otherwise does.
The target's type and the check's output name are not in Dagster's top-level API: both are
used here only, and `tests/test_dagster_publish.py` fails if either stops working.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import dagster as dg
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData,
)


def _target(
    instance: dg.DagsterInstance, asset: dg.AssetKey, day: str
) -> AssetCheckEvaluationTargetMaterializationData | None:
    found = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=asset, asset_partitions=[day]), limit=1
    ).records
    if not found:
        return None
    return AssetCheckEvaluationTargetMaterializationData(
        run_id=found[0].run_id, storage_id=found[0].storage_id, timestamp=found[0].timestamp
    )


def dated_evaluations(
    context: dg.AssetExecutionContext,
    asset: str,
    results: Mapping[str, list[dg.AssetCheckResult]],
) -> Iterator[dg.AssetCheckEvaluation | dg.Output]:
    """Each date's results as evaluations of that date, then the checks' outputs. Log
    them after the dates' materializations, so each evaluation targets its date's new one."""
    key = dg.AssetKey(asset)
    specs = {spec.key: spec for spec in context.assets_def.check_specs if spec.asset_key == key}
    selected = [check for check in specs if check in context.selected_asset_check_keys]
    for day, day_results in results.items():
        target = _target(context.instance, key, day)
        for result in day_results:
            check = dg.AssetCheckKey(key, result.check_name or "")
            if check not in selected:
                continue
            yield dg.AssetCheckEvaluation(
                asset_key=key,
                check_name=check.name,
                passed=result.passed,
                metadata=result.metadata,
                target_materialization_data=target,
                severity=result.severity,
                description=result.description,
                blocking=specs[check].blocking,
                partition=day,
            )
    for check in selected:
        yield dg.Output(
            None, output_name=context.assets_def.get_output_name_for_asset_check_key(check)
        )
