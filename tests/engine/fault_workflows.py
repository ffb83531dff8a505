"""Workflows for the tests of a store that runs out of room, in this process and in
``cadenza run`` / ``cadenza worker`` processes.

Each step of ``hoard`` returns about 40 KB (kept inline in the journal, so every checkpoint
needs fresh pages) and notes its execution: in ``CALLS`` here, and as a line in the file
named by ``$HOARD_EFFECTS`` when a test runs it in another process.
"""

from __future__ import annotations

import os
from collections import Counter

from pydantic import BaseModel

from cadenza import Context, StepContext, workflow

BLOB = 40_000
CALLS: Counter[str] = Counter()  # executions per "run_id/op name"


class Hoard(BaseModel):
    steps: int


def blob(step: StepContext, i: int) -> str:
    CALLS[f"{step.run_id}/blob-{i}"] += 1
    effects = os.environ.get("HOARD_EFFECTS")
    if effects:
        with open(effects, "a", encoding="utf-8") as log:
            log.write(f"{step.run_id} blob-{i}\n")
    return f"{i}:" + "x" * BLOB


@workflow(name="t-hoard")
async def hoard(ctx: Context, plan: Hoard) -> int:
    total = 0
    for i in range(plan.steps):
        total += len(await ctx.step(blob, i, name=f"blob-{i}"))
    return total


def expected(steps: int) -> int:
    return sum(len(f"{i}:") + BLOB for i in range(steps))
