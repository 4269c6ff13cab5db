"""Daily partitions by event date (UTC); today is a partition too, for late-built live data."""

from __future__ import annotations

import dagster as dg

from smartcity.settings import load_settings

daily_partitions = dg.DailyPartitionsDefinition(
    start_date=load_settings().partitions_start, timezone="UTC", end_offset=1
)
