"""``/api/v1/schedules``: durable "start this workflow at these times" over HTTP.

Schedules start their runs in the default tenant (a schedule has no tenant of its own),
so only keys of the default tenant see them; for any other tenant they do not exist: an
empty list, and 404 for each one.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request, Response
from pydantic import BaseModel, Field

from cadenza.errors import ScheduleNotFound
from cadenza.ports.run_store import DEFAULT_TENANT, CatchUp, Overlap, Schedule
from cadenza.service._auth import Principal, client_of, require
from cadenza.service._models import RequestModel
from cadenza.service._runs import validated_input, workflow_named

router = APIRouter(prefix="/schedules", tags=["schedules"])

Reader = Annotated[Principal, Depends(require("read"))]
Operator = Annotated[Principal, Depends(require("operate"))]
Name = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]


class ScheduleIn(RequestModel):
    """Exactly one of ``cron``, ``every_minutes``, ``at`` or ``expression``."""

    workflow: str = Field(min_length=1, max_length=200)
    version: str | None = Field(default=None, max_length=50)
    cron: str | None = Field(default=None, max_length=200, examples=["0 9 * * MON-FRI"])
    every_minutes: int | None = Field(default=None, ge=1, le=525_600)
    at: datetime | None = None
    expression: str | None = Field(default=None, max_length=200, examples=["rate(15 minutes)"])
    input: Any = None
    pin_version: bool = False
    timezone: str = Field(default="UTC", max_length=64)
    window_seconds: int = Field(default=0, ge=0, le=86_400)
    catch_up: CatchUp = CatchUp.LATEST
    catch_up_limit: int = Field(default=10, ge=1, le=1000)
    overlap: Overlap = Overlap.SKIP
    paused: bool = False
    start_at: datetime | None = None
    end_at: datetime | None = None


class ScheduleOut(BaseModel):
    name: str
    workflow: str
    version: str | None = None
    expression: str
    timezone: str
    window_seconds: float
    catch_up: CatchUp
    overlap: Overlap
    paused: bool
    next_fire_at: datetime | None = None
    last_tick_at: datetime | None = None
    last_run_id: str | None = None
    start_at: datetime | None = None
    end_at: datetime | None = None

    @classmethod
    def of(cls, schedule: Schedule) -> ScheduleOut:
        return cls(
            name=schedule.name,
            workflow=schedule.workflow,
            version=schedule.version,
            expression=schedule.expression,
            timezone=schedule.timezone,
            window_seconds=schedule.window.total_seconds(),
            catch_up=schedule.catch_up,
            overlap=schedule.overlap,
            paused=schedule.paused,
            next_fire_at=schedule.next_fire_at,
            last_tick_at=schedule.last_tick_at,
            last_run_id=schedule.last_run_id,
            start_at=schedule.start_at,
            end_at=schedule.end_at,
        )


def _own(principal: Principal, name: str) -> None:
    if principal.tenant != DEFAULT_TENANT:
        raise ScheduleNotFound(name)


@router.get("", response_model=list[ScheduleOut])
async def list_schedules(request: Request, principal: Reader) -> list[ScheduleOut]:
    if principal.tenant != DEFAULT_TENANT:
        return []
    return [ScheduleOut.of(s) for s in await client_of(request).list_schedules()]


@router.get("/{name}", response_model=ScheduleOut)
async def get_schedule(name: Name, request: Request, principal: Reader) -> ScheduleOut:
    _own(principal, name)
    return ScheduleOut.of(await client_of(request).get_schedule(name))


@router.put("/{name}", response_model=ScheduleOut)
async def put_schedule(
    name: Name, body: ScheduleIn, request: Request, response: Response, principal: Operator
) -> ScheduleOut:
    """Create (201) or replace (200) a schedule; its input is checked against the
    workflow's input type."""
    _own(principal, name)
    client = client_of(request)
    definition = workflow_named(body.workflow, body.version)
    value = validated_input(definition, body.input)
    try:
        await client.get_schedule(name)
        response.status_code = 200
    except ScheduleNotFound:
        response.status_code = 201
    stored = await client.put_schedule(
        name,
        definition,
        cron=body.cron,
        every=timedelta(minutes=body.every_minutes) if body.every_minutes else None,
        at=body.at,
        expression=body.expression,
        input=value,
        pin_version=body.pin_version,
        timezone=body.timezone,
        window=timedelta(seconds=body.window_seconds),
        catch_up=body.catch_up,
        catch_up_limit=body.catch_up_limit,
        overlap=body.overlap,
        paused=body.paused,
        start_at=body.start_at,
        end_at=body.end_at,
    )
    return ScheduleOut.of(stored)


@router.post("/{name}/pause", response_model=ScheduleOut)
async def pause_schedule(name: Name, request: Request, principal: Operator) -> ScheduleOut:
    _own(principal, name)
    return ScheduleOut.of(await client_of(request).pause_schedule(name))


@router.post("/{name}/resume", response_model=ScheduleOut)
async def resume_schedule(name: Name, request: Request, principal: Operator) -> ScheduleOut:
    _own(principal, name)
    return ScheduleOut.of(await client_of(request).resume_schedule(name))


@router.delete("/{name}", status_code=204)
async def delete_schedule(name: Name, request: Request, principal: Operator) -> Response:
    _own(principal, name)
    if not await client_of(request).delete_schedule(name):
        raise ScheduleNotFound(name)
    return Response(status_code=204)
