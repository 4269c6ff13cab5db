"""raw_<type>: the stream worker's landed micro-batches of a date, compacted."""

import dagster as dg
from pyspark.sql import SparkSession

from smartcity_dagster import checks
from smartcity_dagster.assets.common import run_dates
from smartcity_dagster.assets.layers import Layer
from smartcity_dagster.assets.publish import Publication
from smartcity_dagster.resources import SmartcityResource
from smartcity_dagster.transforms.raw import compact, partition_ranges
from smartcity_stream.progress import load_all_progress


def recorded_rows(smartcity: SmartcityResource, sensor_type: str, day: str) -> int | None:
    """Rows the worker's progress manifests say it landed for a date, or None if unknown."""
    topic = smartcity.settings.reading_topic(sensor_type)
    manifests = [p for p in load_all_progress(smartcity.lake) if p.topic == topic]
    hours = [p.hours[day] for p in manifests if day in p.hours]
    if not hours:
        return None
    return sum(rows for by_hour in hours for files in by_hour.values() for rows in files.values())


def raw_spec(sensor_type: str) -> dg.AssetSpec:
    return dg.AssetSpec(
        f"raw_{sensor_type}",
        group_name="ingest",
        kinds={"spark", "parquet"},
        description=f"The day's landed {sensor_type} micro-batches compacted into one table, "
        "keeping Kafka partition and offset.",
    )


def build_raw(
    context: dg.AssetExecutionContext,
    smartcity: SmartcityResource,
    spark: SparkSession,
    sensor_type: str,
) -> Publication:
    name, lake = f"raw_{sensor_type}", smartcity.lake
    publication, ranges = Publication(context, lake, name), {}
    for day in run_dates(context):
        staged = compact(spark, lake, sensor_type, day, name)
        ranges[day] = partition_ranges(spark, lake, staged)
        recorded = recorded_rows(smartcity, sensor_type, day)
        publication.audit(
            day,
            {name: staged},
            [
                checks.matches_landing(staged.rows, recorded),
                checks.has_readings(staged.rows, sensor_type, day),
            ],
        )
    publication.metadata["kafka_partitions"] = ranges
    return publication


raw_layer = Layer(raw_spec, build_raw, checks.RAW_CHECKS)
