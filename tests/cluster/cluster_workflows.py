"""Workflows of the cluster tests. Their steps leave a line in ``$CLUSTER_EFFECTS``:

    run_id op_id pid token started_at ended_at

written with one ``write(2)`` to an O_APPEND file while the step runs, the way a real step
charges a card before it reports: a kill before the line leaves no trace, a kill after it
(but before the checkpoint) makes the step run again. ``token`` is unique per execution and is also
the step's result, so the journal tells which execution's outcome was committed.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from cadenza import Context, StepContext, workflow

CRASH_STEPS = 6
TIMER = "timer"


@dataclass(frozen=True)
class Effect:
    run_id: str
    op_id: str
    pid: int
    token: str
    started: float
    ended: float


def read_effects(path: Path) -> list[Effect]:
    if not path.exists():
        return []
    effects = []
    for line in path.read_text().splitlines():
        run_id, op_id, pid, token, started, ended = line.split()
        effects.append(Effect(run_id, op_id, int(pid), token, float(started), float(ended)))
    return effects


async def effect(step: StepContext, pause: float, tail: float = 0.0) -> str:
    """Work for ``pause`` seconds, leave the effect, then take ``tail`` more to report."""
    started = time.time()
    await asyncio.sleep(pause)
    token = uuid.uuid4().hex[:12]
    line = f"{step.run_id} {step.op_id} {os.getpid()} {token} {started:.6f} {time.time():.6f}\n"
    fd = os.open(os.environ["CLUSTER_EFFECTS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
    await asyncio.sleep(tail)
    return token


@workflow(name="cluster-crash")
async def crash_flow(ctx: Context, n: int) -> int:
    """Six steps of random length with a durable timer in the middle."""
    for i in range(CRASH_STEPS):
        pause = 0.02 + 0.1 * ctx.random()
        await ctx.step(effect, pause, pause, name=f"s{i}")
        if i == 2:
            await ctx.wait(timedelta(seconds=0.3), name=TIMER)
    return n


@workflow(name="cluster-capped", queue="capped")
async def capped_job(ctx: Context) -> str:
    return str(await ctx.step(effect, 0.25, name="work"))


@workflow(name="cluster-graceful")
async def graceful_flow(ctx: Context, steps: int) -> int:
    for i in range(steps):
        await ctx.step(effect, 0.4, name=f"s{i}")
    return steps
