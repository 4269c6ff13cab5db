"""clean_<type>: typed, deduplicated, contract-checked, joined with the registry."""

import dagster as dg
from pyspark.sql import SparkSession

from smartcity.layout import registry_key
from smartcity.registry import load_registry, publish_registry, published_registry
from smartcity_dagster import checks
from smartcity_dagster.assets.common import run_dates
from smartcity_dagster.assets.layers import Layer
from smartcity_dagster.assets.publish import Publication
from smartcity_dagster.resources import SmartcityResource
from smartcity_dagster.tables import read_partition, write_partition
from smartcity_dagster.transforms.clean import (
    KEPT_ORDER,
    ORDER,
    clean,
    no_rejected_rows,
    rejected_rows,
)
from smartcity_dagster.transforms.profile import table_profile

REJECTS = "{name}_rejects"


@dg.asset(
    group_name="reference",
    kinds={"parquet"},
    description="The sensor registry in force (the last `smartcity sensors import`): ids, "
    "districts, coordinates, intervals and road/feeder profiles, tagged with its version.",
)
def sensor_registry(smartcity: SmartcityResource) -> dg.MaterializeResult:
    lake = smartcity.lake
    registry = load_registry(lake)
    if registry.version == 0:
        raise dg.Failure(
            "no sensor registry in the lake: import one with `smartcity sensors import FILE`"
        )
    size = publish_registry(lake, registry)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": registry.table.num_rows,
            "bytes": size,
            "registry_version": registry.version,
            "imported_at": registry.imported_at or "",
            "sensors_by_type": registry.counts(),
            "path": registry_key(),
        }
    )


def clean_spec(sensor_type: str) -> dg.AssetSpec:
    name = f"clean_{sensor_type}"
    return dg.AssetSpec(
        name,
        deps=[f"raw_{sensor_type}", sensor_registry],
        group_name="quality",
        kinds={"spark", "pandera", "parquet"},
        description=f"{sensor_type.title()} readings deduplicated by (sensor_id, seq), checked "
        "against the contract and joined with the registry; failing rows go to "
        f"`{REJECTS.format(name=name)}` with their reason.",
    )


def build_clean(
    context: dg.AssetExecutionContext,
    smartcity: SmartcityResource,
    spark: SparkSession,
    sensor_type: str,
) -> Publication:
    name, lake = f"clean_{sensor_type}", smartcity.lake
    registry = published_registry(lake)
    rejects_name = REJECTS.format(name=name)
    publication, rejected, duplicates = Publication(context, lake, name), {}, {}
    for day in run_dates(context):
        raw = read_partition(spark, lake, f"raw_{sensor_type}", day)
        outcome = clean(raw, registry.table, sensor_type)
        staged = write_partition(outcome.kept, lake, name, day, KEPT_ORDER, placed=outcome.placed)
        counts = outcome.counts.get
        raw_rows, duplicates[day] = counts["rows"], counts["duplicates"]
        rejects = write_partition(
            rejected_rows(raw, registry.table, sensor_type)
            if counts["rejects"]
            else no_rejected_rows(raw),
            lake,
            rejects_name,
            day,
            ORDER,
        )
        rejected[day] = rejects.rows
        stats = table_profile(staged)
        schema = staged.schema
        publication.audit(
            day,
            {name: staged, rejects_name: rejects},
            [
                checks.contract_schema(spark, lake, staged, sensor_type),
                checks.no_loss(raw_rows, staged.rows, rejects.rows, duplicates[day]),
                checks.null_rates(stats, schema.names),
                checks.duplicate_share(raw_rows, duplicates[day]),
                checks.freshness(stats, day),
            ],
        )
        context.log.info(
            "%s %s: %d raw, %d clean, %d rejected, %d duplicates removed",
            name,
            day,
            raw_rows,
            staged.rows,
            rejects.rows,
            duplicates[day],
        )
    publication.metadata.update(
        rejected_rows=sum(rejected.values()),
        registry_version=registry.version,
        duplicates_removed=duplicates,
    )
    return publication


clean_layer = Layer(clean_spec, build_clean, checks.CLEAN_CHECKS)
