"""Statistics: Kafka offsets and lag, Parquet volumes and compression."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from smartcity_api.deps import ReaderDep
from smartcity_api.inventory import parquet_statistics
from smartcity_api.models import KafkaStatistics, ParquetStatistics
from smartcity_api.responses import error_responses, json_response

router = APIRouter(prefix="/statistics", tags=["statistics"])
PARQUET_CACHE_KEY = "parquet-statistics"


@router.get(
    "/kafka",
    response_model=KafkaStatistics,
    responses=error_responses(503),
    summary="Topics, partitions, end offsets and the stream group's lag",
)
def kafka_statistics(request: Request) -> Any:
    """Lag is the end offset minus the `smartcity-stream` group's committed offset."""
    return json_response(request.app.state.broker.offsets())


@router.get(
    "/parquet",
    response_model=ParquetStatistics,
    summary="Per table: partitions, files, rows, bytes, compression against JSON",
)
def parquet(reader: ReaderDep) -> Any:
    """From Parquet footers and the listing (cached a few seconds); see `method`."""
    return json_response(reader.derived(PARQUET_CACHE_KEY, lambda: parquet_statistics(reader)))
