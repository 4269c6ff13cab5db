"""The per-sensor-type tables (raw, clean, daily aggregates) as one step that builds each
selected type's chain of tables in a thread of its own.

Dagster's in-process executor runs one step at a time, and a step of one type's table
leaves a core idle for long stretches: a table is written by one task (see
`tables.write_partition`), and a small type's jobs mostly wait on the driver. In one step,
the types' chains run side by side over the one Spark session (Spark runs the jobs of
several threads at once and fills the free cores with their tasks). A chain stops at the
first table whose version its blocking checks refused, as separate steps would: the
other types go on, and the step fails at its end naming what was refused.

Each table stays an asset of its own (`can_subset`: a run may select any of them), and the
step reports the publications from its own thread once the chains are done, so a check's
evaluation still follows the materialization it targets.
"""

import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import dagster as dg
from pyspark.sql import SparkSession

from smartcity.settings import SENSOR_TYPES
from smartcity_dagster.assets.publish import AssetEvent, Publication, published
from smartcity_dagster.checks import CheckDef, specs
from smartcity_dagster.console import BUILD_SECONDS
from smartcity_dagster.partitions import daily_partitions
from smartcity_dagster.resources import SmartcityResource, SparkResource

BuildType = Callable[[dg.AssetExecutionContext, SmartcityResource, SparkSession, str], Publication]
"""One type's table built for the run's dates, each date published or set aside."""


@dataclass(frozen=True)
class Layer:
    """One table of every sensor type: its asset, its checks and how a type's is built."""

    spec: Callable[[str], dg.AssetSpec]
    build: BuildType
    checks: tuple[CheckDef, ...] = ()

    def check_specs(self, sensor_type: str) -> list[dg.AssetCheckSpec]:
        return specs(self.spec(sensor_type).key.to_user_string(), self.checks, daily_partitions)


@dataclass
class Chain:
    """What a type's thread did: the tables it published or refused, in order, and the
    error that stopped it, if one did."""

    publications: list[Publication]
    error: Exception | None = None


def sensor_type_tables(name: str, layers: Sequence[Layer]) -> dg.AssetsDefinition:
    """The step `name`: for each sensor type, `layers` in order (each one's table built
    from the one before), the types in threads of their own."""
    assets = [layer.spec(t) for t in SENSOR_TYPES for layer in layers]

    @dg.multi_asset(
        name=name,
        specs=assets,
        check_specs=[c for t in SENSOR_TYPES for layer in layers for c in layer.check_specs(t)],
        can_subset=True,
        partitions_def=daily_partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
    )
    def tables(
        context: dg.AssetExecutionContext,
        smartcity: SmartcityResource,
        pyspark: SparkResource,
    ) -> Iterator[AssetEvent]:
        spark = pyspark.spark_session
        keys = context.selected_asset_keys
        selected = {t: [x for x in layers if x.spec(t).key in keys] for t in SENSOR_TYPES}
        types = [t for t, chosen in selected.items() if chosen]

        def chain(sensor_type: str) -> Chain:
            done = Chain([])
            try:
                for layer in selected[sensor_type]:
                    started = time.perf_counter()
                    publication = layer.build(context, smartcity, spark, sensor_type)
                    seconds = round(time.perf_counter() - started, 1)
                    publication.metadata[BUILD_SECONDS] = seconds
                    done.publications.append(publication)
                    if publication.rejected:
                        break
            except Exception as error:
                done.error = error
            return done

        with ThreadPoolExecutor(max_workers=max(len(types), 1)) as threads:
            chains = list(threads.map(chain, types))
        errors = [c.error for c in chains if c.error is not None]
        yield from published(
            [p for c in chains for p in c.publications], errors[0] if errors else None
        )

    return tables
