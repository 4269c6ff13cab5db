"""The API's caches (one computation per key under concurrent misses, memory-only answers)
and its row rendering."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smartcity.settings import Settings
from smartcity_api.responses import render, render_rows
from smartcity_api.store import LakeReader, WouldBlock, memory_only


def reader(tmp_path: Path) -> LakeReader:
    return LakeReader(Settings(lake_uri=tmp_path.as_uri(), runtime_dir=tmp_path / "runtime"))


def test_concurrent_misses_of_one_key_compute_it_once(tmp_path: Path) -> None:
    lake = reader(tmp_path)
    calls = []
    lock = threading.Lock()

    def slow() -> str:
        with lock:
            calls.append(1)
        time.sleep(0.2)
        return "value"

    with ThreadPoolExecutor(8) as pool:
        values = list(pool.map(lambda _: lake.kept(("partition", 1), slow), range(8)))
    assert values == ["value"] * 8
    assert len(calls) == 1


def test_memory_only_raises_on_a_miss_and_answers_a_hit(tmp_path: Path) -> None:
    lake = reader(tmp_path)
    with memory_only(), pytest.raises(WouldBlock):
        lake.kept("key", lambda: "read")
    assert lake.kept("key", lambda: "read") == "read"
    with memory_only():
        assert lake.kept("key", lambda: "again") == "read"


def test_a_value_larger_than_the_budget_is_served_not_kept(tmp_path: Path) -> None:
    lake = LakeReader(
        Settings(lake_uri=tmp_path.as_uri(), runtime_dir=tmp_path / "runtime", api_cache_mb=16)
    )
    huge = b"x" * (17 << 20)
    assert lake.kept("huge", lambda: huge) is huge
    with memory_only(), pytest.raises(WouldBlock):
        lake.kept("huge", lambda: huge)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(-(10**12), 4 * 10**12), min_size=1, max_size=50),
    st.sampled_from(["ms", "us"]),
)
def test_rows_render_as_orjson_renders_them(instants: list[int], unit: str) -> None:
    table = pa.table(
        {
            "event_time": pa.array(instants, pa.timestamp(unit, "UTC")),
            "value": pa.array([i / 7 if i % 3 else float("nan") for i in instants]),
        }
    )
    assert render_rows(table) == [render(row) for row in table.to_pylist()]
