"""Backfills as a user runs them, each as a command in its own process over the two landed
dates: `smartcity materialize --from --to`, then Dagster's own `dagster asset materialize
--partition-range` over the same lake; each is one run, publishes every table of both
dates and evaluates each check once per date. The second build of the same dates gives
the same bytes: a re-run replaces a partition, it adds nothing and changes nothing."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import pytest

from smartcity.lake import Lake
from smartcity.layout import table_partition_key
from smartcity.settings import SENSOR_TYPES
from smartcity_dagster.checks import CLEAN_CHECKS, RAW_CHECKS
from smartcity_dagster.tags import RANGE_END, RANGE_START
from tests.dagster_support import MATERIALIZE, dagster_home
from tests.stream_support import SMARTCITY, worker_env
from tests.test_dagster_publish import published_files
from tests.test_dagster_webserver import PARTITIONED

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]
DATES = ["2026-11-26", "2026-11-27"]
TABLES = [
    *PARTITIONED,
    "anomaly_events",
    *(f"clean_{t}_rejects" for t in SENSOR_TYPES),
]
CHECKS = {
    *((f"raw_{t}", c.name) for t in SENSOR_TYPES for c in RAW_CHECKS),
    *((f"clean_{t}", c.name) for t in SENSOR_TYPES for c in CLEAN_CHECKS),
}
PRINTED_CHECK = re.compile(r"^\s+(\d{4}-\d{2}-\d{2})\s+check (\w+)\.(\w+): ", re.MULTILINE)
BUILD_TIMEOUT_S = 1200


def _run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    return done


@pytest.fixture(scope="module")
def backfilled(two_day_landing, tmp_path_factory):
    """The landing in a lake of its own, built by the CLI, then again by `dagster`; the
    published files of both dates after each build."""
    settings, _ = two_day_landing
    lake_dir = tmp_path_factory.mktemp("backfills") / "lake"
    shutil.copytree(
        Lake.from_settings(settings).root,
        lake_dir,
        ignore=shutil.ignore_patterns("tables", "quality"),
    )
    own = settings.model_copy(update={"lake_uri": lake_dir.as_uri()})
    lake = Lake.from_settings(own)

    cli_home = dagster_home(tmp_path_factory.mktemp("dagster-cli"))
    cli = _run(
        [SMARTCITY, "materialize", "--from", DATES[0], "--to", DATES[-1]],
        {**worker_env(own), "DAGSTER_HOME": str(cli_home)},
    )
    by_cli = {day: published_files(lake, day) for day in DATES}

    stock_home = dagster_home(tmp_path_factory.mktemp("dagster-stock"))
    stock_env = {**worker_env(own), "DAGSTER_HOME": str(stock_home)}
    _run([*MATERIALIZE, "--select", "sensor_registry"], stock_env)
    _run(
        [
            *MATERIALIZE,
            "--select",
            ",".join(PARTITIONED),
            "--partition-range",
            f"{DATES[0]}...{DATES[-1]}",
        ],
        stock_env,
    )
    by_stock = {day: published_files(lake, day) for day in DATES}
    return {
        "lake": lake,
        "cli": cli,
        "homes": {"cli": cli_home, "stock": stock_home},
        "files": (by_cli, by_stock),
    }


@contextmanager
def _instance(home: Path) -> Iterator[dg.DagsterInstance]:
    """The instance a build ran against (its `dagster.yaml` reads DAGSTER_HOME)."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("DAGSTER_HOME", str(home))
        with dg.DagsterInstance.get() as instance:
            yield instance


def _evaluations(home: Path) -> dict[tuple[str, str], list[str]]:
    """The dates each check was evaluated for, as the instance stored them."""
    with _instance(home) as instance:
        records = instance.event_log_storage.get_event_records(
            dg.EventRecordsFilter(event_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION),
            limit=10_000,
        )
    dated: dict[tuple[str, str], list[str]] = defaultdict(list)
    for record in records:
        evaluation = record.event_log_entry.dagster_event.event_specific_data
        dated[(evaluation.asset_key.to_user_string(), evaluation.check_name)].append(
            evaluation.partition
        )
    return {check: sorted(days) for check, days in dated.items()}


def _range_runs(home: Path) -> list[dg.DagsterRun]:
    with _instance(home) as instance:
        runs = instance.get_runs()
        materialized = {
            name: instance.get_materialized_partitions(dg.AssetKey(name)) for name in PARTITIONED
        }
    assert all(set(DATES) <= days for days in materialized.values()), materialized
    return [run for run in runs if RANGE_START in run.tags]


@pytest.mark.parametrize("build", ["cli", "stock"])
def test_one_run_publishes_both_dates(backfilled, build: str) -> None:
    lake = backfilled["lake"]
    runs = _range_runs(backfilled["homes"][build])
    assert [(r.tags[RANGE_START], r.tags[RANGE_END]) for r in runs] == [(DATES[0], DATES[-1])]
    assert runs[0].status == dg.DagsterRunStatus.SUCCESS
    for day in DATES:
        for name in TABLES:
            assert lake.exists(table_partition_key(name, day)), (name, day)


@pytest.mark.parametrize("build", ["cli", "stock"])
def test_one_check_evaluation_per_date(backfilled, build: str) -> None:
    evaluations = _evaluations(backfilled["homes"][build])
    assert evaluations == dict.fromkeys(CHECKS, DATES)


def test_the_cli_prints_each_date_s_checks(backfilled) -> None:
    out = backfilled["cli"].stdout
    printed: dict[tuple[str, str], list[str]] = defaultdict(list)
    for day, asset, check in PRINTED_CHECK.findall(out):
        printed[(asset, check)].append(day)
    assert {check: sorted(days) for check, days in printed.items()} == dict.fromkeys(CHECKS, DATES)
    assert f"materialized {DATES[0]}..{DATES[-1]}" in out


def test_a_rebuilt_date_is_the_same_bytes(backfilled) -> None:
    by_cli, by_stock = backfilled["files"]
    for day in DATES:
        assert {table_partition_key(name, day) for name in TABLES} <= set(by_cli[day])
        assert set(by_stock[day]) == set(by_cli[day])
        differ = [key for key in by_cli[day] if by_cli[day][key] != by_stock[day][key]]
        assert differ == [], f"{day}: rebuilt with other bytes"
