"""Write, audit, publish: a date's new version of an asset replaces the published one only
when its blocking checks passed on the staged files.

A version that fails one is set aside under `quality/_rejected/` with the results that
refused it, and the published version stays, so the API keeps serving data that passed;
the step then fails, so nothing downstream is built from the refused version. Non-blocking
(WARN) failures publish.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from typing import Any

import dagster as dg

from smartcity.lake import Lake
from smartcity.layout import rejected_key
from smartcity_dagster.assets.common import table_metadata
from smartcity_dagster.assets.evaluations import dated_evaluations
from smartcity_dagster.quality import record_checks, record_rejection
from smartcity_dagster.tables import TableWrite, publish_partition, set_aside

AssetEvent = dg.MaterializeResult | dg.AssetMaterialization | dg.AssetCheckEvaluation | dg.Output


def blocking_failures(
    results: Sequence[dg.AssetCheckResult], blocking: Collection[str]
) -> list[str]:
    """The checks that keep a version from being published: failed with ERROR severity and
    declared `blocking` (the names in `blocking`), as Dagster itself fails a step."""
    return [
        result.check_name or ""
        for result in results
        if not result.passed
        and result.severity == dg.AssetCheckSeverity.ERROR
        and result.check_name in blocking
    ]


class Publication:
    """The dates of one asset step, each published or set aside as its checks decide."""

    def __init__(self, context: dg.AssetExecutionContext, lake: Lake, asset: str) -> None:
        self.context, self.lake, self.asset = context, lake, asset
        self.published: dict[str, dict[str, TableWrite]] = {}
        self.rejected: dict[str, list[str]] = {}
        self.results: dict[str, list[dg.AssetCheckResult]] = {}
        self.blocking = {spec.name for spec in context.assets_def.check_specs if spec.blocking}

    def audit(
        self,
        day: str,
        staged: dict[str, TableWrite],
        results: Sequence[dg.AssetCheckResult] = (),
    ) -> None:
        """Publish the staged tables of `day` (the asset's own and any written with it,
        such as a clean table's rejects) unless a blocking check failed on them."""
        self.results[day] = list(results)
        failed = blocking_failures(results, self.blocking)
        if not failed:
            self.published[day] = {
                table: publish_partition(self.lake, write, table, day)
                for table, write in staged.items()
            }
            if results:
                record_checks(self.lake, self.asset, day, list(results))
            return
        version = self.context.run.run_id
        for table, write in staged.items():
            set_aside(self.lake, write, rejected_key(table, day, version))
        record_rejection(self.lake, self.asset, day, version, list(results))
        self.rejected[day] = failed
        self.context.log.error(
            "%s %s: blocking checks failed (%s); the published partition is unchanged, this "
            "version is kept at %s",
            self.asset,
            day,
            ", ".join(failed),
            rejected_key(self.asset, day, version),
        )

    def writes(self) -> dict[str, TableWrite]:
        """The asset's own published partitions, by date."""
        return {day: tables[self.asset] for day, tables in self.published.items()}

    def events(self, **metadata: Any) -> Iterator[AssetEvent]:
        """The step's materializations (only of published dates), every date's check
        evaluations, and a failure naming the dates whose version was refused."""
        if not self.rejected:
            yield dg.MaterializeResult(metadata=table_metadata(self.writes(), **metadata))
        else:
            for day, write in self.writes().items():
                yield dg.AssetMaterialization(
                    self.asset, partition=day, metadata=table_metadata({day: write}, **metadata)
                )
        yield from dated_evaluations(self.context, self.asset, self.results)
        if self.rejected:
            refused = "; ".join(f"{d}: {', '.join(c)}" for d, c in sorted(self.rejected.items()))
            raise dg.Failure(
                description=f"{self.asset}: blocking checks failed ({refused}); the published "
                "partitions are unchanged and nothing downstream was built from these versions",
                metadata={
                    "rejected": {
                        d: rejected_key(self.asset, d, self.context.run.run_id)
                        for d in sorted(self.rejected)
                    }
                },
            )
