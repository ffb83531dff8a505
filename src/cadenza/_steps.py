"""``ctx.step``: run a function once, checkpoint its outcome, retry it durably.

An attempt's start is buffered (at-least-once) or committed first (at-most-once); its
result is committed before the workflow goes on. A failed attempt either records the time
of the next one (the run suspends until then) or ends the step with StepFailed.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from cadenza._signals import Abort, Fatal, Suspend
from cadenza.clock import iso, parse_iso
from cadenza.errors import (
    ErrorInfo,
    RunCancelled,
    SerializationError,
    StepFailed,
    StepInterrupted,
    StepTimedOut,
)
from cadenza.history import HistoryEventType as H
from cadenza.journal import OpRecord, OpStatus, OpType
from cadenza.operations import (
    StepContext,
    StepSemantics,
    brief,
    callable_name,
    is_async,
    return_type,
    wants_step_context,
)
from cadenza.retry import RetryPolicy, RetryStrategy, decide
from cadenza.serde import SerDes
from cadenza.telemetry._logging import log_context

if TYPE_CHECKING:
    from cadenza.context import Context


async def run_step(
    ctx: Context,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    name: str | None,
    retry: RetryPolicy | RetryStrategy | None,
    timeout: timedelta | None,
    semantics: StepSemantics,
    serdes: SerDes[Any] | None = None,
) -> Any:
    name = name or callable_name(fn)
    op_id, rec = ctx._begin(OpType.STEP, name)
    act = ctx._runtime
    result_type = return_type(fn)
    if rec is not None and rec.status.terminal:
        return await ctx._outcome(rec, StepFailed, result_type, serdes)
    policy = retry or act.default_retry
    started_at = rec.started_at if rec and rec.started_at else act.now()
    attempt = rec.attempt if rec else 0
    while True:
        if rec is not None and rec.status == OpStatus.PENDING:  # backing off before a retry
            due = parse_iso(rec.data["next_attempt_at"])
            if act.now() < due:
                raise act.suspend_until(due)
        elif rec is not None and rec.status == OpStatus.STARTED:  # an attempt died
            if semantics == StepSemantics.AT_MOST_ONCE:
                interrupted = StepInterrupted(
                    f"attempt {rec.attempt} of step '{name}' was interrupted before it"
                    " reported; an at-most-once step never runs an attempt twice"
                )
                rec = await _step_failed(ctx, rec, interrupted, policy)
                continue
            attempt = rec.attempt - 1
        attempt += 1
        rec = OpRecord(
            op_id,
            OpType.STEP,
            name,
            OpStatus.STARTED,
            ctx._parent,
            attempt=attempt,
            started_at=started_at,
        )
        act.record(rec)
        act.note(H.STEP_STARTED, rec, attempt=attempt, worker=act.run.lease_owner)
        if semantics == StepSemantics.AT_MOST_ONCE:
            await act.flush()
        act.executed += 1
        try:
            value = await call_function(ctx, fn, args, rec, timeout)
            text = await act.codec.encode_with(
                value, serdes, op_id, what=f"the result of step '{name}'"
            )
        except (Abort, Fatal, Suspend, RunCancelled, asyncio.CancelledError):
            raise
        except Exception as exc:
            rec = await _step_failed(ctx, rec, exc, policy)
            continue
        done = rec.evolve(status=OpStatus.SUCCEEDED, result=text, ended_at=act.now())
        act.record(done)
        act.note(H.STEP_SUCCEEDED, done, attempt=attempt)
        await act.flush()
        return await act.codec.decode_with(
            text, serdes, op_id, result_type, what=f"the result of step '{name}'"
        )


async def call_function(
    ctx: Context,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    rec: OpRecord,
    timeout: timedelta | None,
) -> Any:
    """Call a step's (or a condition check's) function for attempt ``rec``: a StepContext
    first when it asks for one, a sync function in a worker thread, within ``timeout``."""
    act = ctx._runtime
    if wants_step_context(fn):
        step_ctx = StepContext(
            run_id=ctx.run_id,
            op_id=rec.op_id,
            name=rec.name,
            attempt=rec.attempt,
            idempotency_key=f"{ctx.run_id}/{rec.op_id}",
            logger=logging.getLogger(f"cadenza.step.{rec.name}"),
            artifacts=act.run_artifacts(),
            client=act.control_client(),
        )
        args = (step_ctx, *args)
    awaitable: Awaitable[Any]
    if is_async(fn):
        awaitable = fn(*args)
    else:
        awaitable = asyncio.to_thread(fn, *args)
    try:
        # Instrumentations may make the attempt's span current while the function runs.
        with act.attempt_scope(rec), log_context(op_id=rec.op_id):
            if timeout is None:
                value = await awaitable
            else:
                value = await asyncio.wait_for(awaitable, timeout.total_seconds())
    except TimeoutError:
        raise StepTimedOut(
            f"attempt {rec.attempt} of step '{rec.name}' did not finish within {timeout}"
        ) from None
    if inspect.isawaitable(value):  # a sync lambda that returned a coroutine
        value = await value
    return value


async def _step_failed(
    ctx: Context, rec: OpRecord, exc: BaseException, policy: RetryPolicy | RetryStrategy
) -> OpRecord:
    act = ctx._runtime
    act.count_error()
    info = ErrorInfo.from_exception(exc)
    if isinstance(exc, SerializationError):
        info = ErrorInfo(info.type, info.message, retryable=False, traceback=info.traceback)
    decision = decide(policy, exc, rec.attempt)
    if decision.should_retry:
        due = act.now() + decision.delay
        retrying = rec.evolve(
            status=OpStatus.PENDING, error=info, data={"next_attempt_at": iso(due)}
        )
        act.record(retrying)
        act.note(
            H.STEP_FAILED,
            retrying,
            attempt=rec.attempt,
            error=brief(info),
            next_attempt_at=iso(due),
        )
        await act.flush()
        return retrying
    failed = rec.evolve(status=OpStatus.FAILED, error=info, ended_at=act.now())
    act.record(failed)
    act.note(H.STEP_FAILED, failed, attempt=rec.attempt, error=brief(info), final=True)
    await act.flush()
    raise info.to_exception(StepFailed, op_id=rec.op_id, name=rec.name)
