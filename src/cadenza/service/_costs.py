"""``GET /costs``: the model spend of the key's tenant, rolled up as ``cadenza costs`` does."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel

from cadenza.service._auth import Principal, client_of, require

__all__ = ["router"]

router = APIRouter()

Reader = Annotated[Principal, Depends(require("read"))]


class CostsOut(BaseModel):
    """Totals and one table per dimension; each row holds ``runs``, ``requests``,
    ``input_tokens``, ``output_tokens`` and ``cost_usd``."""

    since: datetime | None
    until: datetime | None
    runs: int
    truncated: bool
    total: dict[str, float]
    workflow: dict[str, dict[str, float]]
    model: dict[str, dict[str, float]]
    tenant: dict[str, dict[str, float]]
    day: dict[str, dict[str, float]]


@router.get("/costs", response_model=CostsOut, tags=["costs"])
async def get_costs(
    request: Request,
    principal: Reader,
    since: Annotated[datetime | None, Query(description="runs created from (ISO time)")] = None,
    until: Annotated[datetime | None, Query(description="up to, exclusive (ISO time)")] = None,
    workflow: Annotated[str | None, Query(max_length=200)] = None,
) -> CostsOut:
    """Model spend of the tenant's runs created in [since, until): tokens and cost by
    workflow, model and UTC day, from each run's recorded usage."""
    report = await client_of(request).costs(
        since=_utc(since),
        until=_utc(until),
        workflow=workflow,
        tenant=principal.tenant,
    )
    return CostsOut.model_validate(report.as_dict())


def _utc(moment: datetime | None) -> datetime | None:
    return moment.replace(tzinfo=UTC) if moment and moment.tzinfo is None else moment
