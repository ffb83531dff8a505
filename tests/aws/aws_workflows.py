"""Workflows the AWS-shape tests run (importable as tests.aws.aws_workflows:NAME, as the
Lambda functions import them from CADENZA_WORKFLOWS)."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta
from typing import Any

from cadenza import Context, workflow

#: How often each (run, step) really executed: a duplicate effect shows here.
EFFECTS: Counter[tuple[str, str]] = Counter()
#: Set by a step of ``slow`` when it starts, so a test can kill its invocation meanwhile.
STARTED: dict[str, asyncio.Event] = {}


def effect(run_id: str, name: str) -> None:
    EFFECTS[(run_id, name)] += 1


@workflow(name="aws-greet", version="1")
async def greet(ctx: Context, who: str) -> str:
    async def hello(name: str) -> str:
        effect(ctx.run_id, "hello")
        return f"hello {name}"

    async def shout(text: str) -> str:
        effect(ctx.run_id, "shout")
        return text.upper()

    text = await ctx.step(hello, who, name="hello")
    await ctx.emit("Greeted", {"who": who, "text": text}, source="tests.aws")
    return await ctx.step(shout, text, name="shout")


@workflow(name="aws-order", version="1")
async def order(ctx: Context, detail: dict[str, Any]) -> dict[str, Any]:
    """Started by a rule: waits for the order's payment event, then ships."""

    async def reserve() -> str:
        effect(ctx.run_id, "reserve")
        return f"reserved {detail['order']}"

    await ctx.step(reserve, name="reserve")
    paid = await ctx.wait_for_event(
        {"detail-type": ["PaymentReceived"], "detail": {"order": [detail["order"]]}},
        timeout=timedelta(hours=1),
    )

    async def ship() -> str:
        effect(ctx.run_id, "ship")
        return "shipped"

    shipped = await ctx.step(ship, name="ship")
    return {"order": detail["order"], "amount": paid["detail"]["amount"], "status": shipped}


@workflow(name="aws-sleeper", version="1")
async def sleeper(ctx: Context, seconds: float) -> str:
    async def before() -> str:
        effect(ctx.run_id, "before")
        return "before"

    await ctx.step(before, name="before")
    await ctx.wait(timedelta(seconds=seconds))

    async def after() -> str:
        effect(ctx.run_id, "after")
        return "after"

    return await ctx.step(after, name="after")


@workflow(name="aws-slow", version="1")
async def slow(ctx: Context, seconds: float) -> str:
    async def first() -> str:
        effect(ctx.run_id, "first")
        return "first"

    async def long() -> str:
        effect(ctx.run_id, "long")
        STARTED.setdefault(ctx.run_id, asyncio.Event()).set()
        await asyncio.sleep(seconds)
        return "long"

    await ctx.step(first, name="first")
    await ctx.step(long, name="long")
    return "done"
