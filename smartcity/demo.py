"""`smartcity demo`: the whole platform on embedded defaults, one step after another.

Each step runs the platform's own commands (simulator, stream worker) as a user would, or
its own code in process (the Dagster sensor and job), so the demo shows exactly what the
parts do and measures each stage's wall time.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import partial
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn

import httpx
import orjson
import psutil
import pyarrow.parquet as pq
import typer
from rich.console import Console
from rich.table import Table

from smartcity.lake import Lake
from smartcity.layout import live_key, quality_key, table_partition_key
from smartcity.services import kafka_broker, manager
from smartcity.services.processes import (
    family,
    free_port,
    spawn,
    stop_sessions,
    terminate,
    wait_until,
)
from smartcity.settings import SENSOR_TYPES, Settings
from smartcity.topics import create_topics

if TYPE_CHECKING:
    import dagster as dg

    from smartcity_dagster.console import StepConsole
    from smartcity_dagster.warm_start import SparkWarmStart

FAULTS = (
    "malformed=0.002,missing_field=0.001,out_of_range=0.002,unknown_sensor=0.001,"
    "duplicate=0.005,late=0.002,out_of_order=0.002"
)
WORKER_ID = "demo-worker"
BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]
API_PORT = 8000
DAGSTER_UI_PORT = 3000
SERVE_START_TIMEOUT_S = 180.0
"""The Dagster webserver answers only once it has loaded the code location, slow on 2 cores."""
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
SESSIONS_GRACE_S = 3.0
"""After Ctrl-C, how long the served processes get to finish (the worker commits to the broker,
so they go first) before SIGKILL. Dagster's webserver and daemon use all of it: their code
servers wait for open calls."""
BROKER_GRACE_S = 2.5
LEFTOVERS_GRACE_S = 1.0
"""With half a second after each SIGKILL and about two for Python to exit, these three keep
the promise: all gone within 10 s of Ctrl-C."""
INTERRUPTED = "UNEXPECTED_TERMINATION"
"""Dagster's failure reason for a run whose process was interrupted (Ctrl-C, SIGTERM)."""


@dataclass
class DemoRun:
    settings: Settings
    day: str
    interval_s: int
    steps: StepConsole
    folder: Path
    stages: dict[str, float] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)
    spark: SparkWarmStart | None = None

    @property
    def console(self) -> Console:
        return self.steps.console

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """A line with the stage's time (the Dagster steps' lines within it, indented), and
        the time for the summary."""
        with self.steps.step(name):
            yield
        self.stages[name] = self.steps.durations[name]


def env_of(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "SMARTCITY_RUNTIME_DIR": str(settings.runtime_dir),
        "SMARTCITY_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "SMARTCITY_LAKE_URI": settings.lake_uri,
        "SMARTCITY_TOPIC_PREFIX": settings.topic_prefix,
    }


def smartcity(run: DemoRun, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(BIN / "smartcity"), *args],
        env=env_of(run.settings),
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"smartcity {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return result


def prepare(run: DemoRun) -> None:
    with run.stage("local Kafka broker and topics"):
        records = manager.up(run.settings, [kafka_broker.NAME])
        bootstrap = records[kafka_broker.NAME].env["SMARTCITY_KAFKA_BOOTSTRAP"]
        run.settings = run.settings.model_copy(update={"kafka_bootstrap": bootstrap})
        create_topics(run.settings)


def simulate(run: DemoRun) -> None:
    with run.stage(f"simulate {run.day} (210 sensors every {run.interval_s} s)"):
        smartcity(
            run,
            "simulate",
            "--backfill-date",
            run.day,
            "--interval",
            f"{run.interval_s}s",
            "--faults",
            FAULTS,
            "--anomaly-rate",
            "0.3",
            "--no-progress",
            "--summary",
            str(run.folder / "summary.json"),
            "--ground-truth",
            str(run.folder / "ground-truth.jsonl"),
        )
        run.facts["summary"] = orjson.loads((run.folder / "summary.json").read_bytes())
    with run.stage("live readings for today (moves the watermark past midnight)"):
        # The batch step's Spark session starts while the live readings and the stream
        # worker run (they mostly wait on the clock and the broker).
        from smartcity_dagster.warm_start import SparkWarmStart

        run.spark = SparkWarmStart(run.settings)
        smartcity(
            run,
            "simulate",
            "--duration",
            "15",
            "--interval",
            "5s",
            "--no-progress",
            "--summary",
            str(run.folder / "live-summary.json"),
            "--ground-truth",
            str(run.folder / "live-ground-truth.jsonl"),
        )


def stream(run: DemoRun) -> None:
    with run.stage("stream worker: validate, land, detect"):
        smartcity(
            run, "stream", "--until-idle", "5", "--metrics-port", "0", "--worker-id", WORKER_ID
        )
        lake = Lake.from_settings(run.settings)
        run.facts["worker"] = orjson.loads(lake.read_bytes(live_key(WORKER_ID, "status.json")))


def batch(run: DemoRun) -> None:
    import dagster as dg

    try:
        _materialize(run)
    except dg.DagsterExecutionInterruptedError:
        stop_now()
    stop_spark()
    stop_leftovers()


def stop_spark() -> None:
    """The run's Spark session stopped, then the py4j gateway to its JVM shut down, before
    `stop_leftovers` kills that JVM: under a live session, pyspark's threads print tracebacks
    when the JVM goes (the accumulator server's end of file), and while the gateway is up,
    every Java object Python frees later (Dagster's run objects go with the next garbage
    collection, during the summary) is a command py4j sends to the dead JVM, which it logs
    as an error on the terminal that the quiet console has given back. A shut-down gateway
    sends nothing. pyspark has no public call for this; `SparkContext._gateway` is the
    py4j `JavaGateway` it launched, whose `shutdown` is py4j's public API, and it is reset so
    that a later session in the process would launch a JVM of its own
    (`tests/test_warm_start.py` guards both). The session is the default one, not this
    thread's active one: the warm start made it in a thread of its own."""
    from pyspark import SparkContext
    from pyspark.errors import PySparkRuntimeError
    from pyspark.sql import SparkSession

    try:
        session = SparkSession.active()
    except PySparkRuntimeError:  # no session was started
        return
    session.stop()
    gateway = SparkContext._gateway
    if gateway is not None:
        gateway.shutdown()
        SparkContext._gateway = None
        SparkContext._jvm = None


def _materialize(run: DemoRun) -> None:
    os.environ.update({k: v for k, v in env_of(run.settings).items() if k.startswith("SMARTCITY_")})
    import dagster as dg

    from smartcity_dagster.home import dagster_home
    from smartcity_dagster.runs import materialize_daily
    from smartcity_dagster.sensors import stream_progress_sensor

    dagster_home(run.settings)
    stage = run.stage(f"Dagster: sensor sees {run.day} complete, materializes it")
    with stage, dg.DagsterInstance.get() as instance:
        if run.spark is not None:
            run.spark.wait()
        result = stream_progress_sensor(dg.build_sensor_context(instance=instance))
        requested = [r for r in result.run_requests if r.partition_key == run.day]
        if not requested:
            raise RuntimeError(f"the sensor did not request {run.day}")
        outcome = materialize_daily(
            instance,
            run.day,
            run.steps,
            raise_on_error=False,
            tags={
                "dagster/sensor_name": "stream_progress_sensor",
                "dagster/run_key": requested[0].run_key or "",
            },
        )
        if _interrupted(outcome):
            stop_now()
        run.facts["batch_success"] = outcome.success


def _interrupted(outcome: dg.ExecuteInProcessResult) -> bool:
    """Without `raise_on_error`, `execute_in_process` turns a Ctrl-C into a failed run."""
    return any(
        event.is_job_failure
        and event.job_failure_data.failure_reason is not None
        and event.job_failure_data.failure_reason.value == INTERRUPTED
        for event in outcome.all_events
    )


def summarize(run: DemoRun) -> bool:
    """Print the summary table; True when nothing was lost and every blocking check passed."""
    from smartcity_stream.quality import Span, detection_quality

    lake = Lake.from_settings(run.settings)
    summary, worker = run.facts["summary"], run.facts["worker"]
    acknowledged = sum(t["readings_acknowledged"] for t in summary["topics"].values())
    clean_rows, duplicates, sizes, checks = 0, 0, {}, []
    for sensor_type in SENSOR_TYPES:
        asset = f"clean_{sensor_type}"
        if lake.exists(table_partition_key(asset, run.day)):
            clean_rows += pq.read_metadata(
                lake.path(table_partition_key(asset, run.day)), filesystem=lake.filesystem
            ).num_rows
        for name in (f"raw_{sensor_type}", asset):
            if lake.exists(quality_key(name, run.day)):
                record = orjson.loads(lake.read_bytes(quality_key(name, run.day)))
                checks += [(name, c) for c in record["checks"]]
    for _, check in checks:
        if check["name"] == "no_loss":
            duplicates += check["metadata"]["duplicates"]
    for info in lake.list_files("tables"):
        if f"date={run.day}" in info.path and info.path.endswith(".parquet"):
            table = info.path.split("tables/")[1].split("/")[0]
            sizes[table] = sizes.get(table, 0) + info.size
    table = Table(title=f"smartcity demo: {run.day}", show_header=True)
    table.add_column("what")
    table.add_column("figure", justify="right")
    table.add_row(
        "readings produced / acknowledged",
        f"{sum(t['produced'] for t in summary['topics'].values()):,} / {acknowledged:,}",
    )
    table.add_row(
        "messages consumed / landed (incl. live)", f"{worker['consumed']:,} / {worker['landed']:,}"
    )
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(worker["dead_letters_by_reason"].items()))
    table.add_row("dead-lettered", f"{worker['dead_letters']:,} ({reasons})")
    table.add_row(f"clean readings of {run.day}", f"{clean_rows:,}")
    table.add_row("duplicates removed", f"{duplicates:,}")
    events_key = table_partition_key("anomaly_events", run.day)
    if lake.exists(events_key):
        events = lake.read_parquet(events_key).to_pylist()
        truth = [
            orjson.loads(line)
            for line in (run.folder / "ground-truth.jsonl").read_bytes().splitlines()
        ]
        planted = [Span(t["sensor_id"], t["kind"], _ms(t["start"]), _ms(t["end"])) for t in truth]
        detections = [
            (e["sensor_id"], e["kind"], int(e["event_time"].timestamp() * 1000))
            for e in events
            if e["source"] in ("stream", "both")
        ]
        for kind, q in detection_quality(planted, detections, run.interval_s * 1000).items():
            table.add_row(
                f"anomalies {kind}",
                f"planted {q.planted}, found {q.found}, precision {q.precision:.2f}, "
                f"recall {q.recall:.2f}",
            )
    passed = sum(1 for _, c in checks if c["passed"])
    blocking_failed = [f"{n}.{c['name']}" for n, c in checks if c["blocking"] and not c["passed"]]
    table.add_row(
        "asset checks passed",
        f"{passed} / {len(checks)}"
        + (f" (blocking failed: {', '.join(blocking_failed)})" if blocking_failed else ""),
    )
    raw_json = acknowledged * 230
    parquet = sum(sizes.values())
    table.add_row("Parquet written (tables)", f"{parquet / 1e6:.1f} MB")
    table.add_row(
        "compression vs JSON (clean)",
        f"~{raw_json / max(sum(v for k, v in sizes.items() if k.startswith('clean_')), 1):.0f}x",
    )
    for name, seconds in run.stages.items():
        table.add_row(f"time: {name}", f"{seconds:.1f} s")
    run.console.print(table)
    lost = clean_rows != acknowledged
    if lost:
        run.console.print(
            f"[red]readings lost or doubled[/]: {acknowledged} acknowledged, {clean_rows} clean"
        )
    return not lost and not blocking_failed and run.facts.get("batch_success", False)


def _ms(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def dagster_webserver_command(port: int) -> list[str]:
    """Dagster's UI over the project's `workspace.yaml`, on loopback."""
    return [
        str(BIN / "dagster-webserver"),
        "-w",
        "workspace.yaml",
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
    ]


def served_commands(run: DemoRun, api_port: int, ui_port: int) -> dict[str, list[str]]:
    return {
        "worker": [
            str(BIN / "smartcity"),
            "stream",
            "--worker-id",
            WORKER_ID,
            "--metrics-port",
            "0",
        ],
        "simulator": [
            str(BIN / "smartcity"),
            "simulate",
            "--interval",
            "1s",
            "--no-progress",
            "--summary",
            str(run.folder / "live-summary.json"),
        ],
        "api": [str(BIN / "smartcity"), "api", "--port", str(api_port)],
        "dagster-webserver": dagster_webserver_command(ui_port),
        "dagster-daemon": [str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"],
    }


def port_for(wanted: int, what: str, console: Console) -> int:
    """The port people expect when it is free; else any, said in one line."""
    port = free_port(wanted)
    if port != wanted:
        console.print(f"port {wanted} is taken: the {what} is on {port}")
    return port


def examples(api: str, day: str) -> list[str]:
    """The requests printed for the user to try: each answers 2xx while the demo serves
    (tests/test_demo.py runs them all)."""
    start = f"{day}T00:00:00Z"
    end = f"{date.fromisoformat(day) + timedelta(days=1)}T00:00:00Z"
    return [
        f"{api}{path}"
        for path in (
            "/health",
            "/api/v1/sensors?limit=5",
            "/api/v1/sensors/latest?limit=5",
            f"/api/v1/aggregates/daily?date={day}&sensor_type=traffic&granularity=day",
            f"/api/v1/anomalies?source=all&start={start}&end={end}&limit=10",
            f"/api/v1/quality?date={day}",
        )
    ]


def addresses(api: str, ui: str, day: str) -> list[str]:
    return [
        f"Map:        {api}/map",
        f"API docs:   {api}/docs",
        f"Dagster UI: {ui}/",
        "Try:",
        *(f"  curl -s '{url}'" for url in examples(api, day)),
        "Ctrl-C stops everything.",
    ]


def _answers(url: str) -> bool:
    try:
        httpx.get(url, timeout=2.0)
    except httpx.HTTPError:
        return False
    return True


def serve(run: DemoRun) -> None:
    """API, Dagster UI and daemon, live simulation and worker, until Ctrl-C.

    Each runs in its own session, so a terminal's Ctrl-C reaches only the demo, which then
    stops them all together (grandchildren such as Dagster's code servers included).
    """
    api_port = port_for(API_PORT, "API", run.console)
    ui_port = port_for(DAGSTER_UI_PORT, "Dagster UI", run.console)
    api, ui = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{ui_port}"
    logs = run.settings.runtime_dir / "demo-logs"
    started: dict[str, psutil.Process] = {}
    try:
        for name, command in served_commands(run, api_port, ui_port).items():
            started[name] = spawn(command, logs / f"{name}.log", env_of(run.settings), REPO)
        for name, url in (("api", f"{api}/health"), ("dagster-webserver", f"{ui}/server_info")):
            ready = partial(_answers, url)
            wait_until(ready, started[name], SERVE_START_TIMEOUT_S, name, logs / f"{name}.log")
        for line in addresses(api, ui, run.day):
            run.console.print(line, markup=False, highlight=False, soft_wrap=True)
        while True:
            signal.pause()
    except KeyboardInterrupt:
        run.console.print("Stopping everything ...")
    finally:
        stop_sessions(list(started.values()), SESSIONS_GRACE_S)


def stop_now(*_: int | FrameType | None) -> NoReturn:
    """The first Ctrl-C (or SIGTERM) ends the demo; later ones are ignored, so that they
    cannot cut the clean-up short and leave processes behind."""
    ignore_stop_signals()
    raise KeyboardInterrupt


def ignore_stop_signals() -> None:
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


def stop_leftovers() -> None:
    """What the steps left in the demo's own process group: Spark's JVM (pyspark keeps it, heap
    and all, for a next session that never comes), Dagster's log tails, an interrupted step's
    child. The broker and the served processes have sessions of their own."""
    own = os.getpgrp()
    terminate([p for p in family(os.getpid())[1:] if _group_of(p) == own], LEFTOVERS_GRACE_S)


def _group_of(process: psutil.Process) -> int | None:
    try:
        return os.getpgid(process.pid)
    except ProcessLookupError:
        return None


def shut_down(settings: Settings) -> None:
    """The broker after the served processes (they commit to it on their way out)."""
    manager.down(settings, BROKER_GRACE_S)
    stop_leftovers()


def run_demo(
    settings: Settings, small: bool, no_serve: bool, interval_s: int | None, verbose: bool = False
) -> bool:
    """True when nothing was lost and every blocking check passed; a Ctrl-C before the
    summary raises KeyboardInterrupt, once everything the demo started has stopped.

    The steps print a line each; what the engines print while they run (Dagster, Spark's
    JVM) goes to a file in `<runtime>/logs/`, named after the summary, unless `verbose`."""
    from smartcity_dagster.console import StepConsole, log_file

    log = None if verbose else log_file(settings.runtime_dir, "demo")
    steps_console = StepConsole(Console(width=max(Console().width, 110)), log)
    day = (datetime.now(UTC).date() - timedelta(days=1)).isoformat()
    folder = settings.runtime_dir / "demo"
    folder.mkdir(parents=True, exist_ok=True)
    run = DemoRun(settings, day, interval_s or (600 if small else 60), steps_console, folder)
    steps: list[Callable[[DemoRun], None]] = [prepare, simulate, stream, batch]
    for sig in STOP_SIGNALS:
        signal.signal(sig, stop_now)
    try:
        with run.steps:
            for step in steps:
                step(run)
        ok = summarize(run)
        run.steps.print_log_file()
        if not no_serve:
            serve(run)
        return ok
    finally:
        ignore_stop_signals()
        shut_down(run.settings)


def demo(
    no_serve: bool = typer.Option(
        False,
        "--no-serve",
        help="Stop after the summary; exit 0 only if nothing was lost "
        "and every blocking check passed.",
    ),
    small: bool = typer.Option(False, "--small", help="A coarse day (every 10 min), for tests."),
    interval: int = typer.Option(None, min=1, help="Reporting interval of the simulated day, s."),
    verbose: bool = typer.Option(
        False, "-v", "--verbose", help="Dagster's and Spark's detail on the console, not in a log."
    ),
) -> None:
    """The whole platform on embedded defaults: simulate yesterday, stream, build, serve."""
    from smartcity.cli_support import settings_or_exit

    try:
        ok = run_demo(settings_or_exit(), small, no_serve, interval, verbose)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    raise typer.Exit(0 if ok else 1)
