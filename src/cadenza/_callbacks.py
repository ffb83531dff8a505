"""Callbacks, event waits and their outcomes: open one (with its token's expiry) and turn
what arrived — a payload, a failure, a missed deadline or heartbeat — into the operation's
recorded outcome."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from cadenza.clock import iso
from cadenza.errors import CallbackFailed, CallbackTimedOut, ErrorInfo, EventWaitTimedOut
from cadenza.history import HistoryEventType as H
from cadenza.journal import OpRecord, OpStatus, OpType
from cadenza.operations import brief
from cadenza.ports.run_store import (
    CallbackKind,
    CallbackRecord,
    CallbackResolution,
    CallbackStatus,
)

if TYPE_CHECKING:
    from cadenza.context import Context

#: Token lifetime of a callback that has no timeout of its own.
DEFAULT_TOKEN_LIFETIME = timedelta(days=365)


async def open_callback(
    ctx: Context,
    op_id: str,
    op_type: OpType,
    name: str,
    kind: CallbackKind,
    timeout: timedelta | None,
    heartbeat_timeout: timedelta | None,
    pattern: dict[str, Any] | None = None,
) -> OpRecord:
    act = ctx._act
    now = act.now()
    callback_id = act.deterministic_id("callback", op_id)
    expires_at = now + timeout if timeout is not None else None
    act.add_callback(
        CallbackRecord(
            callback_id,
            ctx.run_id,
            op_id,
            kind,
            CallbackStatus.PENDING,
            now,
            expires_at=expires_at,
            heartbeat_timeout_s=heartbeat_timeout.total_seconds() if heartbeat_timeout else None,
            pattern=pattern,
        )
    )
    rec = OpRecord(
        op_id,
        op_type,
        name,
        OpStatus.PENDING,
        ctx._parent,
        started_at=now,
        data={
            "callback_id": callback_id,
            "token_expires_at": iso(expires_at or now + DEFAULT_TOKEN_LIFETIME),
        },
    )
    act.record(rec)
    started = H.CALLBACK_STARTED if kind == CallbackKind.CALLBACK else H.EVENT_WAIT_STARTED
    act.note(
        started,
        rec,
        callback_id=callback_id,
        timeout_s=timeout.total_seconds() if timeout else None,
        heartbeat_timeout_s=heartbeat_timeout.total_seconds() if heartbeat_timeout else None,
        pattern=pattern,
    )
    await act.flush()
    return rec


async def await_callback(ctx: Context, op_id: str, op_type: OpType) -> Any:
    act = ctx._act
    rec = act.journal[op_id]
    failure = CallbackFailed if op_type == OpType.CALLBACK else EventWaitTimedOut
    if rec.status.terminal:
        return await ctx._outcome(rec, failure, None)
    callback = act.callbacks[rec.data["callback_id"]]
    now = act.now()
    names = {
        OpType.CALLBACK: (H.CALLBACK_SUCCEEDED, H.CALLBACK_FAILED, H.CALLBACK_TIMED_OUT),
        OpType.EVENT_WAIT: (H.EVENT_WAIT_SUCCEEDED, H.CALLBACK_FAILED, H.EVENT_WAIT_TIMED_OUT),
    }[op_type]
    if callback.status == CallbackStatus.SUCCEEDED:
        done = rec.evolve(status=OpStatus.SUCCEEDED, result=callback.result, ended_at=now)
        act.record(done)
        act.note(names[0], done)
        await act.flush()
        return await act.codec.decode(callback.result)
    deadline = callback.deadline()
    timed_out = callback.status == CallbackStatus.TIMED_OUT or (
        callback.status == CallbackStatus.PENDING and deadline is not None and now >= deadline
    )
    if callback.status == CallbackStatus.FAILED or timed_out:
        if timed_out:
            kind = CallbackTimedOut if op_type == OpType.CALLBACK else EventWaitTimedOut
            error = ErrorInfo(
                kind.__name__,
                f"{rec.type} '{rec.name}' timed out at {iso(deadline) if deadline else iso(now)}",
            )
            if callback.status == CallbackStatus.PENDING:
                act.resolve(
                    CallbackResolution(callback.callback_id, CallbackStatus.TIMED_OUT, error=error)
                )
        else:
            error = callback.error or ErrorInfo("CallbackFailed", "the callback failed")
        failed = rec.evolve(status=OpStatus.FAILED, error=error, ended_at=now)
        act.record(failed)
        act.note(names[2] if timed_out else names[1], failed, error=brief(error))
        await act.flush()
        raise error.to_exception(failure, op_id=op_id, name=rec.name)
    raise act.suspend_until(deadline)
