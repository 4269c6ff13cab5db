"""A daily safety net: yesterday's partition is built even if the sensor missed it."""

from datetime import timedelta

import dagster as dg

from smartcity_dagster.jobs import daily_pipeline


@dg.schedule(job=daily_pipeline, cron_schedule="30 1 * * *", execution_timezone="UTC")
def yesterday_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    yesterday = (context.scheduled_execution_time - timedelta(days=1)).strftime("%Y-%m-%d")
    return dg.RunRequest(run_key=f"schedule:{yesterday}", partition_key=yesterday)
