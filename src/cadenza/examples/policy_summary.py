"""policy-summary: a generator drafts, an evaluator scores, the critique refines.

A model summarises the bike share's rental and insurance policy for riders; an evaluator
scores each draft from 0 to 1 on coverage, tone and correctness (in a JSON schema) and
writes a critique, which goes back to the generator for the next draft. The loop stops when
the weighted score reaches the threshold, when a round brings no improvement, or after
``max_rounds``; the best draft wins, and every round is kept in the result and in the
run's state document (``cadenza runs state RUN``).

    cadenza examples run policy-summary
    cadenza examples run policy-summary --input '{"threshold": 0.9, "max_rounds": 4}'
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from cadenza import Context, workflow
from cadenza.agents import call_model
from cadenza.models import ModelRequest
from cadenza.patterns import Criterion, EvaluatorLoop

from ._data import read_policy

MAX_TOKENS = 240  # about 180 words

CRITERIA = (
    Criterion(
        "coverage",
        "Mentions the deposit, the fares, how to end a rental, the damage excess, theft"
        " reporting, and the injury and liability cover.",
        weight=2.0,
    ),
    Criterion("tone", "Plain, friendly words a rider understands; no legal jargon."),
    Criterion(
        "correctness",
        "Every amount and deadline matches the policy; nothing is invented.",
        weight=2.0,
    ),
)


class SummaryRequest(BaseModel):
    policy: str | None = None  # the policy text; the bike share's own by default
    model: str = "local:smollm2"
    evaluator: str | None = None  # the model that scores; the generator's by default
    threshold: float = Field(0.8, ge=0, le=1)
    max_rounds: int = Field(3, ge=1, le=10)


@workflow(name="policy-summary", version="1")
async def policy_summary(ctx: Context, request: SummaryRequest) -> dict[str, Any]:
    ctx.state.goal = "summarise the rental and insurance policy for riders"
    # Reading a file is I/O: as a step, a replay sees the text the first attempt read.
    policy = request.policy or await ctx.step(read_policy, name="read-policy")

    async def write(ctx: Context, prompt: str) -> str:
        # A summary is short: a bounded reply keeps a small model from rambling on.
        asked = ModelRequest.of(prompt, max_tokens=MAX_TOKENS)
        return (await call_model(ctx, request.model, asked, name="policy-summary:write")).text

    review = EvaluatorLoop(
        "policy-summary",
        generator=write,
        evaluator=request.evaluator or request.model,
        criteria=CRITERIA,
        threshold=request.threshold,
        max_rounds=request.max_rounds,
    )
    refined = await review.run(
        ctx,
        f"Policy:\n{policy}\n\nSummarise the bike-share policy above for riders in at most"
        " 120 words, keeping every amount and deadline exact.",
    )
    return {
        "summary": refined.output.strip(),
        "score": refined.score,
        "passed": refined.passed,
        "rounds": len(refined.rounds),
        "best_round": refined.best_round,
        "stop_reason": str(refined.stop_reason),
        "scores": [dict(r.scores) for r in refined.rounds],
        "critique": refined.rounds[-1].critique,
    }
