"""Every failed asset check reaches the webhook exactly once, in order, through an outage
(503s, then nothing listening) and a crash between a POST and the cursor; the failure
counts in the lake come out right."""

import threading
import warnings
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import dagster as dg
import orjson
import pytest

from smartcity.lake import Lake
from smartcity.layout import check_failures_key
from smartcity.services.processes import free_port
from smartcity.settings import load_settings
from smartcity_dagster import alerts
from tests.dagster_support import dagster_home

DAYS = dg.DailyPartitionsDefinition(start_date="2026-11-01", timezone="UTC", end_offset=1)
CHECKS = ("in_range", "fresh", "unique")
FAIL_TAG = "test/failing"
FAST = alerts.Delivery(attempts=3, first_wait_s=0.01, max_wait_s=0.05, timeout_s=5, budget_s=60)


@dg.asset(
    partitions_def=DAYS,
    check_specs=[dg.AssetCheckSpec(name, asset="reading") for name in CHECKS],
)
def reading(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    """Fails the checks its run's tag names: ERROR for `in_range`, WARN for the others."""
    failing = context.run.tags[FAIL_TAG].split(",")
    return dg.MaterializeResult(
        check_results=[
            dg.AssetCheckResult(
                check_name=name,
                passed=name not in failing,
                severity=dg.AssetCheckSeverity.ERROR
                if name == "in_range"
                else dg.AssetCheckSeverity.WARN,
                metadata={"bad_rows": 3 if name in failing else 0},
            )
            for name in CHECKS
        ]
    )


class Webhook:
    """An alert receiver on a fixed port: answers 503 to the next `unavailable` POSTs, can
    be stopped (then a POST finds nothing listening) and started again on the same port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/alerts"
        self.received: list[tuple[str, dict]] = []
        self.unavailable = 0
        self.server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        webhook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = orjson.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if webhook.unavailable > 0:
                    webhook.unavailable -= 1
                    self.send_response(503)
                else:
                    webhook.received.append((self.headers["Idempotency-Key"], body))
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                """Quiet."""

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    hook.start()
    yield hook
    hook.stop()


@pytest.fixture
def instance(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, webhook: Webhook
) -> Iterator[dg.DagsterInstance]:
    """The project's instance configuration (one SQLite event log for all runs), a local
    lake and the webhook."""
    for name in ("SMARTCITY_KAFKA_BOOTSTRAP", "SMARTCITY_S3_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SMARTCITY_LAKE_URI", (tmp_path / "lake").as_uri())
    monkeypatch.setenv("SMARTCITY_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("SMARTCITY_ALERT_WEBHOOK_URL", webhook.url)
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home(tmp_path / "dagster")))
    monkeypatch.setattr(alerts, "DELIVERY", FAST)
    with dg.DagsterInstance.get() as dagster_instance:
        yield dagster_instance


def run(instance: dg.DagsterInstance, day: str, *failing: str) -> list[tuple[str, str, str]]:
    """Materialize `reading` for `day` with `failing` checks failed; the failures it
    evaluated, as (check, partition, run id)."""
    result = dg.materialize(
        [reading], instance=instance, partition_key=day, tags={FAIL_TAG: ",".join(failing)}
    )
    assert result.success
    return [(name, day, result.run_id) for name in CHECKS if name in failing]


def tick(instance: dg.DagsterInstance, cursor: str | None) -> str | None:
    """One evaluation of the alert sensor; fails on any deprecation warning it raises."""
    from smartcity_dagster.sensors import check_failure_alerts

    context = dg.build_sensor_context(instance=instance, cursor=cursor)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_failure_alerts(context)
    deprecated = [w for w in caught if issubclass(w.category, DeprecationWarning)]
    assert not deprecated, [str(w.message) for w in deprecated]
    return context.cursor


def counts(lake: Lake) -> dict[str, int]:
    key = check_failures_key()
    return orjson.loads(lake.read_bytes(key)) if lake.exists(key) else {}


def test_each_failure_is_delivered_once_through_an_outage(
    instance: dg.DagsterInstance, webhook: Webhook
) -> None:
    lake = Lake.from_settings(load_settings())
    expected = run(instance, "2026-11-27", "in_range", "fresh")

    webhook.unavailable = 10**6  # up, but answering 503 to everything
    cursor = tick(instance, None)
    assert webhook.received == [] and counts(lake) == {}
    expected += run(instance, "2026-11-28", "unique")
    webhook.stop()  # and now nothing listens
    cursor = tick(instance, cursor)
    cursor = tick(instance, cursor)
    assert webhook.received == [] and counts(lake) == {}

    webhook.unavailable = 2  # back, with two more 503s first: the retries ride them out
    webhook.start()
    cursor = tick(instance, cursor)
    assert [(b["check"], b["partition"], b["run_id"]) for _, b in webhook.received] == expected
    assert counts(lake) == {
        "reading/in_range/ERROR": 1,
        "reading/fresh/WARN": 1,
        "reading/unique/WARN": 1,
    }

    before_last = cursor
    expected += run(instance, "2026-11-28", "in_range")
    cursor = tick(instance, cursor)
    assert tick(instance, cursor) == cursor, "nothing new: the cursor stays"
    # A tick that posted its alert but died before Dagster stored its cursor: the next tick
    # starts from the cursor before it.
    replayed = tick(instance, before_last)
    assert orjson.loads(replayed) == orjson.loads(cursor)

    keys = [key for key, _ in webhook.received]
    assert keys[-1] == keys[-2], "the replay carries the same Idempotency-Key"
    first_arrivals = {}
    for key, body in webhook.received:
        first_arrivals.setdefault(key, (body["check"], body["partition"], body["run_id"]))
    assert list(first_arrivals.values()) == expected, "each failure once, in order"
    assert all(body["kind"] == "check_failed" for _, body in webhook.received)
    assert counts(lake) == {
        "reading/in_range/ERROR": 2,
        "reading/fresh/WARN": 1,
        "reading/unique/WARN": 1,
    }, "the replay did not count twice"


def test_an_alert_the_receiver_refuses_holds_the_later_ones(
    instance: dg.DagsterInstance, webhook: Webhook
) -> None:
    """Delivery stops at the first alert that does not go out; the ones after it wait and
    then follow it, never overtake it."""
    expected = run(instance, "2026-11-27", "fresh") + run(instance, "2026-11-28", "unique")
    webhook.unavailable = FAST.attempts  # the first alert's every attempt
    cursor = tick(instance, None)
    assert webhook.received == []
    tick(instance, cursor)
    assert [(b["check"], b["partition"], b["run_id"]) for _, b in webhook.received] == expected
