"""The one entry point of the batch layer (`dagster dev` from the repo root loads it)."""

from __future__ import annotations

import dagster as dg

from smartcity_dagster.assets.analytics import aggregates_layer, anomaly_summary
from smartcity_dagster.assets.ingest import raw_layer
from smartcity_dagster.assets.layers import sensor_type_tables
from smartcity_dagster.assets.quality import clean_layer, sensor_registry
from smartcity_dagster.jobs import daily_pipeline
from smartcity_dagster.resources import build_resources
from smartcity_dagster.schedules import yesterday_schedule
from smartcity_dagster.sensors import check_failure_alerts, stream_progress_sensor

sensor_tables = sensor_type_tables("sensor_tables", [raw_layer, clean_layer, aggregates_layer])

defs = dg.Definitions(
    assets=[sensor_registry, sensor_tables, anomaly_summary],
    jobs=[daily_pipeline],
    sensors=[stream_progress_sensor, check_failure_alerts],
    schedules=[yesterday_schedule],
    resources=build_resources(),
    executor=dg.in_process_executor,
)
