"""Workflows for the tests of what ``drive`` (and ``cadenza run``) executes: a root run
that invokes a child and emits an event a rule turns into another run, plus runs that have
nothing to do with it.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from cadenza import Context, Rule, workflow


def double(n: int) -> int:
    return 2 * n


def ship(order: int) -> str:
    return f"shipped {order}"


@workflow(name="t-scope-child")
async def child(ctx: Context, n: int) -> int:
    return int(await ctx.step(double, n))


@workflow(name="t-scope-shipper")
async def shipper(ctx: Context, detail: dict[str, Any]) -> str:
    return str(await ctx.step(ship, detail["order"]))


@workflow(name="t-scope-root")
async def root(ctx: Context, n: int) -> int:
    doubled = int(await ctx.invoke(child, n))
    await ctx.emit("order.placed", {"order": n}, source="shop")
    return doubled


@workflow(name="t-scope-bystander")
async def bystander(ctx: Context, n: int) -> int:
    return int(await ctx.step(double, n))


@workflow(name="t-scope-sleeper")
async def sleeper(ctx: Context) -> str:
    await ctx.wait(timedelta(milliseconds=50), name="nap")
    return "awake"


SHIP_ORDERS = Rule(
    "ship-orders",
    {"detail-type": ["order.placed"]},
    "start_workflow",
    {"workflow": "t-scope-shipper", "module": "tests.engine.scope_workflows:shipper"},
)
