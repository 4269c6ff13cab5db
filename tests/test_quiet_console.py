"""The quiet console of `smartcity materialize` (and the demo): a line per step with its time,
the detail of Dagster and Spark's JVM in a log file under the runtime folder, named in the last
line; `-v` brings the detail back to the console."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest
from rich.console import Console

from simulator.landed_day import land_simulated_day
from smartcity.lake import Lake
from smartcity.settings import SENSOR_TYPES, Settings, settings_env
from smartcity_dagster.console import (
    BUILD_SECONDS,
    LOGGERS_CONFIG,
    StepConsole,
    dagster_loggers,
    log_file,
)
from tests.stream_support import SMARTCITY

DAY = "2026-11-27"
INTERVAL_S = 900.0
"""Every sensor every 15 minutes: a small day that still runs every step."""
STEPS = {"sensor_registry", "sensor_tables", "anomaly_summary"}
TABLES = {
    *(f"{stage}_{t}" for stage in ("raw", "clean") for t in SENSOR_TYPES),
    *(f"daily_{t}_aggregates" for t in SENSOR_TYPES),
}
"""The tables `sensor_tables` builds, each with a line of its own under the step's."""
STEP_LINE = re.compile(r"^✓ (\w+) \((\d+\.\d) s\)$", re.MULTILINE)
TABLE_LINE = re.compile(r"^  ✓ (\w+) \((\d+\.\d) s\)$", re.MULTILINE)
LOG_LINE = re.compile(r"Full logs: (.+\.log)")
NOISE = ("DEBUG", "WARN", "Java versions")
"""What the console showed before: Dagster's event lines, log4j's and the JVM's warnings."""


def _plain() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=100), out


def test_steps_print_plain_lines_when_not_on_a_terminal() -> None:
    console, out = _plain()
    with StepConsole(console, log=None) as steps:
        steps.expect(["raw", "clean", "daily"])
        with steps.step("stage"):
            steps.start("raw")
            steps.finish("raw")
            steps.start("clean")
            steps.finish("clean", ok=False, note="blocking check failed\ntraceback ...")
            steps.skip("daily")
    lines = out.getvalue().splitlines()
    assert [re.sub(r"\d+\.\d s", "T s", line) for line in lines] == [
        "  ✓ raw (T s)",
        "  ✗ clean (T s): blocking check failed",
        "  - daily skipped",
        "✓ stage (T s)",
    ]
    assert set(steps.durations) == {"raw", "clean", "stage"}


def test_a_step_that_raises_gets_its_line() -> None:
    console, out = _plain()
    steps = StepConsole(console, log=None)
    with pytest.raises(RuntimeError), steps, steps.step("simulate"):
        raise RuntimeError("the simulator failed")
    assert re.fullmatch(r"✗ simulate \(\d+\.\d s\): the simulator failed\n", out.getvalue())


def test_a_dagster_run_reports_its_steps() -> None:
    @dg.asset
    def first() -> None:
        pass

    @dg.asset(deps=[first])
    def second() -> None:
        raise ValueError("no data for the day")

    @dg.asset(deps=[second])
    def third() -> None:
        pass

    console, out = _plain()
    with StepConsole(console, log=None) as steps:
        defs = dg.Definitions(assets=[first, second, third], loggers=dagster_loggers(steps))
        steps.expect(["first", "second", "third"])
        result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
            run_config={"loggers": LOGGERS_CONFIG}, raise_on_error=False
        )
        steps.not_run()
    assert not result.success
    lines = [re.sub(r"\d+\.\d s", "T s", line) for line in out.getvalue().splitlines()]
    assert lines[0] == "✓ first (T s)"
    assert lines[1].startswith("✗ second (T s): ") and "no data for the day" in lines[1]
    assert lines[2:] == ["- third not run"]


def test_a_step_of_several_tables_shows_each_with_its_own_time() -> None:
    @dg.multi_asset(specs=[dg.AssetSpec("fast"), dg.AssetSpec("slow")])
    def both() -> Iterator[dg.MaterializeResult]:
        yield dg.MaterializeResult(asset_key="fast", metadata={BUILD_SECONDS: 0.4})
        yield dg.MaterializeResult(asset_key="slow", metadata={"rows": 3})

    console, out = _plain()
    with StepConsole(console, log=None) as steps:
        defs = dg.Definitions(assets=[both], loggers=dagster_loggers(steps))
        defs.resolve_implicit_global_asset_job_def().execute_in_process(
            run_config={"loggers": LOGGERS_CONFIG}
        )
    lines = [
        re.sub(r"^✓ both \(\d+\.\d s\)$", "✓ both (T s)", line)
        for line in out.getvalue().splitlines()
    ]
    assert lines == ["  ✓ fast (0.4 s)", "✓ both (T s)"], "no line for a table without its time"


def test_the_log_file_is_per_invocation_in_the_runtime_folder(tmp_path: Path) -> None:
    at = datetime(2026, 12, 5, 5, 12, 8, tzinfo=UTC)
    assert log_file(tmp_path, "materialize", at) == (
        tmp_path / "logs" / "materialize-20261205T051208Z.log"
    )


REDIRECTED = """
import subprocess, sys
from pathlib import Path
from smartcity_dagster.console import output_into

with output_into(Path(sys.argv[1])) as console:
    print("python's stdout")
    print("python's stderr", file=sys.stderr)
    child = subprocess.Popen(["sh", "-c", "echo child started; sleep 1; echo child later >&2"])
    console.write("a console line\\n")
print("back on stdout")
child.wait()
"""


def test_output_goes_to_the_log_even_from_a_child_that_outlives_the_block(
    tmp_path: Path,
) -> None:
    """As the Spark driver's JVM does: started while the steps run, writing after."""
    log = tmp_path / "logs" / "run.log"
    done = subprocess.run(
        [sys.executable, "-c", REDIRECTED, str(log)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "a console line\nback on stdout\n"
    assert done.stderr == ""
    assert set(log.read_text().splitlines()) == {
        "python's stdout",
        "python's stderr",
        "child started",
        "child later",
    }


DAGSTER_WITH_CAPTURED_STEPS = """
import sys
from pathlib import Path
import dagster as dg
from rich.console import Console
from smartcity_dagster.console import LOGGERS_CONFIG, StepConsole, dagster_loggers

def table(n):
    @dg.asset(name=f"table_{n}")
    def build() -> None:
        print(f"table {n}'s own output", file=sys.stderr)
    return build

log, home = Path(sys.argv[1]), Path(sys.argv[2])
home.mkdir()
with StepConsole(Console(), log) as steps, dg.DagsterInstance.local_temp(str(home)) as instance:
    job = dg.Definitions(assets=[table(n) for n in range(STEPS)], loggers=dagster_loggers(steps))
    job.resolve_implicit_global_asset_job_def().execute_in_process(
        run_config={"loggers": LOGGERS_CONFIG}, instance=instance
    )
"""
CAPTURED_STEPS = 30


def test_every_dagster_line_reaches_the_log_while_steps_output_is_captured(
    tmp_path: Path,
) -> None:
    """Dagster captures the run's stdout and stderr (into its compute log, mirrored back
    through a `tail` it stops as the plan ends); its own lines, the last step's too, reach the
    log all the same."""
    log = tmp_path / "logs" / "run.log"
    script = DAGSTER_WITH_CAPTURED_STEPS.replace("STEPS", str(CAPTURED_STEPS))
    done = subprocess.run(
        [sys.executable, "-c", script, str(log), str(tmp_path / "dagster")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    text = log.read_text()
    missing = [
        n
        for n in range(CAPTURED_STEPS)
        if f'STEP_SUCCESS - Finished execution of step "table_{n}"' not in text
    ]
    assert missing == [], f"no STEP_SUCCESS line in the log for steps {missing}"
    assert "RUN_SUCCESS" in text


@pytest.fixture(scope="module")
def landed(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    lake = tmp_path_factory.mktemp("quiet-console") / "lake"
    settings = Settings(_env_file=None, lake_uri=lake.as_uri())
    start = datetime.fromisoformat(DAY).replace(tzinfo=UTC)
    land_simulated_day(Lake.from_settings(settings), int(start.timestamp() * 1000), INTERVAL_S)
    return settings


def _materialize(settings: Settings, runtime: Path, *args: str) -> subprocess.CompletedProcess:
    """`smartcity materialize --date DAY` as a user runs it, with a runtime folder of its own
    (so its own Dagster home) and no variable of this process's that overrides `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SMARTCITY_", "AWS_"))}
    env.pop("DAGSTER_HOME", None)
    env |= settings_env(settings.model_copy(update={"runtime_dir": runtime}))
    return subprocess.run(
        [SMARTCITY, "materialize", "--date", DAY, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.mark.integration
def test_materialize_shows_steps_and_keeps_the_detail_in_a_log(
    landed: Settings, tmp_path: Path
) -> None:
    runtime = tmp_path / "runtime"
    done = _materialize(landed, runtime)
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]

    steps = [name for name, _ in STEP_LINE.findall(done.stdout)]
    assert sorted(steps) == sorted(STEPS)
    assert sorted(name for name, _ in TABLE_LINE.findall(done.stdout)) == sorted(TABLES)
    assert [line for line in done.stdout.splitlines() if any(w in line for w in NOISE)] == []
    assert done.stderr == ""

    named = LOG_LINE.fullmatch(done.stdout.splitlines()[-1])
    assert named, done.stdout[-2000:]
    log = Path(named.group(1))
    assert log.parent == runtime / "logs" and log.is_file()
    detail = log.read_text(errors="replace")
    for step in STEPS:
        assert f'STEP_SUCCESS - Finished execution of step "{step}"' in detail, step


@pytest.mark.integration
def test_verbose_materialize_shows_the_detail(landed: Settings, tmp_path: Path) -> None:
    runtime = tmp_path / "runtime"
    done = _materialize(landed, runtime, "-v")
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]

    assert sorted(name for name, _ in STEP_LINE.findall(done.stdout)) == sorted(STEPS)
    for step in STEPS:
        assert f'STEP_SUCCESS - Finished execution of step "{step}"' in done.stderr, step
    assert " - DEBUG - daily_pipeline - " in done.stderr
    assert "Full logs:" not in done.stdout
    assert not (runtime / "logs").exists()
