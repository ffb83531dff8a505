"""The workflow of the worker crash test.

Every step leaves one line ``run_id op_id attempt pid time`` in
``$CADENZA_HOME/effects.log`` halfway through its work, the way a real step charges a card
or sends a mail before it returns: a kill before the line leaves no trace, a kill after it
(but before the checkpoint) makes the step run again. Sleeps are random so that kills land
anywhere.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cadenza import Context, RetryPolicy, StepContext, StepSemantics, workflow

#: Names of the steps, in order; the at-most-once one sits between the others.
WORK_STEPS = ("work-1", "work-2", "work-3", "work-4", "work-5")
CHARGE_STEP = "charge"
PAUSE = "pause"

# An interrupted at-most-once attempt fails with StepInterrupted; retry it promptly.
CHARGE_RETRY = RetryPolicy(
    max_attempts=50, initial_interval=timedelta(milliseconds=20), backoff_rate=1.0, jitter=0
)


def effects_log() -> Path:
    return Path(os.environ["CADENZA_HOME"]) / "effects.log"


@dataclass(frozen=True)
class Effect:
    index: int  # position in the log
    run_id: str
    op_id: str
    attempt: int
    pid: int
    at: datetime


def read_effects(path: Path) -> list[Effect]:
    """The log, in the order it was written."""
    effects = []
    for index, line in enumerate(path.read_text().splitlines()):
        run_id, op_id, attempt, pid, at = line.split()
        effects.append(
            Effect(
                index, run_id, op_id, int(attempt), int(pid), datetime.fromtimestamp(float(at), UTC)
            )
        )
    return effects


def _record(step: StepContext) -> None:
    line = f"{step.run_id} {step.op_id} {step.attempt} {os.getpid()} {time.time():.6f}\n".encode()
    # One write(2) of a short line to an O_APPEND file: lines never interleave or tear.
    fd = os.open(effects_log(), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


async def work(step: StepContext, value: int) -> int:
    await asyncio.sleep(random.uniform(0.01, 0.08))
    _record(step)
    await asyncio.sleep(random.uniform(0.01, 0.08))
    return value * value


async def charge(step: StepContext, value: int) -> int:
    await asyncio.sleep(random.uniform(0.005, 0.04))
    _record(step)
    await asyncio.sleep(random.uniform(0.005, 0.04))
    return 1000 * value


def expected_result(n: int) -> int:
    return sum((n + i) ** 2 for i in range(1, len(WORK_STEPS) + 1)) + 1000 * n


@workflow(name="crash-pipeline", version="1")
async def pipeline(ctx: Context, n: int) -> int:
    total = 0
    for i, name in enumerate(WORK_STEPS[:3], start=1):
        total += await ctx.step(work, n + i, name=name)
    await ctx.wait(timedelta(milliseconds=50), name=PAUSE)
    total += await ctx.step(
        charge, n, name=CHARGE_STEP, semantics=StepSemantics.AT_MOST_ONCE, retry=CHARGE_RETRY
    )
    for i, name in enumerate(WORK_STEPS[3:], start=4):
        total += await ctx.step(work, n + i, name=name)
    return total


async def long_step(step: StepContext) -> str:
    _record(step)  # as it starts, so a test knows it is in flight
    await asyncio.sleep(1.0)
    return f"done by {os.getpid()}"


@workflow(name="crash-long-step", version="1")
async def long_running(ctx: Context) -> str:
    first = await ctx.step(long_step, name="long")
    return str(first)
