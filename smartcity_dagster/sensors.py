"""Sensors: follow the stream worker's progress; alert on every failed asset check."""

import dagster as dg
import httpx
import orjson

from smartcity.lake import Lake
from smartcity.layout import check_failures_key
from smartcity.settings import SENSOR_TYPES, load_settings
from smartcity_dagster.cli import RANGE_END, RANGE_START
from smartcity_dagster.jobs import daily_pipeline
from smartcity_dagster.progress import complete_dates
from smartcity_stream.progress import load_all_progress


@dg.sensor(
    job=daily_pipeline,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Requests a run for each date the stream worker has completed (and again, "
    "once, when late data lands for a built date).",
)
def stream_progress_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    settings = load_settings()
    lake = Lake.from_settings(settings)
    built: dict[str, str] = orjson.loads(context.cursor) if context.cursor else {}
    topics = {settings.reading_topic(t) for t in SENSOR_TYPES}
    due = complete_dates(load_all_progress(lake), topics, built)
    requests = [
        dg.RunRequest(run_key=f"{day}:{fp}", partition_key=day, tags={"smartcity/fingerprint": fp})
        for day, fp in due.items()
    ]
    return dg.SensorResult(run_requests=requests, cursor=orjson.dumps({**built, **due}).decode())


@dg.sensor(
    minimum_interval_seconds=15,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Sends each failed asset check (blocking or not) once to the webhook and the "
    "log, and keeps the count of failures in the lake for the API's metrics.",
)
def check_failure_alerts(context: dg.SensorEvaluationContext) -> dg.SkipReason | None:
    after = int(context.cursor or 0)
    records = context.instance.get_event_records(
        dg.EventRecordsFilter(
            event_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION, after_cursor=after
        ),
        limit=500,
        ascending=True,
    )
    if not records:
        return dg.SkipReason("no new check evaluations")
    settings = load_settings()
    failures = [
        alert_of(r, _run_partition(context.instance, r.run_id))
        for r in records
        if not _evaluation(r).passed
    ]
    for alert in failures:
        context.log.warning("asset check failed: %s", alert)
        if settings.alert_webhook_url:
            httpx.post(settings.alert_webhook_url, json=alert, timeout=10).raise_for_status()
    if failures:
        _count_failures(Lake.from_settings(settings), failures)
    context.update_cursor(str(records[-1].storage_id))
    return None


def _evaluation(record: dg.EventLogRecord):  # type: ignore[no-untyped-def]
    return record.event_log_entry.dagster_event.event_specific_data


def _run_partition(instance: dg.DagsterInstance, run_id: str) -> str | None:
    """The date (or `first...last` range) the run that evaluated the check was for."""
    run = instance.get_run_by_id(run_id)
    tags = run.tags if run else {}
    if "dagster/partition" in tags:
        return tags["dagster/partition"]
    start, end = tags.get(RANGE_START), tags.get(RANGE_END)
    return f"{start}...{end}" if start and end else None


def alert_of(record: dg.EventLogRecord, run_partition: str | None) -> dict[str, object]:
    evaluation = _evaluation(record)
    metadata = {k: getattr(v, "value", v) for k, v in evaluation.metadata.items()}
    return {
        "asset": evaluation.asset_key.to_user_string(),
        "partition": evaluation.partition or run_partition,
        "check": evaluation.check_name,
        "severity": evaluation.severity.value,
        "run_id": record.run_id,
        "failure": {k: v for k, v in metadata.items() if k != "blocking"},
    }


def _count_failures(lake: Lake, failures: list[dict[str, object]]) -> None:
    key = check_failures_key()
    counts = orjson.loads(lake.read_bytes(key)) if lake.exists(key) else {}
    for alert in failures:
        label = f"{alert['asset']}/{alert['check']}/{alert['severity']}"
        counts[label] = counts.get(label, 0) + 1
    lake.write_bytes(key, orjson.dumps(counts))
