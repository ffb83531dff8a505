"""Callbacks, event waits and their outcomes: open one (with its token's expiry) and turn
what arrived — a payload, a failure, a missed deadline or heartbeat — into the operation's
recorded outcome."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from pydantic import TypeAdapter

from cadenza.clock import iso
from cadenza.errors import (
    CallbackFailed,
    CallbackHeartbeatTimedOut,
    CallbackTimedOut,
    ErrorInfo,
    EventWaitTimedOut,
    InvalidInput,
    SerializationError,
    WorkflowDefinitionError,
)
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
    from cadenza._runtime import Runtime
    from cadenza.context import Context
    from cadenza.serde import SerDes

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
    payload_schema: dict[str, Any] | None = None,
) -> OpRecord:
    act = ctx._runtime
    now = act.now()
    callback_id = act.deterministic_id("callback", op_id)
    attempt = 1
    while callback_id in act.callbacks:
        # A retried run opens this callback again: a new id, so the old token stays spent.
        attempt += 1
        callback_id = act.deterministic_id("callback", op_id, str(attempt))
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
            payload_schema=payload_schema,
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


async def await_callback(
    ctx: Context, op_id: str, op_type: OpType, tp: Any = None, serdes: SerDes[Any] | None = None
) -> Any:
    act = ctx._runtime
    rec = act.journal[op_id]
    failure = CallbackFailed if op_type == OpType.CALLBACK else EventWaitTimedOut
    if rec.status.terminal:
        return await ctx._outcome(rec, failure, tp, serdes)
    callback = act.callbacks[rec.data["callback_id"]]
    now = act.now()
    names = {
        OpType.CALLBACK: (H.CALLBACK_SUCCEEDED, H.CALLBACK_FAILED, H.CALLBACK_TIMED_OUT),
        OpType.EVENT_WAIT: (H.EVENT_WAIT_SUCCEEDED, H.CALLBACK_FAILED, H.EVENT_WAIT_TIMED_OUT),
    }[op_type]
    if callback.status == CallbackStatus.SUCCEEDED:
        what = f"the payload of '{rec.name}'"
        try:
            value = await act.codec.decode_with(callback.result, serdes, op_id, tp, what=what)
        except (InvalidInput, SerializationError) as exc:
            # A payload that fails its type is the callback's failure, recorded as such,
            # so that a retry of the run opens the callback again.
            error = ErrorInfo.from_exception(exc)
            failed = rec.evolve(status=OpStatus.FAILED, error=error, ended_at=now)
            act.record(failed)
            act.note(names[1], failed, error=brief(error))
            await act.flush()
            raise error.to_exception(failure, op_id=op_id, name=rec.name) from None
        # The outcome is durable already (the callback holds it, and a replay reads it from
        # there), so its record goes out with the run's next checkpoint, as a finished wait's
        # does, rather than costing a commit of its own.
        done = rec.evolve(status=OpStatus.SUCCEEDED, result=callback.result, ended_at=now)
        act.record(done)
        act.note(names[0], done)
        return value
    deadline = callback.deadline()
    timed_out = callback.status == CallbackStatus.TIMED_OUT or (
        callback.status == CallbackStatus.PENDING and deadline is not None and now >= deadline
    )
    if callback.status == CallbackStatus.FAILED or timed_out:
        if timed_out:
            error = record_timeout(act, rec, callback)
        else:
            error = callback.error or ErrorInfo("CallbackFailed", "the callback failed")
            failed = rec.evolve(status=OpStatus.FAILED, error=error, ended_at=now)
            act.record(failed)
            act.note(names[1], failed, error=brief(error))
        await act.flush()
        raise error.to_exception(failure, op_id=op_id, name=rec.name)
    raise act.suspend_until(deadline)


def timeout_error(rec: OpRecord, callback: CallbackRecord) -> ErrorInfo:
    """What a callback that timed out failed with, naming the deadline that passed: its
    overall ``timeout`` or (for a callback) its ``heartbeat_timeout``."""
    if callback.status == CallbackStatus.TIMED_OUT and callback.error is not None:
        return callback.error
    what = f"{rec.type} '{rec.name}'"
    beat: datetime | None = None
    if callback.heartbeat_timeout_s is not None:
        since = callback.heartbeat_at or callback.created_at
        beat = since + timedelta(seconds=callback.heartbeat_timeout_s)
    if beat is not None and (callback.expires_at is None or beat < callback.expires_at):
        heard = "its last heartbeat" if callback.heartbeat_at else "it was created"
        overall = (
            f"; its overall timeout was not due until {iso(callback.expires_at)}"
            if callback.expires_at
            else ""
        )
        return ErrorInfo(
            CallbackHeartbeatTimedOut.__name__,
            f"{what} missed its heartbeat: nothing was heard for"
            f" {callback.heartbeat_timeout_s:g}s after {heard} (heartbeat deadline"
            f" {iso(beat)}){overall}. The party completing it must heartbeat more often"
            " than heartbeat_timeout, or complete it",
        )
    kind = CallbackTimedOut if rec.type == OpType.CALLBACK else EventWaitTimedOut
    when = iso(callback.expires_at) if callback.expires_at else "its deadline"
    return ErrorInfo(
        kind.__name__,
        f"{what} timed out at {when}: it was not completed within its timeout",
    )


def record_timeout(act: Runtime, rec: OpRecord, callback: CallbackRecord) -> ErrorInfo:
    """Record that ``callback`` timed out: its operation fails, the history says so, and
    (while the store still holds it PENDING) the callback is resolved TIMED_OUT."""
    error = timeout_error(rec, callback)
    if callback.status == CallbackStatus.PENDING:
        act.resolve(CallbackResolution(callback.callback_id, CallbackStatus.TIMED_OUT, error=error))
    failed = rec.evolve(status=OpStatus.FAILED, error=error, ended_at=act.now())
    act.record(failed)
    timed_out = H.CALLBACK_TIMED_OUT if rec.type == OpType.CALLBACK else H.EVENT_WAIT_TIMED_OUT
    act.note(timed_out, failed, error=brief(error))
    return error


def unawaited(act: Runtime) -> list[tuple[OpRecord, CallbackRecord]]:
    """The open callbacks of the run and their operations, whether or not the workflow
    awaits them now: a timeout falls due whatever the workflow is doing."""
    found = []
    for callback in act.callbacks.values():
        rec = act.journal.get(callback.op_id)
        if (
            callback.status == CallbackStatus.PENDING
            and rec is not None
            and not rec.status.terminal
            and rec.data.get("callback_id") == callback.callback_id
        ):
            found.append((rec, callback))
    return found


def expire_callbacks(act: Runtime) -> None:
    """Record, as of now, the timeouts of open callbacks whose deadline has passed, so
    that history keeps the order in which things happened even when the workflow awaits
    such a callback only later (or never)."""
    now = act.now()
    for rec, callback in unawaited(act):
        deadline = callback.deadline()
        if deadline is not None and now >= deadline:
            record_timeout(act, rec, callback)


def next_callback_deadline(act: Runtime) -> datetime | None:
    """The earliest deadline among the run's open callbacks (the run must wake then)."""
    deadlines = [d for _, cb in unawaited(act) if (d := cb.deadline()) is not None]
    return min(deadlines) if deadlines else None


# --- typed payloads ----------------------------------------------------------------------


def payload_schema_of(tp: Any, name: str) -> dict[str, Any] | None:
    """The JSON Schema a callback stores for its declared ``payload_type``."""
    if tp is None:
        return None
    try:
        schema: dict[str, Any] = TypeAdapter(tp).json_schema()
    except Exception as exc:
        raise WorkflowDefinitionError(
            f"callback '{name}': payload_type {tp!r} has no JSON Schema ({exc}); use a"
            " pydantic model or a type pydantic can validate"
        ) from exc
    return schema


def check_payload(callback: CallbackRecord, payload: Any) -> None:
    """Refuse a payload that does not fit the schema its callback declared (InvalidInput);
    the callback stays open for a corrected one."""
    schema = callback.payload_schema
    if schema is None:
        return
    from cadenza.models._json import schema_errors
    from cadenza.serde import dumps

    where = f"callback {callback.op_id} of run {callback.run_id}"
    shape = describe_schema(schema)
    if payload is None and schema_errors(None, schema):
        raise InvalidInput(
            f"{where} expects a payload shaped {shape}, and none was given: pass it with"
            f" --payload '<json>' (or @file.json); the callback stays open"
        )
    problems = schema_errors(json.loads(dumps(payload, what="the callback payload")), schema)
    if problems:
        listed = "; ".join(problems[:5]) + ("; …" if len(problems) > 5 else "")
        raise InvalidInput(
            f"{where} refused the payload: {listed}. It expects {shape}; the callback stays"
            " open: send a corrected --payload"
        )


def describe_schema(schema: dict[str, Any], limit: int = 400) -> str:
    """A JSON Schema in one short line: ``{decision: "approve"|"reject", comment?: string}``."""
    text = _shape(schema, schema, depth=0)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _shape(node: Any, root: dict[str, Any], depth: int) -> str:
    if not isinstance(node, dict) or depth > 6:
        return "any"
    if "$ref" in node:
        target: Any = root
        for part in str(node["$ref"]).removeprefix("#/").split("/"):
            target = target.get(part, {}) if isinstance(target, dict) else {}
        return _shape(target, root, depth + 1)
    if "const" in node:
        return json.dumps(node["const"])
    if "enum" in node:
        return "|".join(json.dumps(v) for v in node["enum"])
    for key in ("anyOf", "oneOf"):
        if key in node:
            return "|".join(_shape(n, root, depth + 1) for n in node[key])
    kind = node.get("type")
    if kind == "object" or "properties" in node:
        required = set(node.get("required", ()))
        fields = [
            f"{name}{'' if name in required else '?'}: {_shape(sub, root, depth + 1)}"
            for name, sub in node.get("properties", {}).items()
        ]
        extra = node.get("additionalProperties")
        if isinstance(extra, dict) and extra:
            fields.append(f"*: {_shape(extra, root, depth + 1)}")
        elif not fields and extra is not False:
            fields.append("…")
        return "{" + ", ".join(fields) + "}"
    if kind == "array":
        return "[" + _shape(node.get("items", {}), root, depth + 1) + "]"
    if isinstance(kind, list):
        return "|".join(str(k) for k in kind)
    return str(kind) if kind else "any"
