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
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
import typer
from rich.console import Console
from rich.table import Table

from smartcity.lake import Lake
from smartcity.layout import live_key, quality_key, table_partition_key
from smartcity.services import kafka_broker, manager
from smartcity.services.processes import free_port, stop_sessions
from smartcity.settings import SENSOR_TYPES, Settings
from smartcity.topics import create_topics

FAULTS = (
    "malformed=0.002,missing_field=0.001,out_of_range=0.002,unknown_sensor=0.001,"
    "duplicate=0.005,late=0.002,out_of_order=0.002"
)
WORKER_ID = "demo-worker"
BIN = Path(sys.executable).parent


@dataclass
class DemoRun:
    settings: Settings
    day: str
    interval_s: int
    console: Console
    folder: Path
    stages: dict[str, float] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.monotonic()
        with self.console.status(f"{name} ..."):
            yield
        self.stages[name] = time.monotonic() - started
        self.console.print(f"[green]✓[/] {name} ({self.stages[name]:.1f} s)")


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
    warnings.filterwarnings("ignore", module="dagster")
    os.environ.update({k: v for k, v in env_of(run.settings).items() if k.startswith("SMARTCITY_")})
    import dagster as dg

    from smartcity_dagster.assets.quality import sensor_registry
    from smartcity_dagster.cli import dagster_home
    from smartcity_dagster.definitions import defs
    from smartcity_dagster.sensors import stream_progress_sensor

    dagster_home(run.settings)
    stage = run.stage(f"Dagster: sensor sees {run.day} complete, materializes it")
    with stage, dg.DagsterInstance.get() as instance:
        result = stream_progress_sensor(dg.build_sensor_context(instance=instance))
        requested = [r for r in result.run_requests if r.partition_key == run.day]
        if not requested:
            raise RuntimeError(f"the sensor did not request {run.day}")
        dg.materialize([sensor_registry], instance=instance, resources=defs.resources)
        job = defs.resolve_job_def("daily_pipeline")
        outcome = job.execute_in_process(
            partition_key=run.day,
            instance=instance,
            raise_on_error=False,
            run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
            tags={
                "dagster/sensor_name": "stream_progress_sensor",
                "dagster/run_key": requested[0].run_key or "",
            },
        )
        run.facts["batch_success"] = outcome.success


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


def serve(run: DemoRun) -> None:
    """API, Dagster UI and daemon, live simulation and worker, until Ctrl-C."""
    api_port, ui_port = free_port(), free_port()
    env = env_of(run.settings)
    repo = Path(__file__).resolve().parents[1]
    commands = {
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
    logs = run.settings.runtime_dir / "demo-logs"
    logs.mkdir(parents=True, exist_ok=True)
    processes = [
        subprocess.Popen(
            command,
            env=env,
            cwd=repo,
            start_new_session=True,
            stdout=(logs / f"{name}.log").open("ab"),
            stderr=subprocess.STDOUT,
        )
        for name, command in commands.items()
    ]
    run.console.print(f"API:        http://127.0.0.1:{api_port}/docs")
    run.console.print(f"Dagster UI: http://127.0.0.1:{ui_port}/")
    for path in (
        "/health",
        "/api/v1/sensors/latest?limit=5",
        f"/api/v1/aggregates/daily?date={run.day}&sensor_type=traffic&granularity=day",
        "/api/v1/anomalies?source=all",
        "/api/v1/quality",
    ):
        run.console.print(f"  curl -s 'http://127.0.0.1:{api_port}{path}'")
    run.console.print("Ctrl-C stops everything.")
    try:
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        stop_sessions(processes)


def run_demo(settings: Settings, small: bool, no_serve: bool, interval_s: int | None) -> bool:
    console = Console(width=max(Console().width, 110))
    day = (datetime.now(UTC).date() - timedelta(days=1)).isoformat()
    folder = settings.runtime_dir / "demo"
    folder.mkdir(parents=True, exist_ok=True)
    run = DemoRun(settings, day, interval_s or (600 if small else 60), console, folder)
    steps: list[Callable[[DemoRun], None]] = [prepare, simulate, stream, batch]
    try:
        for step in steps:
            step(run)
        ok = summarize(run)
        if not no_serve:
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
            serve(run)
        return ok
    finally:
        manager.down(run.settings)


def demo(
    no_serve: bool = typer.Option(
        False,
        "--no-serve",
        help="Stop after the summary; exit 0 only if nothing was lost "
        "and every blocking check passed.",
    ),
    small: bool = typer.Option(False, "--small", help="A coarse day (every 10 min), for tests."),
    interval: int = typer.Option(None, min=1, help="Reporting interval of the simulated day, s."),
) -> None:
    """The whole platform on embedded defaults: simulate yesterday, stream, build, serve."""
    from smartcity.cli_support import settings_or_exit

    ok = run_demo(settings_or_exit(), small, no_serve, interval)
    raise typer.Exit(0 if ok else 1)
