"""Sensors: follow the stream worker's progress; alert on every failed asset check."""

from __future__ import annotations

from collections.abc import Callable

import dagster as dg
import orjson

from smartcity.lake import Lake
from smartcity.layout import check_failures_key
from smartcity.registry import load_registry
from smartcity.settings import SENSOR_TYPES, load_settings
from smartcity_dagster import alerts, builds
from smartcity_dagster.alerts import Alert
from smartcity_dagster.jobs import daily_pipeline
from smartcity_dagster.progress import complete_dates
from smartcity_dagster.tags import (
    ATTEMPT_TAG,
    FINGERPRINT_TAG,
    PARTITION_TAG,
    RANGE_END,
    RANGE_START,
)
from smartcity_stream.progress import load_all_progress

FAILED_RUN_STATUSES = {dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}


@dg.sensor(
    job=daily_pipeline,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Requests a run for each date the stream worker has completed (and again, "
    f"once, when late data lands for a built date); a failed run up to "
    f"{builds.MAX_ATTEMPTS} times, then alerts once.",
)
def stream_progress_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    settings = load_settings()
    lake = Lake.from_settings(settings)
    known = builds.load(orjson.loads(context.cursor) if context.cursor else {})
    topics = {settings.reading_topic(t) for t in city_types(lake)}
    complete = complete_dates(load_all_progress(lake), topics)
    outcomes = {
        day: _outcome(context.instance, day, build)
        for day, build in known.items()
        if build.state is builds.State.REQUESTED and complete.get(day) == build.fingerprint
    }
    step = builds.plan(complete, known, outcomes)
    after = dict(step.builds)
    days = {f"build:{day}:{build.fingerprint}": day for day, build in step.alerts.items()}

    def delivered(alert: Alert) -> None:
        context.log.error("giving up on %s", alert.body)
        day = days[alert.key]
        after[day] = builds.given_up(after[day])

    _deliver(
        context,
        [Alert(key, _build_alert(day, step.alerts[day])) for key, day in days.items()],
        delivered,
    )
    requests = [
        dg.RunRequest(
            run_key=f"{day}:{build.fingerprint}:{build.attempt}",
            partition_key=day,
            tags={FINGERPRINT_TAG: build.fingerprint, ATTEMPT_TAG: str(build.attempt)},
        )
        for day, build in step.requests.items()
    ]
    return dg.SensorResult(run_requests=requests, cursor=orjson.dumps(builds.dump(after)).decode())


def city_types(lake: Lake) -> list[str]:
    """The sensor types the city's registry has: a type it lacks can bring no reading, so
    its topic holds no date back (a city of traffic counters alone is built); every type
    while no registry is in force."""
    counts = load_registry(lake).counts()
    return [t for t in SENSOR_TYPES if counts.get(t)] or list(SENSOR_TYPES)


def _outcome(instance: dg.DagsterInstance, day: str, build: builds.Build) -> builds.Outcome:
    tags = {PARTITION_TAG: day, FINGERPRINT_TAG: build.fingerprint, ATTEMPT_TAG: str(build.attempt)}
    runs = instance.get_runs(filters=dg.RunsFilter(tags=tags), limit=1)
    if not runs:
        return builds.Outcome.MISSING
    if runs[0].status == dg.DagsterRunStatus.SUCCESS:
        return builds.Outcome.SUCCEEDED
    if runs[0].status in FAILED_RUN_STATUSES:
        return builds.Outcome.FAILED
    return builds.Outcome.PENDING


def _build_alert(day: str, build: builds.Build) -> dict[str, object]:
    return {
        "kind": "build_failed",
        "job": daily_pipeline.name,
        "partition": day,
        "fingerprint": build.fingerprint,
        "attempts": build.attempt,
    }


def _deliver(
    context: dg.SensorEvaluationContext, batch: list[Alert], delivered: Callable[[Alert], None]
) -> None:
    """Deliver in order; what is left (webhook down, or the tick's budget spent) waits for
    the next tick, the log says why."""
    if not batch:
        return
    delivery = alerts.DELIVERY
    with alerts.webhook(load_settings().alert_webhook_url, delivery) as send:
        error = alerts.deliver_in_order(batch, send, delivered, delivery.budget_s)
    if error is not None:
        context.log.error("alert webhook failed, alerts wait for the next tick: %s", error)


@dg.sensor(
    minimum_interval_seconds=15,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Sends each failed asset check (blocking or not) once to the webhook and the "
    "log, and keeps the count of failures in the lake for the API's metrics.",
)
def check_failure_alerts(context: dg.SensorEvaluationContext) -> dg.SkipReason | None:
    after, counts = _alert_cursor(context.cursor)
    # The event log storage's own query: the instance's `get_event_records` is deprecated,
    # and the check history (`get_asset_check_execution_history`) is ordered by when a
    # check was planned, not evaluated, so it cannot give a cursor that skips nothing.
    records = context.instance.event_log_storage.get_event_records(
        dg.EventRecordsFilter(
            event_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION, after_cursor=after
        ),
        limit=500,
        ascending=True,
    )
    if not records:
        return dg.SkipReason("no new check evaluations")
    lake = Lake.from_settings(load_settings())
    if counts is None:
        key = check_failures_key()
        counts = orjson.loads(lake.read_bytes(key)) if lake.exists(key) else {}
    failures: dict[str, tuple[int, Alert]] = {}
    for record in records:
        if not _evaluation(record).passed:
            alert = check_alert(record, _run_partition(context.instance, record.run_id))
            failures[alert.key] = (record.storage_id, alert)
    done: set[str] = set()

    def delivered(alert: Alert) -> None:
        context.log.warning("asset check failed: %s", alert.body)
        label = f"{alert.body['asset']}/{alert.body['check']}/{alert.body['severity']}"
        counts[label] = counts.get(label, 0) + 1
        lake.write_bytes(check_failures_key(), orjson.dumps(counts))
        done.add(alert.key)
        context.update_cursor(_dump_alert_cursor(failures[alert.key][0], counts))

    _deliver(context, [alert for _, alert in failures.values()], delivered)
    waiting = [storage_id for key, (storage_id, _) in failures.items() if key not in done]
    handled = [r.storage_id for r in records if not waiting or r.storage_id < waiting[0]]
    context.update_cursor(_dump_alert_cursor(max(handled, default=after), counts))
    return None


def _alert_cursor(cursor: str | None) -> tuple[int, dict[str, int] | None]:
    """The storage id every check evaluation up to which is handled, and the failure counts
    as of then. The counts live in the cursor, which Dagster stores with the tick, so a tick
    that dies after writing the lake's counts does not count its alerts twice: the next one
    writes the cursor's counts plus what it delivers. (An earlier cursor was the bare id;
    the counts then come from the lake.)"""
    if not cursor:
        return 0, None
    data = orjson.loads(cursor)
    if isinstance(data, int):
        return data, None
    return int(data["after"]), dict(data["counts"])


def _dump_alert_cursor(after: int, counts: dict[str, int]) -> str:
    return orjson.dumps({"after": after, "counts": counts}).decode()


def _evaluation(record: dg.EventLogRecord):  # type: ignore[no-untyped-def]
    return record.event_log_entry.dagster_event.event_specific_data


def _run_partition(instance: dg.DagsterInstance, run_id: str) -> str | None:
    """The date (or `first...last` range) the run that evaluated the check was for."""
    run = instance.get_run_by_id(run_id)
    tags = run.tags if run else {}
    if PARTITION_TAG in tags:
        return tags[PARTITION_TAG]
    start, end = tags.get(RANGE_START), tags.get(RANGE_END)
    return f"{start}...{end}" if start and end else None


def check_alert(record: dg.EventLogRecord, run_partition: str | None) -> Alert:
    """The alert for a failed check evaluation, keyed by its run and storage id (unique
    across instances too: run ids are UUIDs)."""
    evaluation = _evaluation(record)
    metadata = {k: getattr(v, "value", v) for k, v in evaluation.metadata.items()}
    body: dict[str, object] = {
        "kind": "check_failed",
        "asset": evaluation.asset_key.to_user_string(),
        "partition": evaluation.partition or run_partition,
        "check": evaluation.check_name,
        "severity": evaluation.severity.value,
        "run_id": record.run_id,
        "failure": {k: v for k, v in metadata.items() if k != "blocking"},
    }
    return Alert(f"check:{record.run_id}:{record.storage_id}", body)
