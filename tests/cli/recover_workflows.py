"""Workflows for the retry / fork CLI tests. Each step appends its name to
``$CADENZA_HOME/effects.log`` (so a test counts what really ran, in whatever process), and
files in ``$CADENZA_HOME`` switch failures on and off: ``broken`` fails the writer step,
``hang`` makes the slow step hang (for a worker to be killed in)."""

from __future__ import annotations

import os
import time
from datetime import timedelta
from pathlib import Path

from pydantic import BaseModel

from cadenza import Context, RetryPolicy, StepSemantics, workflow

NO_RETRY = RetryPolicy(max_attempts=1)
AGAIN = RetryPolicy(max_attempts=3, initial_interval=timedelta(0))


def _home() -> Path:
    return Path(os.environ["CADENZA_HOME"])


def _effect(name: str) -> None:
    with (_home() / "effects.log").open("a") as log:
        log.write(name + "\n")


def research(topic: str) -> str:
    _effect("research")
    return f"notes on {topic}"


def write(notes: str) -> str:
    _effect("write")
    if (_home() / "broken").exists():
        raise ConnectionError("the model endpoint is down")
    return f"report from {notes}"


def slow(notes: str) -> str:
    _effect("slow")
    while (_home() / "hang").exists():
        time.sleep(0.05)
    return notes.upper()


@workflow(name="cli-recover-report")
async def report(ctx: Context, topic: str) -> str:
    notes = await ctx.step(research, topic)
    return str(await ctx.step(write, notes, retry=NO_RETRY))


@workflow(name="cli-recover-slow")
async def slow_report(ctx: Context, topic: str) -> str:
    notes = await ctx.step(research, topic)
    # At most once: its start is recorded before it runs, so a kill leaves it in the journal.
    return str(await ctx.step(slow, notes, semantics=StepSemantics.AT_MOST_ONCE, retry=AGAIN))


@workflow(name="cli-recover-versioned", version="1")
async def versioned_v1(ctx: Context, topic: str) -> str:
    notes = await ctx.step(research, topic)
    raise KeyError(f"bug: {notes}")


@workflow(name="cli-recover-versioned", version="2")
async def versioned_v2(ctx: Context, topic: str) -> str:
    notes = await ctx.step(research, topic)
    return f"fixed: {notes}"


class Decision(BaseModel):
    approved: bool
    comment: str = ""


@workflow(name="cli-recover-typed")
async def typed(ctx: Context) -> str:
    callback = await ctx.create_callback(name="approval", payload_type=Decision)
    decision: Decision = await callback.result()
    return f"approved={decision.approved} {decision.comment}".strip()
