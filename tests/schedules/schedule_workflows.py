"""Workflows the schedule tests start."""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel

from cadenza import Context, workflow


class Report(BaseModel):
    team: str


async def compile_report(report: Report) -> str:
    return f"report for {report.team}"


@workflow(name="sched-report")
async def report(ctx: Context, request: Report) -> str:
    return str(await ctx.step(compile_report, request))


@workflow(name="sched-slow")
async def slow(ctx: Context) -> str:
    """Stays open (waits an hour) so that the next tick overlaps it."""
    await ctx.wait(timedelta(hours=1))
    return "done"
