"""Workflows the service tests start over HTTP (importable, for a server subprocess)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field

from cadenza import Context, RetryPolicy, workflow
from cadenza.agents import call_model
from cadenza.patterns import ApprovalGate, LinkFileNotifier
from cadenza.testing import ScriptedModel


class Order(BaseModel):
    order_id: str
    amount_eur: float = Field(gt=0)


class Decision(BaseModel):
    approved: bool


def total(order: Order) -> float:
    return round(order.amount_eur * 1.2, 2)


def explode(order: Order) -> float:
    raise ValueError(f"order {order.order_id} cannot be priced")


@workflow(name="svc-price")
async def price(ctx: Context, order: Order) -> float:
    return float(await ctx.step(total, order))


@workflow(name="svc-approve")
async def approve(ctx: Context, order: Order) -> str:
    amount = await ctx.step(total, order)
    callback = await ctx.create_callback(name="manager", payload_type=Decision)
    decision: Decision = await callback.result()
    return f"{order.order_id}: {amount} {'approved' if decision.approved else 'rejected'}"


@workflow(name="svc-broken")
async def broken(ctx: Context, order: Order) -> float:
    return float(await ctx.step(explode, order, retry=RetryPolicy(max_attempts=1)))


WRITER = ScriptedModel(name="scripted:svc-writer", default="three words streamed")


@workflow(name="svc-write")
async def write(ctx: Context, order: Order) -> str:
    reply = await call_model(ctx, WRITER, f"describe order {order.order_id}", name="describe")
    return reply.text


@workflow(name="svc-review")
async def review(ctx: Context, order: Order) -> str:
    """Priced, then approved by a reviewer from the link in notifications.log."""
    amount = await ctx.step(total, order)
    gate = ApprovalGate(notify=LinkFileNotifier(reviewers=["reviewer@shop.example"]))
    outcome = await gate.request(ctx, f"Order {order.order_id}", f"**{amount} EUR**")
    return f"{order.order_id}: {amount} {'approved' if outcome.approved else 'rejected'}"


def price_once(flag: str, order: Order) -> float:
    """Fails until the file ``flag`` exists: a run that an operator retries after a fix."""
    if not Path(flag).exists():
        raise ValueError(f"order {order.order_id}: the price list is missing")
    return total(order)


@workflow(name="svc-fixable")
async def fixable(ctx: Context, request: dict[str, str]) -> float:
    order = Order(order_id=request["order_id"], amount_eur=float(request["amount_eur"]))
    return float(
        await ctx.step(price_once, request["flag"], order, retry=RetryPolicy(max_attempts=1))
    )
