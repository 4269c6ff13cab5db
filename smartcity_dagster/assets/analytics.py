"""daily_<type>_aggregates and anomaly_summary: what dashboards and analysts read."""

import dagster as dg
import pyarrow as pa
import pyarrow.dataset as ds
from dagster_pyspark import LazyPySparkResource

from smartcity.layout import LANDING, table_partition_key
from smartcity.registry import published_registry
from smartcity.settings import SENSOR_TYPES
from smartcity_dagster.assets.common import run_dates, table_metadata
from smartcity_dagster.partitions import daily_partitions
from smartcity_dagster.resources import SmartcityResource
from smartcity_dagster.tables import describe, read_partition, write_partition
from smartcity_dagster.transforms.aggregates import daily_aggregates
from smartcity_dagster.transforms.anomalies import detect_batch, reconcile, summarize
from smartcity_stream.anomalies import ANOMALY_SCHEMA
from smartcity_stream.rules import RuleConfig

EVENTS = "anomaly_events"


def aggregates_asset(sensor_type: str) -> dg.AssetsDefinition:
    name = f"daily_{sensor_type}_aggregates"

    @dg.asset(
        name=name,
        deps=[f"clean_{sensor_type}"],
        partitions_def=daily_partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        group_name="analytics",
        kinds={"spark", "parquet"},
        description=f"{sensor_type.title()} per sensor and per district, per hour and per day.",
    )
    def aggregates(
        context: dg.AssetExecutionContext,
        smartcity: SmartcityResource,
        pyspark: LazyPySparkResource,
    ) -> dg.MaterializeResult:
        spark, lake = pyspark.spark_session, smartcity.lake
        writes = {}
        for day in run_dates(context):
            clean = read_partition(spark, lake, f"clean_{sensor_type}", day)
            writes[day] = write_partition(daily_aggregates(clean, sensor_type), lake, name, day)
        return dg.MaterializeResult(metadata=table_metadata(writes))

    return aggregates


aggregate_assets = [aggregates_asset(sensor_type) for sensor_type in SENSOR_TYPES]


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
    pyspark: LazyPySparkResource,
) -> dg.MaterializeResult:
    spark, lake = pyspark.spark_session, smartcity.lake
    sensors = published_registry(lake).sensors()
    districts = {row["sensor_id"]: row["district"] for row in sensors.values()}
    config = RuleConfig()
    writes, by_source = {}, {}
    for day in run_dates(context):
        batch_frames = [
            detect_batch(read_partition(spark, lake, f"clean_{t}", day), sensors, config)
            for t in SENSOR_TYPES
        ]
        batch = pa.concat_tables(
            [
                pa.Table.from_pandas(f.toPandas(), schema=ANOMALY_SCHEMA, preserve_index=False)
                for f in batch_frames
            ]
        )
        events = reconcile(
            stream_anomalies(smartcity, day), batch, districts, int(config.episode_gap_s * 1000)
        )
        lake.write_parquet(
            table_partition_key(EVENTS, day), pa.Table.from_pandas(events, preserve_index=False)
        )
        key = table_partition_key("anomaly_summary", day)
        lake.write_parquet(key, pa.Table.from_pandas(summarize(events), preserve_index=False))
        writes[day] = describe(lake, key)
        by_source[day] = events["source"].value_counts().to_dict()
        context.log.info("anomalies %s: %s", day, by_source[day])
    return dg.MaterializeResult(metadata=table_metadata(writes, anomalies_by_source=by_source))


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
    return ds.dataset(files, schema=ANOMALY_SCHEMA, filesystem=lake.filesystem).to_table()
