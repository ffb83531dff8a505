"""Workflows for the display tests: names, errors, results, printed and streamed text
hostile to a terminal (rich markup, an escape sequence that clears the screen and paints a
success banner, a carriage return, a bell, a right-to-left override), and batches."""

from __future__ import annotations

import asyncio
from typing import Any

from cadenza import Context, workflow
from cadenza.agents import call_model
from cadenza.testing import ScriptedModel

HOSTILE = (
    "[/bold] [green]OK[/green] [link=http://x]y[/link]"
    " \x1b[2J\x1b[32mRUN SUCCEEDED\x1b[0m\rover\x07\u202eevil :warning:"
)
# Streamed word by word: each piece must be shown literally on its own.
SPOKEN = "said [/bold] \x1b[2J\x1b[32mRUN SUCCEEDED [green]OK[/green]"


def echo(text: str) -> str:
    return text


def boom(text: str) -> str:
    raise RuntimeError(text)


@workflow(name="cli-hostile-succeeds")
async def succeeds(ctx: Context) -> dict[str, Any]:
    await ctx.step(echo, HOSTILE, name=HOSTILE)
    reply = await call_model(ctx, ScriptedModel(default=SPOKEN), "speak", name="speaker")
    await ctx.emit(f"said {HOSTILE}", {"text": HOSTILE})
    return {"text": HOSTILE, "reply": reply.text}


@workflow(name="cli-hostile-fails")
async def fails(ctx: Context) -> None:
    await ctx.step(echo, HOSTILE, name=HOSTILE)
    await ctx.step(boom, HOSTILE, name="boom")


@workflow(name="cli-hostile-waits")
async def waits(ctx: Context) -> Any:
    callback = await ctx.create_callback(name=HOSTILE)
    return await callback.result()


def shout(text: str) -> str:
    print(f"printed by a step: {text}")
    return text


@workflow(name="cli-prints")
async def prints(ctx: Context, city: str) -> str:
    print("printed by the workflow")
    return str(await ctx.step(shout, city))


async def check(ctx: Context, n: int) -> int:
    if n % 2:
        raise ValueError(f"odd item {n}")
    return n


@workflow(name="cli-half-fails")
async def half_fails(ctx: Context) -> dict[str, int]:
    batch = await ctx.map([0, 1, 2, 3, 4], check, name="checks")
    return {"failed": batch.failure_count}


async def no_item(ctx: Context) -> int:
    return 1


@workflow(name="cli-wrong-branch")
async def wrong_branch(ctx: Context) -> int:
    batch = await ctx.map([1, 2, 3], no_item, name="checks")  # type: ignore[arg-type]
    return batch.success_count


async def slow(ctx: Context, n: int) -> int:
    return int(await ctx.step(pause, n, name=f"pause {n}"))


async def pause(n: int) -> int:
    await asyncio.sleep(0.3)
    return n


@workflow(name="cli-slow-batch")
async def slow_batch(ctx: Context) -> int:
    batch = await ctx.map(list(range(6)), slow, name="pauses", max_concurrency=2)
    model = ScriptedModel(default="one two three four five six", delay=0.1)
    await ctx.parallel(
        [
            lambda c: call_model(c, model, "a", name="writer-a"),
            lambda c: call_model(c, model, "b", name="writer-b"),
        ],
        name="writers",
    )
    return sum(batch.results())
