"""daily_<type>_aggregates and anomaly_summary: what dashboards and analysts read."""

from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
from pyspark.sql import SparkSession

from smartcity.layout import LANDING, table_partition_key
from smartcity.registry import published_registry
from smartcity.settings import SENSOR_TYPES
from smartcity_dagster.assets.common import run_dates
from smartcity_dagster.assets.layers import Layer
from smartcity_dagster.assets.publish import AssetEvent, Publication, published
from smartcity_dagster.partitions import daily_partitions
from smartcity_dagster.resources import SmartcityResource, SparkResource
from smartcity_dagster.shipping import ship_to_session
from smartcity_dagster.tables import describe, read_partition, stage_table, write_partition
from smartcity_dagster.transforms.aggregates import ORDER, daily_aggregates
from smartcity_dagster.transforms.anomalies import (
    detect_batch,
    detection_tasks,
    reconcile,
    summarize,
)
from smartcity_stream.anomalies import ANOMALY_SCHEMA
from smartcity_stream.rules import RuleConfig

EVENTS = "anomaly_events"


def aggregates_spec(sensor_type: str) -> dg.AssetSpec:
    return dg.AssetSpec(
        f"daily_{sensor_type}_aggregates",
        deps=[f"clean_{sensor_type}"],
        group_name="analytics",
        kinds={"spark", "parquet"},
        description=f"{sensor_type.title()} per sensor and per district, per hour and per day.",
    )


def build_aggregates(
    context: dg.AssetExecutionContext,
    smartcity: SmartcityResource,
    spark: SparkSession,
    sensor_type: str,
) -> Publication:
    name, lake = f"daily_{sensor_type}_aggregates", smartcity.lake
    publication = Publication(context, lake, name)
    for day in run_dates(context):
        clean = read_partition(spark, lake, f"clean_{sensor_type}", day)
        aggregated = daily_aggregates(clean, sensor_type)
        staged = write_partition(aggregated, lake, name, day, ORDER)
        publication.audit(day, {name: staged})
    return publication


aggregates_layer = Layer(aggregates_spec, build_aggregates)


@dg.asset(
    deps=[f"clean_{sensor_type}" for sensor_type in SENSOR_TYPES],
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="analytics",
    kinds={"spark", "parquet"},
    description="The day's anomalies from the stream reconciled with the same rules re-run "
    "over the clean data, per kind, sensor and district; each anomaly with its source in "
    f"`{EVENTS}`.",
)
def anomaly_summary(
    context: dg.AssetExecutionContext,
    smartcity: SmartcityResource,
    pyspark: SparkResource,
) -> Iterator[AssetEvent]:
    spark, lake = pyspark.spark_session, smartcity.lake
    sensors = published_registry(lake).sensors()
    districts = {row["sensor_id"]: row["district"] for row in sensors.values()}
    config = RuleConfig()
    publication, by_source = Publication(context, lake, "anomaly_summary"), {}
    for day in run_dates(context):
        batch = batch_anomalies(spark, smartcity, day, sensors, config)
        events = reconcile(
            stream_anomalies(smartcity, day), batch, districts, int(config.episode_gap_s * 1000)
        )
        summary = pa.Table.from_pandas(summarize(events), preserve_index=False)
        publication.audit(
            day,
            {
                "anomaly_summary": stage_table(lake, summary, "anomaly_summary", day),
                EVENTS: stage_table(
                    lake, pa.Table.from_pandas(events, preserve_index=False), EVENTS, day
                ),
            },
        )
        by_source[day] = events["source"].value_counts().to_dict()
        context.log.info("anomalies %s: %s", day, by_source[day])
    publication.metadata["anomalies_by_source"] = by_source
    yield from published([publication])


def batch_anomalies(
    spark: SparkSession,
    smartcity: SmartcityResource,
    day: str,
    sensors: Mapping[str, Mapping[str, Any]],
    config: RuleConfig,
) -> pa.Table:
    """The stream's rules re-run over each clean table of `day` that holds readings, the
    tables in threads of their own: one table's last tasks leave a core idle that
    another's fill."""

    partitions = int(spark.conf.get("spark.sql.shuffle.partitions"))

    def detect(table: str, rows: int) -> pa.Table:
        clean = read_partition(spark, smartcity.lake, table, day)
        tasks = detection_tasks(rows, partitions)
        return detect_batch(clean, sensors, config, tasks).toArrow().cast(ANOMALY_SCHEMA)

    tables = clean_tables_with_rows(smartcity, day)
    ship_to_session(spark)
    with ThreadPoolExecutor(max_workers=max(len(tables), 1)) as threads:
        found = threads.map(detect, tables.keys(), tables.values())
        return pa.concat_tables([ANOMALY_SCHEMA.empty_table(), *found])


def clean_tables_with_rows(smartcity: SmartcityResource, day: str) -> dict[str, int]:
    """The clean tables of `day` that hold readings, with their rows (from their footers): a
    sensor type the city lacks, or that was silent that day, has an empty partition and
    nothing to detect."""
    tables = [f"clean_{sensor_type}" for sensor_type in SENSOR_TYPES]
    rows = {t: describe(smartcity.lake, table_partition_key(t, day)).rows for t in tables}
    return {table: count for table, count in rows.items() if count}


def stream_anomalies(smartcity: SmartcityResource, day: str) -> pa.Table:
    """What the stream worker detected for events of `day` (landed beside its readings)."""
    lake = smartcity.lake
    files = [
        info.path
        for info in lake.list_files(f"{LANDING}/anomalies/date={day}")
        if info.path.endswith(".parquet")
    ]
    if not files:
        return ANOMALY_SCHEMA.empty_table()
    return first_per_id(ds.dataset(files, schema=ANOMALY_SCHEMA, filesystem=lake.filesystem))


def first_per_id(anomalies: ds.Dataset) -> pa.Table:
    """One row per `anomaly_id`, the first landed: a worker that replays a range after a
    restart or a rebalance lands that range's anomalies again, under the same ids."""
    table = anomalies.to_table()
    rows = table.append_column("_row", pa.array(np.arange(table.num_rows)))
    firsts = rows.group_by("anomaly_id", use_threads=False).aggregate([("_row", "min")])
    return table.take(np.sort(firsts["_row_min"].to_numpy()))
