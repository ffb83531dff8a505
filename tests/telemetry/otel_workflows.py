"""Workflows for the OpenTelemetry tests (importable by worker processes)."""

from __future__ import annotations

from datetime import timedelta

from cadenza import Context, workflow


def add_one(n: int) -> int:
    return n + 1


@workflow(name="t-otel-waiter")
async def waiter(ctx: Context, seconds: float) -> int:
    """Five waits between six steps: one activation with zero waits, six with real ones."""
    n = 0
    for i in range(5):
        n = int(await ctx.step(add_one, n, name=f"add{i}"))
        await ctx.wait(timedelta(seconds=seconds), name=f"pause{i}")
    return int(await ctx.step(add_one, n, name="add5"))
