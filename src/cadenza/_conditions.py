"""``ctx.wait_for_condition``: poll durably, one check per attempt, the state kept between.

As in AWS durable executions it is one step-like operation (sub-type ``WaitForCondition``):
each check is an attempt, recorded in history as ``StepStarted`` and then either
``StepSucceeded`` — with ``next_attempt_at`` and the state when the strategy asks for
another check, as AWS records a step retry that carries a payload — or ``StepFailed``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from cadenza._signals import Abort, Fatal, Suspend
from cadenza._steps import call_function
from cadenza.clock import iso, parse_iso
from cadenza.errors import ErrorInfo, RunCancelled, StepFailed
from cadenza.history import HistoryEventType as H
from cadenza.journal import OpRecord, OpStatus, OpType
from cadenza.operations import WaitDecision, brief, callable_name
from cadenza.serde import SerDes, preview

if TYPE_CHECKING:
    from cadenza.context import Context


async def run_condition(
    ctx: Context,
    check: Callable[..., Any],
    initial_state: Any,
    wait_strategy: Callable[[Any, int], WaitDecision],
    name: str | None,
    serdes: SerDes[Any] | None,
) -> Any:
    name = name or callable_name(check)
    op_id, rec = ctx._begin(OpType.CONDITION, name)
    act = ctx._runtime
    what = f"the state of condition '{name}'"
    if rec is not None and rec.status.terminal:
        return await ctx._outcome(rec, StepFailed, None, serdes)
    if rec is not None:
        next_at = parse_iso(rec.data["next_at"])
        if act.now() < next_at:
            raise act.suspend_until(next_at)
        state = await act.codec.decode_with(rec.data["state"], serdes, op_id, what=what)
        attempt = rec.attempt
    else:
        rec = OpRecord(
            op_id, OpType.CONDITION, name, OpStatus.STARTED, ctx._parent, started_at=act.now()
        )
        state, attempt = initial_state, 0
    attempt += 1
    act.executed += 1
    rec = rec.evolve(attempt=attempt)
    kind = {"sub_type": "WaitForCondition", "attempt": attempt}
    act.note(H.STEP_STARTED, rec, **kind)
    try:
        state = await call_function(ctx, check, (state,), rec, None)
        text = await act.codec.encode_with(state, serdes, op_id, what=what)
        # The strategy sees the state as replay will: read back from what was stored.
        decision = wait_strategy(
            await act.codec.decode_with(text, serdes, op_id, what=what), attempt
        )
    except (Abort, Fatal, Suspend, RunCancelled, asyncio.CancelledError):
        raise
    except Exception as exc:
        info = ErrorInfo.from_exception(exc)
        failed = rec.evolve(status=OpStatus.FAILED, error=info, ended_at=act.now())
        act.record(failed)
        act.note(H.STEP_FAILED, failed, **kind, error=brief(info))
        await act.flush()
        raise info.to_exception(StepFailed, op_id=op_id, name=name) from None
    if not decision.should_continue:
        done = rec.evolve(status=OpStatus.SUCCEEDED, result=text, ended_at=act.now(), data={})
        act.record(done)
        act.note(H.STEP_SUCCEEDED, done, **kind)
        await act.flush()
        return await act.codec.decode_with(text, serdes, op_id, what=what)
    next_at = act.now() + decision.delay
    waiting = rec.evolve(status=OpStatus.PENDING, data={"state": text, "next_at": iso(next_at)})
    act.record(waiting)
    # AWS records a check that asks for another as a step retry carrying the state:
    # the check itself succeeded, and the operation stays open until next_attempt_at.
    act.note(
        H.STEP_SUCCEEDED,
        waiting,
        **kind,
        state=preview(text),
        next_attempt_at=iso(next_at),
        next_attempt_delay_s=decision.delay.total_seconds(),
    )
    await act.flush()
    raise act.suspend_until(next_at)
