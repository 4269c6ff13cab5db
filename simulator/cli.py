"""`smartcity simulate`: live readings at a target rate, or a past day as fast as Kafka takes it."""

from __future__ import annotations

import math
import os
import re
import time
from datetime import UTC, datetime
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from simulator.anomalies import DEFAULT_RATE_PER_HOUR
from simulator.encoding import format_event_time
from simulator.faults import FaultConfig, FaultSpecError
from simulator.openweather import API_KEY_ENV, OpenWeatherSource
from simulator.producer import ReadingProducer, TopicsMissing
from simulator.registry import (
    Registry,
    SensorCountError,
    build_registry,
    parse_sensor_counts,
    registry_from_table,
)
from simulator.runner import run, stop_on_signals
from simulator.simulation import Simulation, SimulationConfig
from simulator.summary import build_summary, write_ground_truth
from smartcity.cli_support import UserError, err_console, friendly_errors, settings_or_exit
from smartcity.lake import Lake
from smartcity.registry import (
    RegistryError,
    import_registry,
    load_registry,
    table_rows,
    validated_table,
)
from smartcity.settings import SENSOR_TYPES

DEFAULT_SENSORS = "210"
LIVE_INTERVAL_S = 0.1  # 210 sensors every 0.1 s: the 2,100 msgs/s of the default city
BACKFILL_INTERVAL_S = 10.0  # a day of the default city: 1.8 M readings
DAY_S = 86_400
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(text: str, option: str) -> float:
    """Seconds from `90`, `90s`, `100ms`, `5m` or `1h`."""
    match = _DURATION.match(text)
    if not match or float(match[1]) <= 0:
        raise UserError(f"{option} {text!r}: expected a positive duration such as 100ms, 10s, 5m")
    return float(match[1]) * _UNIT_S[match[2]]


def parse_backfill_start(text: str) -> int:
    """Epoch ms of `YYYY-MM-DD` (midnight UTC) or `YYYY-MM-DDTHH:MM[:SS]` (UTC)."""
    try:
        start = datetime.fromisoformat(text.removesuffix("Z"))
    except ValueError:
        raise UserError(
            f"--backfill-date {text!r}: expected YYYY-MM-DD or YYYY-MM-DDTHH:MM (UTC)"
        ) from None
    if start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    return int(start.timestamp() * 1000)


def _interval_ms(seconds: float) -> int:
    milliseconds = round(seconds * 1000)
    if milliseconds < 1:
        raise UserError(
            "the reporting interval must be at least 1 ms (lower --rate or add sensors)"
        )
    return milliseconds


def city_registry(lake: Lake, sensors: str | None) -> tuple[Registry, bool]:
    """The sensors to simulate, and whether they are a city of the simulator's own that the
    lake must be given: the registry in the lake when no count is asked for, else the
    default city of that size (210 sensors when the lake has none)."""
    try:
        if sensors is None and (found := load_registry(lake)).version:
            return registry_from_table(found.table.filter(found.table.column("active"))), False
        return build_registry(parse_sensor_counts(sensors or DEFAULT_SENSORS)), True
    except SensorCountError as error:
        raise UserError(str(error)) from None
    except OSError as error:
        raise UserError(f"the sensor registry could not be read: {error}") from None


def import_city(lake: Lake, registry: Registry) -> None:
    """The simulator's city into the lake, validated like any city's file (`smartcity
    sensors import`)."""
    try:
        rows = table_rows(registry.table())
        import_registry(lake, validated_table((f"sensor {row['sensor_id']}", row) for row in rows))
    except RegistryError as error:
        raise UserError(str(error)) from None
    except OSError as error:
        raise UserError(f"the sensor registry could not be imported: {error}") from None


@friendly_errors
def simulate(
    duration: str = typer.Option(
        None,
        help="Live: how long to run (90, 90s, 5m, 1h; default until Ctrl-C). Backfill: the span "
        "of event time to cover from the start (default: the rest of the day).",
    ),
    rate: float = typer.Option(
        None,
        min=0.001,
        help="Live: total messages/s, which sets the interval to sensors/rate (default 2100 for "
        "210 sensors). Backfill: a cap (default: as fast as the broker acknowledges).",
    ),
    backfill_date: str = typer.Option(
        None,
        "--backfill-date",
        help="Simulate a past day instead of now: YYYY-MM-DD (UTC) or YYYY-MM-DDTHH:MM start.",
    ),
    interval: str = typer.Option(
        None,
        help=f"Reporting interval of every sensor (default {LIVE_INTERVAL_S:g}s live, "
        f"{BACKFILL_INTERVAL_S:g}s backfill).",
    ),
    seed: int = typer.Option(
        42, help="Seed of readings, anomalies and faults (same seed, same bytes)."
    ),
    sensors: str = typer.Option(
        None,
        help="Simulate the default city with this many sensors (N, split 10:1:10, or "
        "traffic=N,weather=N,energy=N) and import it as the registry. Default: the registry "
        f"in the lake, else the default city of {DEFAULT_SENSORS}.",
    ),
    faults: str = typer.Option(
        "",
        help="Fault fractions per reading, e.g. malformed=0.01,duplicate=0.01 or all=0.001. Kinds: "
        "malformed, missing_field, wrong_type, unknown_sensor, out_of_range, duplicate, late, "
        "out_of_order.",
    ),
    anomaly_rate: float = typer.Option(
        DEFAULT_RATE_PER_HOUR, min=0, help="Planted anomalies per sensor per hour of event time."
    ),
    summary: Path = typer.Option(
        None, help="Run summary JSON (default <runtime dir>/simulate-summary.json)."
    ),
    ground_truth: Path = typer.Option(
        None, help="Planted anomalies, JSON lines (default <runtime dir>/ground-truth.jsonl)."
    ),
    live_weather_share: float = typer.Option(
        0.1,
        min=0,
        max=1,
        help=f"Live mode with {API_KEY_ENV} set: share of weather readings from OpenWeather.",
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Send realistic sensor readings to Kafka, with planted anomalies and faults on demand."""
    settings = settings_or_exit()
    try:
        fault_config = FaultConfig.parse(faults)
    except FaultSpecError as error:
        raise UserError(str(error)) from None
    lake = Lake.from_settings(settings)
    registry, own_city = city_registry(lake, sensors)
    backfill = backfill_date is not None
    if backfill:
        start_ms = parse_backfill_start(backfill_date)
        interval_s = parse_duration(interval, "--interval") if interval else BACKFILL_INTERVAL_S
        day_end_ms = (start_ms // (DAY_S * 1000) + 1) * DAY_S * 1000
        span_s = parse_duration(duration, "--duration") if duration else None
        span_ms = round(span_s * 1000) if span_s else day_end_ms - start_ms
        interval_ms = _interval_ms(interval_s)
        steps: int | None = max(1, math.ceil(span_ms / interval_ms))
        seconds_per_step = registry.size / rate if rate else None
    else:
        if rate and interval:
            raise UserError(
                "live mode: give --rate or --interval, not both (rate = sensors/interval)"
            )
        interval_s = registry.size / rate if rate else LIVE_INTERVAL_S
        if interval:
            interval_s = parse_duration(interval, "--interval")
        interval_ms = _interval_ms(interval_s)
        now_ms = time.time_ns() // 1_000_000
        start_ms = (
            -(-now_ms // interval_ms) * interval_ms
        )  # on the interval grid: seq = t / interval
        run_s = parse_duration(duration, "--duration") if duration else None
        steps = max(1, round(run_s * 1000 / interval_ms)) if run_s else None
        seconds_per_step = interval_ms / 1000
    live_weather = None
    if not backfill and os.environ.get(API_KEY_ENV) and live_weather_share > 0:
        live_weather = OpenWeatherSource(
            os.environ[API_KEY_ENV], share=live_weather_share, interval_s=interval_ms / 1000
        )
    simulation = Simulation(
        registry,
        SimulationConfig(
            start_ms=start_ms,
            interval_ms=interval_ms,
            seed=seed,
            anomaly_rate_per_hour=anomaly_rate,
            faults=fault_config,
        ),
        live_weather=live_weather,
    )
    try:
        producer = ReadingProducer(settings)
    except TopicsMissing as error:
        raise UserError(str(error)) from None
    if own_city:
        import_city(lake, registry)
    summary_path = summary or settings.runtime_dir / "simulate-summary.json"
    truth_path = ground_truth or settings.runtime_dir / "ground-truth.jsonl"
    console = Console(stderr=True)
    mode = "backfill" if backfill else "live"
    err_console.print(
        f"{mode}: {registry.size} sensors every {interval_ms / 1000:g} s from "
        f"{format_event_time(start_ms)}"
        + (f", {steps * registry.size:,} readings" if steps else ", until Ctrl-C")
    )
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:>12,.0f} acknowledged"),
        TextColumn("{task.fields[rate]:>10,.0f} msgs/s"),
        TimeElapsedColumn(),
        console=console,
        disable=not progress,
        refresh_per_second=4,
    )
    total = steps * registry.size if steps else None
    with bar, stop_on_signals() as stop:
        task = bar.add_task(mode, total=total, rate=0.0)
        started = time.monotonic()

        def report(acknowledged: int, _produced: int) -> None:
            elapsed = max(time.monotonic() - started, 1e-9)
            bar.update(task, completed=acknowledged, rate=acknowledged / elapsed)

        outcome = run(
            simulation,
            producer,
            steps=steps,
            seconds_per_step=seconds_per_step,
            stop=stop,
            progress=report,
            first_due=None if backfill else start_ms / 1000,
        )
    run_summary = build_summary(
        producer,
        simulation.planted,
        {t: settings.reading_topic(t) for t in SENSOR_TYPES},
        mode=mode,
        seed=seed,
        sensors=registry.counts,
        interval_s=interval_ms / 1000,
        first_event_time=format_event_time(start_ms),
        end_event_time=format_event_time(simulation.time_of(outcome.steps)),
        steps=outcome.steps,
        wall_seconds=outcome.wall_seconds,
        interrupted=outcome.interrupted,
        unconfirmed=outcome.unconfirmed,
        live_weather=live_weather.counts() if live_weather else None,
    )
    if live_weather is not None:
        live_weather.close()
    run_summary.write(summary_path)
    write_ground_truth(truth_path, simulation.planted)
    run_summary.print(console)
    err_console.print(f"summary: {summary_path}; ground truth: {truth_path}")
    if producer.fatal is not None:
        raise UserError(f"the producer stopped on a fatal error: {producer.fatal.str()}")
    if run_summary.failed or outcome.unconfirmed:
        raise typer.Exit(code=1)
