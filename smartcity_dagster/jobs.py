"""The daily pipeline job: every date-partitioned asset, raw to summary."""

from __future__ import annotations

import dagster as dg

daily_pipeline = dg.define_asset_job(
    "daily_pipeline",
    selection=dg.AssetSelection.groups("ingest", "quality", "analytics"),
    description="raw -> clean -> aggregates -> anomaly summary for one date (or a range).",
)
