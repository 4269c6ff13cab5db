"""Backfills as a user runs them, each as a command in its own process over the two landed
dates: `smartcity materialize --from --to`, then Dagster's own `dagster asset materialize
--partition-range` over the same lake; each is one run, publishes every table of both
dates and evaluates each check once per date. The second build of the same dates, with
other parallelism (`local[1]` instead of the machine's cores), gives the same bytes: a
re-run replaces a partition, it adds nothing and changes nothing, however its tasks were
scheduled. Spark's Parquet footers are made canonical for that (`tables.canonical_footer`),
which the tests without services show on footers of every order."""

from __future__ import annotations

import io
import random
import re
import shutil
import subprocess
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from smartcity.lake import Lake
from smartcity.layout import table_partition_key
from smartcity.settings import SENSOR_TYPES, Settings
from smartcity_dagster.checks import CLEAN_CHECKS, RAW_CHECKS
from smartcity_dagster.tables import (
    MAGIC,
    TAIL,
    canonical_footer,
    encoding_lists,
    move_canonical,
)
from smartcity_dagster.tags import RANGE_END, RANGE_START
from tests.dagster_support import MATERIALIZE, dagster_home
from tests.stream_support import SMARTCITY, worker_env
from tests.test_dagster_publish import published_files
from tests.test_dagster_webserver import PARTITIONED

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
SPARK_WRITTEN = [name for name in TABLES if not name.startswith("anomaly_")]
"""The tables Spark writes (`tables.write_partition`); the anomaly tables are pyarrow's."""
ENCODING_IDS = {
    "PLAIN": 0,
    "PLAIN_DICTIONARY": 2,
    "RLE": 3,
    "BIT_PACKED": 4,
    "DELTA_BINARY_PACKED": 5,
    "DELTA_LENGTH_BYTE_ARRAY": 6,
    "DELTA_BYTE_ARRAY": 7,
    "RLE_DICTIONARY": 8,
    "BYTE_STREAM_SPLIT": 9,
}
"""Parquet's `Encoding` enum, by the names pyarrow reports."""


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
    # One task slot instead of one per core: other input splits, other threads, another
    # JVM; the bytes must not change.
    stock_env = {
        **worker_env(own),
        "DAGSTER_HOME": str(stock_home),
        "SMARTCITY_SPARK_MASTER": "local[1]",
    }
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


@pytest.mark.integration
@pytest.mark.parametrize("build", ["cli", "stock"])
def test_one_run_publishes_both_dates(backfilled, build: str) -> None:
    lake = backfilled["lake"]
    runs = _range_runs(backfilled["homes"][build])
    assert [(r.tags[RANGE_START], r.tags[RANGE_END]) for r in runs] == [(DATES[0], DATES[-1])]
    assert runs[0].status == dg.DagsterRunStatus.SUCCESS
    for day in DATES:
        for name in TABLES:
            assert lake.exists(table_partition_key(name, day)), (name, day)


@pytest.mark.integration
@pytest.mark.parametrize("build", ["cli", "stock"])
def test_one_check_evaluation_per_date(backfilled, build: str) -> None:
    evaluations = _evaluations(backfilled["homes"][build])
    assert evaluations == dict.fromkeys(CHECKS, DATES)


@pytest.mark.integration
def test_the_cli_prints_each_date_s_checks(backfilled) -> None:
    out = backfilled["cli"].stdout
    printed: dict[tuple[str, str], list[str]] = defaultdict(list)
    for day, asset, check in PRINTED_CHECK.findall(out):
        printed[(asset, check)].append(day)
    assert {check: sorted(days) for check, days in printed.items()} == dict.fromkeys(CHECKS, DATES)
    assert f"materialized {DATES[0]}..{DATES[-1]}" in out


@pytest.mark.integration
def test_a_rebuilt_date_is_the_same_bytes(backfilled) -> None:
    """Also: every file Spark wrote has its footer's encodings in canonical order, which
    holds whatever order this run's two JVMs happened to give them (they agree now and
    then, so equal bytes alone would miss a write path that skips the canonical footer)."""
    by_cli, by_stock = backfilled["files"]
    for day in DATES:
        assert {table_partition_key(name, day) for name in TABLES} <= set(by_cli[day])
        assert set(by_stock[day]) == set(by_cli[day])
        differ = [key for key in by_cli[day] if by_cli[day][key] != by_stock[day][key]]
        assert differ == [], f"{day}: rebuilt with other bytes"
        for build in (by_cli, by_stock):
            for name in SPARK_WRITTEN:
                data = build[day][table_partition_key(name, day)]
                assert _encodings_sorted(data), f"{name} {day}: encodings not in order"


def test_a_footer_lists_encodings_in_one_order_whatever_order_it_was_written_in() -> None:
    table = _table()
    data = _parquet(table)
    start, footer = _footer(data)
    lists = encoding_lists(footer)
    assert len(lists) == table.num_columns * pq.ParquetFile(pa.BufferReader(data)).num_row_groups
    assert all(stop - begin > 1 for begin, stop in lists), "no order to vary"
    canonical = canonical_footer(footer)
    assert len(canonical) == len(footer) and canonical_footer(canonical) == canonical
    rewritten = data[:start] + canonical + data[start + len(footer) :]
    assert pq.read_table(pa.BufferReader(rewritten)).equals(table)
    assert _encodings_sorted(rewritten)


@given(st.randoms(use_true_random=False))
def test_footers_that_differ_in_the_order_of_encodings_become_the_same_bytes(
    rng: random.Random,
) -> None:
    """As two JVMs write the same rows: each column chunk's encodings in any order."""
    _, footer = _footer(_parquet(_table()))
    assert canonical_footer(_shuffled(footer, rng)) == canonical_footer(footer)


@pytest.mark.parametrize("store", ["local", pytest.param("s3", marks=pytest.mark.integration)])
def test_a_staged_file_is_moved_with_its_footer_canonical(
    store: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Patched in place on a local folder, copied with the new footer on an object store;
    a footer that is canonical already is moved as it is."""
    if store == "s3":
        settings: Settings = request.getfixturevalue("live_settings")
        lake = Lake.from_settings(
            settings.model_copy(update={"lake_uri": f"{settings.lake_uri}-moves"})
        )
    else:
        lake = Lake.from_settings(Settings(_env_file=None, lake_uri=tmp_path.as_uri()))
    lake.ensure_root()
    data = _parquet(_table())
    start, footer = _footer(data)
    shuffled = data[:start] + _shuffled(footer, random.Random(7)) + data[start + len(footer) :]
    canonical = data[:start] + canonical_footer(footer) + data[start + len(footer) :]
    assert shuffled != canonical
    for written in (shuffled, canonical):
        lake.write_bytes("parts/part-00000.parquet", written)
        move_canonical(lake, lake.path("parts/part-00000.parquet"), lake.path("staged.parquet"))
        assert lake.read_bytes("staged.parquet") == canonical
        assert not lake.exists("parts/part-00000.parquet")


def _table() -> pa.Table:
    """Strings, integers and doubles with nulls, over several row groups: every column
    chunk has more than one encoding."""
    rows = 400
    return pa.table(
        {
            "sensor_id": [f"TRAFFIC_{i % 7:04d}" for i in range(rows)],
            "seq": list(range(rows)),
            "value": [None if i % 5 == 0 else i / 4 for i in range(rows)],
        }
    )


def _parquet(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd", row_group_size=100)
    return buffer.getvalue()


def _footer(data: bytes) -> tuple[int, bytes]:
    """Where a Parquet file's footer starts, and the footer."""
    assert data[-4:] == MAGIC
    length = int.from_bytes(data[-TAIL:-4], "little")
    start = len(data) - TAIL - length
    return start, data[start : start + length]


def _shuffled(footer: bytes, rng: random.Random) -> bytes:
    shuffled = bytearray(footer)
    for start, stop in encoding_lists(footer):
        items = list(footer[start:stop])
        rng.shuffle(items)
        shuffled[start:stop] = bytes(items)
    return bytes(shuffled)


def _encodings_sorted(data: bytes) -> bool:
    metadata = pq.ParquetFile(pa.BufferReader(data)).metadata
    for group in range(metadata.num_row_groups):
        for column in range(metadata.num_columns):
            ids = [ENCODING_IDS[e] for e in metadata.row_group(group).column(column).encodings]
            if ids != sorted(ids):
                return False
    return True
