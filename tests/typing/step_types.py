"""What user code sees of ``ctx.step``: the type of what its function returns, and arguments
checked against the function's parameters. Read by mypy, never run.

A line ending in ``# error: CODE`` must be reported by ``mypy --strict`` with that code; no
other line may be reported (``tests/typing/test_typing.py``).
"""

from __future__ import annotations

from datetime import timedelta
from typing import assert_type

from cadenza import Context, RetryPolicy, StepContext, StepSemantics, workflow


async def forecast(city: str) -> dict[str, float]:
    return {"max": 21.5 if city == "Lisbon" else 12.0}


def count_words(text: str, minimum: int) -> int:
    return sum(1 for word in text.split() if len(word) >= minimum)


async def charge(step: StepContext, cents: int) -> str:
    return f"{step.idempotency_key}:{cents}"


def audit(step: StepContext, line: str) -> None:
    step.logger.info(line)


@workflow(name="typing-step-results")
async def step_results(ctx: Context, city: str) -> float:
    weather = await ctx.step(forecast, city)
    assert_type(weather, dict[str, float])
    assert_type(await ctx.step(count_words, "a b", 1, name="count"), int)
    assert_type(await ctx.step(charge, 1250, retry=RetryPolicy(max_attempts=2)), str)
    assert_type(
        await ctx.step(
            charge, 99, timeout=timedelta(seconds=5), semantics=StepSemantics.AT_MOST_ONCE
        ),
        str,
    )
    assert_type(await ctx.step(audit, "charged"), None)
    assert_type(await ctx.step(lambda: forecast(city)), dict[str, float])
    assert_type(await ctx.step(lambda: len(city)), int)
    return weather["max"]


@workflow(name="typing-step-mistakes")
async def step_mistakes(ctx: Context) -> None:
    receipt: int = await ctx.step(charge, 1250)  # error: arg-type
    await ctx.step(forecast, 42)  # error: arg-type
    await ctx.step(count_words, "a b")  # error: arg-type
    await ctx.step(charge, "1250")  # error: arg-type
    await ctx.step(count_words, "a b", 1, nmae="count")  # error: call-overload
    print(receipt)
