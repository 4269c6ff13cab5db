"""The stream-fed sensor over a sequence of progress manifests: new date, late data,
nothing; a partition without a watermark; failed runs retried, then one alert."""

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import dagster as dg
import orjson
import pyarrow.compute as pc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from simulator.registry import build_registry
from smartcity.lake import Lake
from smartcity.registry import import_registry
from smartcity.settings import SENSOR_TYPES, Settings
from smartcity_dagster import alerts, builds
from smartcity_dagster.builds import Build, Outcome, State
from smartcity_dagster.progress import complete_dates, horizon
from smartcity_stream.progress import PartitionProgress, save_progress
from tests.test_dagster_alerts import FAST, Webhook

PREFIX = "smartcity."
TOPICS = {f"{PREFIX}{t}" for t in SENSOR_TYPES}
DAYS = dg.DailyPartitionsDefinition(start_date="2026-11-01", timezone="UTC", end_offset=1)
FAIL_TAG = "test/fail"


def manifest(sensor_type: str, watermark: str, hours: dict[str, dict[str, dict[str, int]]]):
    return PartitionProgress(
        topic=f"{PREFIX}{sensor_type}",
        partition=0,
        committed_offset=10,
        watermark=watermark,
        hours=hours,
    )


def day_files(day: str, *names: str) -> dict[str, dict[str, dict[str, int]]]:
    return {day: {"23": {name: 100 for name in names}}}


@pytest.fixture
def lake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Lake:
    for name in ("SMARTCITY_KAFKA_BOOTSTRAP", "SMARTCITY_S3_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SMARTCITY_LAKE_URI", (tmp_path / "lake").as_uri())
    monkeypatch.setenv("SMARTCITY_TOPIC_PREFIX", PREFIX)
    monkeypatch.setenv("SMARTCITY_RUNTIME_DIR", str(tmp_path / "runtime"))
    return Lake.from_settings(Settings(_env_file=None, lake_uri=(tmp_path / "lake").as_uri()))


def publish(lake: Lake, watermark: str, *names: str) -> None:
    for sensor_type in SENSOR_TYPES:
        save_progress(lake, manifest(sensor_type, watermark, day_files("2026-11-27", *names)))


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as test_instance:
        yield test_instance


@dg.asset(partitions_def=DAYS)
def date_build(context) -> None:  # type: ignore[no-untyped-def]
    """Stands in for the daily pipeline's run of a date: fails when its run is tagged so."""
    if context.run.tags.get(FAIL_TAG):
        raise RuntimeError("the run failed")


def finish(instance: dg.DagsterInstance, request: dg.RunRequest, ok: bool) -> None:
    """The run the daemon would start for `request`, succeeded or failed."""
    dg.materialize(
        [date_build],
        instance=instance,
        partition_key=request.partition_key,
        tags={**request.tags, **({} if ok else {FAIL_TAG: "yes"})},
        raise_on_error=False,
    )


def evaluate(instance: dg.DagsterInstance, cursor: str | None) -> dg.SensorResult:
    from smartcity_dagster.sensors import stream_progress_sensor

    context = dg.build_sensor_context(instance=instance, cursor=cursor)
    return stream_progress_sensor(context)


def test_sensor_follows_the_worker(lake: Lake, instance: dg.DagsterInstance) -> None:
    publish(lake, "2026-11-27T23:10:00+00:00", "p0-0-99.parquet")
    incomplete = evaluate(instance, None)
    assert incomplete.run_requests == []

    publish(lake, "2026-11-28T00:05:00+00:00", "p0-0-99.parquet")
    complete = evaluate(instance, incomplete.cursor)
    assert [r.partition_key for r in complete.run_requests] == ["2026-11-27"]
    not_started = evaluate(instance, complete.cursor)
    assert [r.run_key for r in not_started.run_requests] == [complete.run_requests[0].run_key], (
        "a request with no run yet is repeated under its run key (Dagster drops a duplicate)"
    )

    finish(instance, complete.run_requests[0], ok=True)
    nothing_new = evaluate(instance, not_started.cursor)
    assert nothing_new.run_requests == []

    publish(lake, "2026-11-28T00:30:00+00:00", "p0-0-99.parquet", "p0-150-151.parquet")
    late = evaluate(instance, nothing_new.cursor)
    assert [r.partition_key for r in late.run_requests] == ["2026-11-27"]
    assert late.run_requests[0].run_key != complete.run_requests[0].run_key
    fingerprints = [orjson.loads(r.cursor)["2026-11-27"]["fingerprint"] for r in (complete, late)]
    assert fingerprints[0] != fingerprints[1]


def test_a_failed_run_is_retried_then_alerted_once(
    lake: Lake, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    webhook = Webhook()
    monkeypatch.setenv("SMARTCITY_ALERT_WEBHOOK_URL", webhook.url)
    monkeypatch.setattr(alerts, "DELIVERY", FAST)
    publish(lake, "2026-11-28T00:05:00+00:00", "p0-0-99.parquet")
    result = evaluate(instance, None)
    keys = []
    for _ in range(builds.MAX_ATTEMPTS):
        [request] = result.run_requests
        keys.append(request.run_key)
        assert request.tags["smartcity/attempt"] == str(len(keys))
        finish(instance, request, ok=False)
        result = evaluate(instance, result.cursor)
    assert len(set(keys)) == builds.MAX_ATTEMPTS, "each attempt under its own run key"

    assert result.run_requests == [], "no request after the last attempt"
    assert orjson.loads(result.cursor)["2026-11-27"]["state"] == "exhausted", (
        "nothing listens at the webhook yet: the alert waits"
    )
    webhook.start()
    try:
        given_up = evaluate(instance, result.cursor)
        again = evaluate(instance, given_up.cursor)
    finally:
        webhook.stop()
    assert given_up.run_requests == again.run_requests == []
    assert [(key, body["kind"], body["partition"]) for key, body in webhook.received] == [
        (webhook.received[0][0], "build_failed", "2026-11-27")
    ]
    assert orjson.loads(again.cursor)["2026-11-27"]["state"] == "given_up"

    publish(lake, "2026-11-28T00:30:00+00:00", "p0-0-99.parquet", "p0-150-151.parquet")
    changed = evaluate(instance, again.cursor)
    assert [r.tags["smartcity/attempt"] for r in changed.run_requests] == ["1"], (
        "new content starts again"
    )


def test_a_type_the_city_lacks_holds_nothing_back(lake: Lake, instance: dg.DagsterInstance) -> None:
    """Traffic counters only: their date is built; the registry's types decide the topics."""
    city = build_registry().table()
    import_registry(lake, city.filter(pc.equal(city.column("sensor_type"), "traffic")))
    save_progress(
        lake, manifest("traffic", "2026-11-28T00:05:00+00:00", day_files("2026-11-27", "p0"))
    )
    assert [r.partition_key for r in evaluate(instance, None).run_requests] == ["2026-11-27"]
    import_registry(lake, city)  # energy and weather sensors join: wait for their progress
    assert evaluate(instance, None).run_requests == []


def test_a_type_without_progress_holds_the_date_back() -> None:
    topics = {f"{PREFIX}{t}" for t in SENSOR_TYPES}
    only_two = [
        manifest(t, "2026-11-29T00:00:00+00:00", day_files("2026-11-27", "a"))
        for t in SENSOR_TYPES[:2]
    ]
    assert complete_dates(only_two, topics) == {}
    all_three = [
        *only_two,
        manifest("energy", "2026-11-29T00:00:00+00:00", day_files("2026-11-27", "a")),
    ]
    assert list(complete_dates(all_three, topics)) == ["2026-11-27"]


def progress(topic: str, partition: int, watermark: datetime | None, pending: bool = False):
    """A manifest; with a watermark, files on every date up to it."""
    hours: dict[str, dict[str, dict[str, int]]] = {}
    if watermark is not None:
        day = datetime(2026, 11, 20)
        while day <= watermark:
            hours[day.date().isoformat()] = {"12": {f"p{partition}-{day:%d}.parquet": 10}}
            day += timedelta(days=1)
    return PartitionProgress(
        topic=topic,
        partition=partition,
        committed_offset=5,
        watermark=None if watermark is None else watermark.isoformat() + "+00:00",
        pending_first=5 if pending else None,
        pending_last=9 if pending else None,
        hours=hours,
    )


instants = st.datetimes(min_value=datetime(2026, 11, 20), max_value=datetime(2026, 12, 10))
partitions = st.lists(
    st.tuples(st.sampled_from(sorted(TOPICS)), st.none() | instants), min_size=1, max_size=9
)


@given(partitions)
def test_every_date_built_is_behind_every_watermark(parts) -> None:  # type: ignore[no-untyped-def]
    manifests = [progress(topic, i, mark) for i, (topic, mark) in enumerate(parts)]
    due = complete_dates(manifests, TOPICS)
    marks = [mark for _, mark in parts if mark is not None]
    for day in due:
        end = datetime.fromisoformat(day) + timedelta(days=1)
        assert all(end <= mark for mark in marks)
    with_marks = {topic for topic, mark in parts if mark is not None}
    if with_marks != TOPICS:
        assert due == {}, "a topic with no watermark at all holds every date back"
    else:
        assert horizon(manifests, TOPICS) == min(marks)


@given(partitions, st.sampled_from(sorted(TOPICS)))
def test_a_partition_that_landed_nothing_holds_back_only_what_its_topic_has_not_passed(
    parts, topic: str
) -> None:  # type: ignore[no-untyped-def]
    manifests = [progress(t, i, mark) for i, (t, mark) in enumerate(parts)]
    silent = progress(topic, len(parts), None)
    assert complete_dates([*manifests, silent], TOPICS) == complete_dates(manifests, TOPICS)
    landing_first = progress(topic, len(parts), None, pending=True)
    assert complete_dates([*manifests, landing_first], TOPICS) == {}, (
        "rows of unknown dates are being written"
    )


def test_a_silent_partition_no_longer_blocks_the_others() -> None:
    passed = datetime(2026, 11, 28, 0, 5)
    manifests = [progress(t, 0, passed) for t in sorted(TOPICS)]
    manifests.append(progress(f"{PREFIX}traffic", 1, None))
    assert "2026-11-27" in complete_dates(manifests, TOPICS)


BUILD = Build("f1", 1, State.REQUESTED)


@pytest.mark.parametrize(
    ("build", "outcome", "requested", "after", "alert"),
    [
        (None, None, Build("f1", 1, State.REQUESTED), Build("f1", 1, State.REQUESTED), False),
        (BUILD, Outcome.PENDING, None, BUILD, False),
        (BUILD, Outcome.MISSING, BUILD, BUILD, False),
        (BUILD, Outcome.SUCCEEDED, None, Build("f1", 1, State.BUILT), False),
        (
            BUILD,
            Outcome.FAILED,
            Build("f1", 2, State.REQUESTED),
            Build("f1", 2, State.REQUESTED),
            False,
        ),
        (
            Build("f1", 3, State.REQUESTED),
            Outcome.FAILED,
            None,
            Build("f1", 3, State.EXHAUSTED),
            True,
        ),
        (Build("f1", 3, State.EXHAUSTED), None, None, Build("f1", 3, State.EXHAUSTED), True),
        (Build("f1", 3, State.GIVEN_UP), None, None, Build("f1", 3, State.GIVEN_UP), False),
        (
            Build("f0", 3, State.GIVEN_UP),
            None,
            Build("f1", 1, State.REQUESTED),
            Build("f1", 1, State.REQUESTED),
            False,
        ),
        (Build("f1", 1, State.BUILT), None, None, Build("f1", 1, State.BUILT), False),
    ],
)
def test_plan(build, outcome, requested, after, alert) -> None:  # type: ignore[no-untyped-def]
    step = builds.plan(
        {"d": "f1"}, {"d": build} if build else {}, {"d": outcome} if outcome else {}
    )
    assert step.requests.get("d") == requested
    assert step.builds["d"] == after
    assert ("d" in step.alerts) == alert


@given(st.lists(st.sampled_from(list(Outcome)), max_size=30))
def test_a_date_and_content_gets_at_most_max_attempts_runs(outcomes) -> None:  # type: ignore[no-untyped-def]
    known: dict[str, Build] = {}
    attempts = set()
    for outcome in outcomes:
        step = builds.plan({"d": "f1"}, known, {"d": outcome})
        attempts |= {b.attempt for b in step.requests.values()}
        known = {d: builds.given_up(b) if d in step.alerts else b for d, b in step.builds.items()}
        assert builds.load(orjson.loads(orjson.dumps(builds.dump(known)))) == known
    assert attempts <= set(range(1, builds.MAX_ATTEMPTS + 1))
