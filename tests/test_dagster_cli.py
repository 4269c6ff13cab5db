"""`smartcity materialize`'s choices that need no Spark: the default date."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from smartcity_dagster.cli import yesterday_utc


@pytest.mark.parametrize(
    ("local", "offset_h", "expected"),
    [
        ("2026-12-04T23:30", -5, "2026-12-04"),  # already the 5th in UTC
        ("2026-12-05T00:30", 9, "2026-12-03"),  # still the 4th in UTC
        ("2026-12-05T12:00", 0, "2026-12-04"),
        ("2027-01-01T00:00", 14, "2026-12-30"),
    ],
)
def test_the_default_date_is_yesterday_in_utc(local: str, offset_h: int, expected: str) -> None:
    now = datetime.fromisoformat(local).replace(tzinfo=timezone(timedelta(hours=offset_h)))
    assert yesterday_utc(now) == expected
