"""`smartcity stream`: run one stream worker until stopped (or until idle)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from smartcity.cli_support import friendly_errors, settings_or_exit
from smartcity.kafka import cluster_metadata
from smartcity.lake import Lake
from smartcity.registry import RegistryFollower
from smartcity_stream.group import GROUP_ID, Fenced, PartitionsLost
from smartcity_stream.rule_file import load_rules
from smartcity_stream.worker import StreamWorker, WorkerOptions


@friendly_errors
def stream(
    until_idle: float = typer.Option(
        None, "--until-idle", min=0.1, help="Exit after this many seconds without messages."
    ),
    batch_size: int = typer.Option(
        WorkerOptions.batch_size, min=1, help="Most messages taken by one consume."
    ),
    land_messages: int = typer.Option(
        WorkerOptions.land_messages,
        min=1,
        help="Land once this many consumed messages wait in all (or --land-after passed).",
    ),
    land_after: float = typer.Option(
        WorkerOptions.land_after_s,
        min=0,
        help="Land once the oldest consumed message waited this long, seconds.",
    ),
    window: float = typer.Option(60.0, min=1, help="Tumbling window size, seconds."),
    lateness: float = typer.Option(30.0, min=0, help="Allowed lateness, seconds."),
    event_time_ahead: float = typer.Option(
        None,
        min=0,
        help="Dead-letter a reading dated more than this many seconds after its broker "
        "timestamp (a fast clock). Default: SMARTCITY_EVENT_TIME_AHEAD_S, 1 day.",
    ),
    event_time_behind: float = typer.Option(
        None,
        min=0,
        help="Dead-letter a reading dated more than this many seconds before its broker "
        "timestamp. Default: SMARTCITY_EVENT_TIME_BEHIND_S, 7 days; a backfill of older "
        "days widens it.",
    ),
    rules: Path = typer.Option(
        None, exists=True, dir_okay=False, help="JSON file overriding rule thresholds."
    ),
    metrics_host: str = typer.Option("127.0.0.1", help="Address of /metrics and /healthz."),
    metrics_port: int = typer.Option(9108, min=0, max=65535, help="Port (0: a free one)."),
    session_timeout: float = typer.Option(
        WorkerOptions.session_timeout_s,
        min=6,
        max=1800,
        help="Seconds without a heartbeat before the group gives this worker's partitions "
        "to the others.",
    ),
    group_id: str = typer.Option(
        GROUP_ID, help="Consumer group: the workers of one group share the partitions."
    ),
    worker_id: str = typer.Option(
        None,
        help="A stable name: names the live state and makes the worker a static group member, "
        "so a restart gets its partitions back at once.",
    ),
) -> None:
    """Consume the reading topics: validate, land exactly once, detect anomalies, live state."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    settings = settings_or_exit()
    cluster_metadata(settings)
    options = WorkerOptions(
        batch_size=batch_size,
        land_messages=land_messages,
        land_after_s=land_after,
        window_s=window,
        allowed_lateness_s=lateness,
        event_time_ahead_s=event_time_ahead,
        event_time_behind_s=event_time_behind,
        until_idle_s=until_idle,
        metrics_host=metrics_host,
        metrics_port=metrics_port,
        rules=load_rules(rules),
        group_id=group_id,
        session_timeout_s=session_timeout,
        **({"worker_id": worker_id, "static_member": True} if worker_id else {}),
    )
    registry = RegistryFollower.start(Lake.from_settings(settings), settings.registry_refresh_s)
    worker = StreamWorker(settings, registry.current.active_sensors(), options, registry)
    worker.install_signal_handlers()
    try:
        totals = worker.run()
    except (Fenced, PartitionsLost) as error:
        # Not a fault to fix: the group moved on while this worker was away. One line, and
        # an exit code a supervisor restarts on; the restart replays from the last commit.
        print(f"stream worker stopped: {error}", file=sys.stderr)
        raise typer.Exit(code=3) from None
    table = Table("consumed", "landed", "dead letters", "anomalies", "late", "files", "rounds")
    table.add_row(
        *(
            str(v)
            for v in (
                totals.consumed,
                totals.landed,
                totals.dead_letters,
                totals.anomalies,
                totals.late,
                totals.files,
                totals.rounds,
            )
        )
    )
    Console().print(table)
