"""Quality: the asset check results each materialization writes beside its partition."""

from __future__ import annotations

from datetime import date as Date
from typing import Annotated, Any

from fastapi import APIRouter, Query

from smartcity_api.catalog import ASSETS
from smartcity_api.deps import ReaderDep
from smartcity_api.errors import not_found
from smartcity_api.models import QualityList
from smartcity_api.params import EXAMPLE_DATE
from smartcity_api.responses import error_responses, json_response

router = APIRouter(prefix="/quality", tags=["quality"])


@router.get(
    "",
    response_model=QualityList,
    responses=error_responses(404),
    summary="Latest asset check results per asset and date partition",
)
def quality(
    reader: ReaderDep,
    asset: Annotated[
        str | None,
        Query(
            description=f"Only this asset (one of {', '.join(ASSETS)}).",
            max_length=64,
            examples=["clean_traffic"],
        ),
    ] = None,
    date: Annotated[
        Date | None,
        Query(
            description="This date partition; by default each asset's newest one.",
            examples=[EXAMPLE_DATE],
        ),
    ] = None,
) -> Any:
    """Served from `quality/<asset>/date=D.json`, without asking Dagster."""
    if asset is not None and asset not in ASSETS:
        raise not_found(f"asset: unknown asset {asset!r}; one of {', '.join(ASSETS)}")
    records = []
    for name in [asset] if asset else reader.quality_assets():
        dates = reader.quality_dates(name)
        wanted = date.isoformat() if date else (dates[-1] if dates else None)
        record = reader.quality_record(name, wanted) if wanted in dates else None
        if record is not None:
            records.append(record)
    return json_response({"items": records, "count": len(records)})
