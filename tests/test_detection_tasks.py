"""How many tasks the batch detector splits a clean table into (`detection_tasks`): each task
starts a Python worker, so a small day's type is one task, and a large one is spread over
at most the session's shuffle partitions."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from smartcity_dagster.transforms.anomalies import ROWS_PER_TASK, detection_tasks


@given(rows=st.integers(0, 50 * ROWS_PER_TASK), partitions=st.integers(1, 400))
def test_tasks_hold_at_most_a_task_of_rows_each_within_the_partitions(
    rows: int, partitions: int
) -> None:
    tasks = detection_tasks(rows, partitions)
    assert 1 <= tasks <= partitions
    assert tasks == partitions or tasks * ROWS_PER_TASK >= rows


def test_a_small_day_is_one_task_and_the_big_day_fills_two_cores() -> None:
    assert detection_tasks(30_240 // 3, partitions=2) == 1
    assert detection_tasks(302_400 // 3, partitions=2) == 1
    assert detection_tasks(8_640_000, partitions=2) == 2
    assert detection_tasks(8_640_000, partitions=200) == 9
