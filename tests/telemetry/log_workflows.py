"""A workflow that logs from its body and from a step, for the structured-log tests."""

from __future__ import annotations

from cadenza import Context, StepContext, workflow


async def charge(step: StepContext, amount: int) -> str:
    step.logger.warning("charging %d", amount, extra={"amount": amount})
    return f"charged {amount}"


@workflow(name="log-charge")
async def charge_flow(ctx: Context, amount: int) -> str:
    ctx.logger.warning("about to charge")
    return await ctx.step(charge, amount, name="charge")
