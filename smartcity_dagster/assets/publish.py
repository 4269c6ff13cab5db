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
        self.metadata: dict[str, Any] = {}

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

    def events(self) -> Iterator[AssetEvent]:
        """The step's materializations (only of published dates, with `metadata` besides
        the tables' own) and every date's check evaluations."""
        if not self.rejected:
            yield dg.MaterializeResult(
                asset_key=self.asset, metadata=table_metadata(self.writes(), **self.metadata)
            )
        else:
            for day, write in self.writes().items():
                yield dg.AssetMaterialization(
                    self.asset,
                    partition=day,
                    metadata=table_metadata({day: write}, **self.metadata),
                )
        yield from dated_evaluations(self.context, self.asset, self.results)


def published(
    publications: Sequence[Publication], error: Exception | None = None
) -> Iterator[AssetEvent]:
    """The events of a step's publications, then `error` (what stopped the step's work,
    if something did) or a failure naming each asset's dates whose version was refused:
    the step fails after reporting what it did publish."""
    for publication in publications:
        yield from publication.events()
    if error is not None:
        raise error
    refused = {(p.asset, day): checks for p in publications for day, checks in p.rejected.items()}
    if refused:
        run_id = publications[0].context.run.run_id
        raise dg.Failure(
            description="blocking checks failed ("
            + "; ".join(f"{a} {d}: {', '.join(c)}" for (a, d), c in sorted(refused.items()))
            + "); the published partitions are unchanged and nothing downstream was built "
            "from these versions",
            metadata={
                "rejected": {f"{a} {d}": rejected_key(a, d, run_id) for a, d in sorted(refused)}
            },
        )
