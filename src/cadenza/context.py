"""The Context: every non-deterministic thing a workflow does goes through it.

Each operation takes the next id of its context ("4", or "4.2" inside child context "4"),
looks it up in the journal, and either returns the recorded outcome (replay) or executes
live and records the outcome before the workflow moves on. Names follow the AWS Durable
Execution SDK for Python.

A Context is a facade over the :class:`~cadenza._runtime.Runtime` it is given (the
engine's activation implements it) and reaches nothing else: this module and the
operations' machinery import nothing from ``cadenza.engine``, so workflow code has no
path to the engine object.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random as _random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, NoReturn, TypeVar, TypeVarTuple, overload

from cadenza._batching import map_branches, parallel_branches, run_batch, state_text
from cadenza._callbacks import await_callback, open_callback, payload_schema_of
from cadenza._conditions import run_condition
from cadenza._patches import patched as _patched
from cadenza._runtime import Runtime
from cadenza._signals import Abort, ContinueAsNew, Fatal, Suspend
from cadenza._state_changes import apply_changes, changes_between
from cadenza._steps import run_step
from cadenza.batch import BatchResult, CompletionConfig
from cadenza.clock import iso, parse_iso
from cadenza.errors import (
    CallbackFailed,
    ChildContextFailed,
    ErrorInfo,
    InvocationFailed,
    OperationFailed,
    RunCancelled,
    WorkflowDefinitionError,
    WorkflowNotFound,
)
from cadenza.history import HistoryEventType as H
from cadenza.journal import OpRecord, OpStatus, OpType, parent_of
from cadenza.operations import (
    StepContext,
    StepSemantics,
    WaitDecision,
    brief,
    callable_name,
    return_type,
)
from cadenza.ports.run_store import (
    DEFAULT_TENANT,
    CallbackKind,
    CallbackRecord,
    CallbackStatus,
)
from cadenza.retry import RetryPolicy, RetryStrategy
from cadenza.serde import SerDes, SerDesContext, convert
from cadenza.state import AgentState
from cadenza.workflow import WorkflowDefinition, lookup

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


class Callback:
    """A pending callback: hand ``token`` to whoever completes it, then ``await result()``."""

    def __init__(
        self,
        ctx: Context,
        op_id: str,
        name: str,
        callback_id: str,
        expires_at: datetime,
        payload_type: Any = None,
        serdes: SerDes[Any] | None = None,
    ):
        self._ctx = ctx
        self._serdes = serdes
        self.op_id = op_id
        self.name = name
        self.id = callback_id
        self.payload_type = payload_type
        self._expires_at = expires_at
        self._token: str | None = None

    @property
    def token(self) -> str:
        """The token that completes this callback. Signed when first asked for: a replay
        that only awaits the callback never needs it."""
        if self._token is None:
            self._token = self._ctx._runtime.tokens.issue(
                self.id, self._ctx.run_id, self.op_id, self._expires_at
            )
        return self._token

    async def result(self) -> Any:
        """The payload it was succeeded with (a ``payload_type`` instance, when declared;
        what the callback's ``serdes`` rebuilds from it, when it has one)."""
        return await await_callback(
            self._ctx, self.op_id, OpType.CALLBACK, self.payload_type, self._serdes
        )


class Context:
    def __init__(self, runtime: Runtime, context_id: str, *, replay_only: bool = False) -> None:
        self._runtime = runtime
        self.id = context_id
        self._ops = 0
        self._draws = 0
        # Inside a child context the journal says has finished, every operation must be
        # found in the journal: running one live would be a second execution.
        self._replay_only = replay_only

    # --- identity and state -------------------------------------------------------------

    @property
    def run_id(self) -> str:
        return self._runtime.run.run_id

    @property
    def trace_id(self) -> str | None:
        """The trace id shared by every run and event of one conversation."""
        return self._runtime.run.trace_id

    @property
    def tenant(self) -> str:
        """The tenant the run belongs to (its child and rule-started runs inherit it)."""
        return self._runtime.run.tenant

    async def input_data(self) -> Any:
        """The run's input as plain JSON data (it never changes, so replay-safe)."""
        return await self._runtime.codec.decode(self._runtime.run.input)

    @property
    def workflow(self) -> WorkflowDefinition:
        return self._runtime.definition

    @property
    def state(self) -> AgentState:
        return self._runtime.state

    @property
    def is_replaying(self) -> bool:
        """True while the next operation still has a recorded outcome, and throughout a
        finished child context whose record predates recorded state changes (run again
        only for its effects on the state; newer finished children are not run at all)."""
        return self._replay_only or self._op_id(self._ops + 1) in self._runtime.journal

    def patched(self, change_id: str) -> bool:
        """Whether this run takes the new branch of a code change named ``change_id``:
        False for a run whose journal passed this point under the old code, True for every
        other run (recorded, so that its replays keep taking the new branch)."""
        return _patched(self, change_id)

    @property
    def logger(self) -> logging.LoggerAdapter[logging.Logger]:
        """A logger that stays quiet while replaying, so each line is written once."""
        return _ReplayAwareLogger(self, suppress_replay_logs=True)

    def get_logger(
        self, *, suppress_replay_logs: bool = True
    ) -> logging.LoggerAdapter[logging.Logger]:
        """The workflow's logger; with ``suppress_replay_logs=False`` it also writes while
        replaying (each such line marked "(replay)"), to follow every activation."""
        return _ReplayAwareLogger(self, suppress_replay_logs=suppress_replay_logs)

    def now(self) -> datetime:
        """The current time, recorded so that replay sees the same value."""
        op_id, rec = self._begin(OpType.NOW, "now")
        if rec is not None:
            return parse_iso(json.loads(rec.result or "null"))
        value = self._runtime.now()
        self._runtime.record(
            OpRecord(
                op_id,
                OpType.NOW,
                "now",
                OpStatus.SUCCEEDED,
                self._parent,
                result=json.dumps(iso(value)),
                started_at=value,
                ended_at=value,
            )
        )
        return value

    def uuid(self) -> str:
        """A UUID that is the same on every replay."""
        self._draws += 1
        return self._runtime.deterministic_id(self.id, "uuid", str(self._draws))

    def random(self) -> float:
        """A number in [0, 1) that is the same on every replay."""
        self._draws += 1
        return _random.Random(
            self._runtime.deterministic_id(self.id, "random", str(self._draws))
        ).random()

    # --- step ---------------------------------------------------------------------------

    # What ``fn`` returns is what the step returns: a coroutine function's awaited value,
    # a plain function's value (run in a thread). A first parameter typed StepContext is
    # filled in by cadenza, so ``args`` are the rest. Async forms come first: a coroutine
    # function also fits the plain ``Callable[..., T]`` shape, with T the coroutine.
    @overload
    async def step(
        self,
        fn: Callable[[StepContext, *Ts], Awaitable[T]],
        *args: *Ts,
        name: str | None = None,
        retry: RetryPolicy | RetryStrategy | None = None,
        timeout: timedelta | None = None,
        semantics: StepSemantics = StepSemantics.AT_LEAST_ONCE,
        serdes: SerDes[Any] | None = None,
    ) -> T: ...

    @overload
    async def step(
        self,
        fn: Callable[[*Ts], Awaitable[T]],
        *args: *Ts,
        name: str | None = None,
        retry: RetryPolicy | RetryStrategy | None = None,
        timeout: timedelta | None = None,
        semantics: StepSemantics = StepSemantics.AT_LEAST_ONCE,
        serdes: SerDes[Any] | None = None,
    ) -> T: ...

    @overload
    async def step(
        self,
        fn: Callable[[StepContext, *Ts], T],
        *args: *Ts,
        name: str | None = None,
        retry: RetryPolicy | RetryStrategy | None = None,
        timeout: timedelta | None = None,
        semantics: StepSemantics = StepSemantics.AT_LEAST_ONCE,
        serdes: SerDes[Any] | None = None,
    ) -> T: ...

    @overload
    async def step(
        self,
        fn: Callable[[*Ts], T],
        *args: *Ts,
        name: str | None = None,
        retry: RetryPolicy | RetryStrategy | None = None,
        timeout: timedelta | None = None,
        semantics: StepSemantics = StepSemantics.AT_LEAST_ONCE,
        serdes: SerDes[Any] | None = None,
    ) -> T: ...

    # mypy (up to 2.4 at least) cannot match any implementation against overloads whose
    # ``*args`` is a TypeVarTuple, even ``*args: Any``; callers see only the overloads.
    async def step(  # type: ignore[misc]
        self,
        fn: Callable[..., Any],
        *args: Any,
        name: str | None = None,
        retry: RetryPolicy | RetryStrategy | None = None,
        timeout: timedelta | None = None,
        semantics: StepSemantics = StepSemantics.AT_LEAST_ONCE,
        serdes: SerDes[Any] | None = None,
    ) -> Any:
        """Run ``fn(*args)`` once and checkpoint its result; retry per ``retry``; ``serdes``
        stores the result through a custom :class:`SerDes`."""
        return await run_step(self, fn, args, name, retry, timeout, semantics, serdes)

    # --- wait ---------------------------------------------------------------------------

    async def wait(self, duration: timedelta | float, *, name: str | None = None) -> None:
        """Sleep durably: the run suspends and holds no process until the time comes."""
        seconds = duration.total_seconds() if isinstance(duration, timedelta) else float(duration)
        name = name or "wait"
        op_id, rec = self._begin(OpType.WAIT, name)
        act = self._runtime
        if rec is not None and rec.status.terminal:
            return
        if rec is None:
            now = act.now()
            rec = OpRecord(
                op_id,
                OpType.WAIT,
                name,
                OpStatus.PENDING,
                self._parent,
                started_at=now,
                data={"until": iso(now + timedelta(seconds=seconds))},
            )
            act.record(rec)
            act.note(H.WAIT_STARTED, rec, seconds=seconds, until=rec.data["until"])
            await act.flush()
        until = parse_iso(rec.data["until"])
        if act.now() < until:
            raise act.suspend_until(until)
        done = rec.evolve(status=OpStatus.SUCCEEDED, ended_at=act.now())
        act.record(done)
        act.note(H.WAIT_SUCCEEDED, done)

    # --- callbacks and events -----------------------------------------------------------

    async def create_callback(
        self,
        *,
        name: str | None = None,
        timeout: timedelta | None = None,
        heartbeat_timeout: timedelta | None = None,
        payload_type: Any = None,
        serdes: SerDes[Any] | None = None,
    ) -> Callback:
        """A callback whose ``token`` an outside party uses to succeed or fail it.

        ``payload_type`` (a pydantic model, or any type pydantic validates) declares what
        the payload must be: its JSON Schema is stored with the callback, a payload that
        does not fit it is refused before the callback completes, and ``result()``
        returns the validated value. With ``serdes`` the payload is text that
        ``serdes.deserialize`` turns into the value (``payload_type`` does not apply).
        """
        name = name or "callback"
        op_id, rec = self._begin(OpType.CALLBACK, name)
        rec = rec or await open_callback(
            self,
            op_id,
            OpType.CALLBACK,
            name,
            CallbackKind.CALLBACK,
            timeout,
            heartbeat_timeout,
            # With a SerDes the payload is its text: a payload_type does not describe it.
            payload_schema=payload_schema_of(payload_type, name) if serdes is None else None,
        )
        expires_at = parse_iso(rec.data["token_expires_at"])
        return Callback(
            self, op_id, name, rec.data["callback_id"], expires_at, payload_type, serdes
        )

    async def wait_for_callback(
        self,
        submitter: Callable[..., Any],
        *,
        name: str | None = None,
        timeout: timedelta | None = None,
        heartbeat_timeout: timedelta | None = None,
        retry: RetryPolicy | RetryStrategy | None = None,
        payload_type: Any = None,
        serdes: SerDes[Any] | None = None,
    ) -> Any:
        """Create a callback, hand its token to ``submitter`` (a step), await the outcome
        (validated as ``payload_type`` when given, read through ``serdes`` when given, as
        in :meth:`create_callback`)."""
        name = name or callable_name(submitter)

        async def waiting(child: Context) -> Any:
            callback = await child.create_callback(
                name=name,
                timeout=timeout,
                heartbeat_timeout=heartbeat_timeout,
                payload_type=payload_type,
                serdes=serdes,
            )
            await child.step(submitter, callback.token, name="submit", retry=retry)
            return await callback.result()

        try:
            value = await self.run_in_child_context(waiting, name=name, serdes=serdes)
        except ChildContextFailed as exc:
            # The child context is how this is built, not what the caller asked for: an
            # external failure raises CallbackFailed, as create_callback().result() does.
            raise CallbackFailed(
                exc.message,
                error_type=exc.error_type,
                op_id=exc.op_id,
                name=exc.name,
                details=exc.details,
                retryable=exc.retryable,
            ) from None
        return value if payload_type is None or serdes is not None else convert(value, payload_type)

    async def wait_for_event(
        self,
        pattern: dict[str, Any],
        *,
        name: str | None = None,
        timeout: timedelta | None = None,
    ) -> dict[str, Any]:
        """Suspend until an event matching an EventBridge ``pattern`` is published."""
        from cadenza.events.patterns import compile_pattern

        compile_pattern(pattern)  # a malformed pattern fails here, not when events arrive
        name = name or "event"
        op_id, rec = self._begin(OpType.EVENT_WAIT, name)
        if rec is None:
            await open_callback(
                self, op_id, OpType.EVENT_WAIT, name, CallbackKind.EVENT, timeout, None, pattern
            )
        result: dict[str, Any] = await await_callback(self, op_id, OpType.EVENT_WAIT)
        return result

    async def emit(
        self, detail_type: str, detail: dict[str, Any], *, source: str | None = None
    ) -> str:
        """Publish an event; it leaves with the checkpoint (transactional outbox)."""
        from cadenza.events.envelope import Event

        op_id, rec = self._begin(OpType.EMIT, detail_type)
        if rec is not None:
            return str(rec.data["event_id"])
        act = self._runtime
        now = act.now()
        retried = [str(act.redrives)] if act.redrives else []  # a retry emits anew
        event = Event.new(
            detail_type,
            json.loads(json.dumps(detail, default=str)),
            source=source or f"cadenza.workflow.{self.workflow.name}",
            run_id=self.run_id,
            trace_id=act.run.trace_id,
            causation_id=act.run.trace_id and f"{self.run_id}/{op_id}",
            id=act.deterministic_id("event", op_id, *retried),
            time=now,
        )
        rec = OpRecord(
            op_id,
            OpType.EMIT,
            detail_type,
            OpStatus.SUCCEEDED,
            self._parent,
            started_at=now,
            ended_at=now,
            data={"event_id": event.id},
        )
        act.record(rec)
        envelope = event.to_dict()
        if act.run.tenant != DEFAULT_TENANT:  # only the rules of its tenant receive it
            envelope["tenant"] = act.run.tenant
        act.add_event(envelope)
        act.note(H.EVENT_EMITTED, rec, event_id=event.id, source=event.source)
        await act.flush()
        return event.id

    # --- composition --------------------------------------------------------------------

    async def run_in_child_context(
        self,
        fn: Callable[..., Awaitable[T]],
        *args: Any,
        name: str | None = None,
        serdes: SerDes[Any] | None = None,
    ) -> T:
        """Run ``fn(child_ctx, *args)`` as one unit; its failure raises here. Once it has
        finished, replay returns its recorded result without calling ``fn`` again.
        ``serdes`` stores the result through a custom :class:`SerDes`."""
        name = name or callable_name(fn)
        op_id, rec = self._begin(OpType.CONTEXT, name)
        ok, outcome = await self._run_child(op_id, name, fn, args, rec, serdes)
        if ok:
            return await self._runtime.codec.decode_with(  # type: ignore[no-any-return]
                outcome, serdes, op_id, return_type(fn), what=f"the result of '{name}'"
            )
        assert isinstance(outcome, ErrorInfo)
        raise outcome.to_exception(ChildContextFailed, op_id=op_id, name=name)

    async def _run_child(
        self,
        op_id: str,
        name: str,
        fn: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...],
        rec: OpRecord | None,
        serdes: SerDes[Any] | None = None,
    ) -> tuple[bool, Any]:
        """(True, result JSON text) or (False, ErrorInfo); Suspend and aborts propagate."""
        act = self._runtime
        if rec is not None and rec.status.terminal:
            await self._restore_child(rec, fn, args)
            if rec.status == OpStatus.SUCCEEDED:
                return True, rec.result
            return False, rec.error
        if rec is None:
            rec = OpRecord(
                op_id,
                OpType.CONTEXT,
                name,
                OpStatus.STARTED,
                parent_of(op_id),
                started_at=act.now(),
            )
            act.record(rec)
            act.note(H.CONTEXT_STARTED, rec)
        child = Context(act, op_id)
        before = state_text(act.state.to_dict())
        try:
            value = await fn(child, *args)
            text = await act.codec.encode_with(value, serdes, op_id, what=f"the result of '{name}'")
        except (Abort, Fatal, Suspend, RunCancelled, asyncio.CancelledError):
            raise
        except Exception as exc:
            info = ErrorInfo.from_exception(exc)
            failed = rec.evolve(
                status=OpStatus.FAILED,
                error=info,
                ended_at=act.now(),
                data={**rec.data, **await self._state_changes(before, name)},
            )
            act.record(failed)
            act.note(H.CONTEXT_FAILED, failed, error=brief(info))
            return False, info
        done = rec.evolve(
            status=OpStatus.SUCCEEDED,
            result=text,
            ended_at=act.now(),
            data={**rec.data, **await self._state_changes(before, name)},
        )
        act.record(done)
        act.note(H.CONTEXT_SUCCEEDED, done)
        return True, text

    async def _state_changes(self, before: str, name: str) -> dict[str, Any]:
        """What a finished child context (or batch) keeps on its record for replay: the
        stored text of its changes to the state since ``before`` (``state_text`` of the
        document when it started), and when it finished among the others (a batch gives
        back its finished items' changes in that order)."""
        act = self._runtime
        after = state_text(act.state.to_dict())
        # Most children leave the document alone: equal texts need no snapshots to diff.
        changes = [] if after == before else changes_between(json.loads(before), json.loads(after))
        act.children_finished += 1
        return {
            "state_changes": await act.codec.encode(changes, what=f"the state changes of '{name}'"),
            "finished": [act.invocation, act.children_finished],
        }

    async def _restore_child(
        self, rec: OpRecord, fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...]
    ) -> None:
        """Bring the state document to where a finished child context (or batch) left it,
        without calling its function: its record holds its changes."""
        if "state_changes" in rec.data:
            changes = await self._runtime.codec.decode(
                rec.data["state_changes"], what=f"the state changes of '{rec.name}'"
            )
            apply_changes(self._runtime.state.to_dict(), changes)
            return
        # Recorded before children kept their changes: rebuild them by replaying it.
        await self._replay_child(rec.op_id, fn, args)

    async def _replay_child(
        self, op_id: str, fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...]
    ) -> None:
        """Run a finished child context again over its journal, for its effects on the
        state document (for records that do not hold them); its recorded outcome stands,
        whatever this run returns."""
        act = self._runtime
        act.replayed += 1
        try:
            await fn(Context(act, op_id, replay_only=True), *args)
        except (Abort, Fatal, RunCancelled, asyncio.CancelledError):
            raise
        except Suspend:
            raise act.nondeterminism_in_finished(op_id) from None
        except Exception:
            pass  # it failed the same way the first time: the record says so

    async def map(
        self,
        items: Sequence[Any],
        fn: Callable[..., Awaitable[Any]],
        *,
        name: str | None = None,
        max_concurrency: int | None = None,
        completion: CompletionConfig | None = None,
        item_namer: Callable[[Any, int], str] | None = None,
        item_serdes: SerDes[Any] | None = None,
        serdes: SerDes[Any] | None = None,
    ) -> BatchResult:
        """Run ``fn(child_ctx, item)`` (or ``fn(child_ctx, item, index)``, or
        ``fn(child_ctx, item, index, items)``) for every item, each in its own child
        context, named ``item_namer(item, index)`` if given. ``item_serdes`` stores each
        item's result, ``serdes`` the BatchResult, through a custom :class:`SerDes`."""
        where = f" {name!r}" if name else ""
        items = list(items)
        branches, names = map_branches(items, fn, item_namer, f"the function of ctx.map{where}")
        types = [return_type(fn)] * len(items)
        batch_name = name or f"map:{callable_name(fn)}"
        return await run_batch(
            self,
            OpType.MAP,
            batch_name,
            branches,
            types,
            max_concurrency,
            completion,
            names,
            item_serdes,
            serdes,
        )

    async def parallel(
        self,
        branches: Sequence[Callable[[Context], Awaitable[Any]]]
        | Mapping[str, Callable[[Context], Awaitable[Any]]],
        *,
        name: str | None = None,
        max_concurrency: int | None = None,
        completion: CompletionConfig | None = None,
        item_serdes: SerDes[Any] | None = None,
        serdes: SerDes[Any] | None = None,
    ) -> BatchResult:
        """Run each ``branch(child_ctx)`` concurrently, each in its own child context; a
        ``{name: branch}`` mapping names each branch's context after its key.
        ``item_serdes`` and ``serdes`` as for :meth:`map`."""
        where = f" {name!r}" if name else ""
        listed, names = parallel_branches(branches, f"ctx.parallel{where}")
        types = [return_type(b) for b in listed]
        batch_name = name or "parallel"
        return await run_batch(
            self,
            OpType.PARALLEL,
            batch_name,
            listed,
            types,
            max_concurrency,
            completion,
            names,
            item_serdes,
            serdes,
        )

    # --- child runs and conditions ------------------------------------------------------

    def continue_as_new(self, input: Any = None) -> NoReturn:
        """End this run and start a fresh run of the same workflow with ``input`` (an
        empty journal, the same trace), to keep a long-lived loop from growing without
        bound. This run ends SUCCEEDED with no result. Root context of a root run only."""
        if self.id or self._replay_only:
            raise WorkflowDefinitionError(
                "continue_as_new ends the whole run: call it from the workflow function"
                " itself, not inside a child context, map or parallel branch"
            )
        raise ContinueAsNew(input)

    async def invoke(
        self,
        workflow: WorkflowDefinition | str,
        input: Any = None,
        *,
        name: str | None = None,
        serdes_payload: SerDes[Any] | None = None,
        serdes_result: SerDes[Any] | None = None,
    ) -> Any:
        """Start ``workflow`` as a child run and await its result.

        ``serdes_payload`` turns the input into the text the child run receives (its
        workflow takes a ``str`` and deserialises it with the same SerDes);
        ``serdes_result`` rebuilds the result from the text the child returned.
        """
        definition = workflow if isinstance(workflow, WorkflowDefinition) else lookup(workflow)
        if definition is None:
            raise WorkflowNotFound(f"no workflow named {workflow!r} is registered")
        name = name or definition.name
        op_id, rec = self._begin(OpType.INVOKE, name)
        act = self._runtime
        result_type = definition.output_type if serdes_result is None else None
        if rec is not None and rec.status.terminal:
            return await self._outcome(rec, InvocationFailed, result_type, serdes_result)
        if rec is None:
            now = act.now()
            child_id = f"{self.run_id}.{op_id}"
            again = 1
            while child_id in act.callbacks:  # a retried run invokes anew: a new child run
                again += 1
                child_id = f"{self.run_id}.{op_id}~{again}"
            if serdes_payload is not None:
                input = serdes_payload.serialize(input, SerDesContext(op_id, self.run_id))
            await act.start_child_run(definition, input, run_id=child_id, op_id=op_id)
            act.add_callback(
                CallbackRecord(
                    child_id, self.run_id, op_id, CallbackKind.INVOKE, CallbackStatus.PENDING, now
                )
            )
            rec = OpRecord(
                op_id,
                OpType.INVOKE,
                name,
                OpStatus.PENDING,
                self._parent,
                started_at=now,
                data={"callback_id": child_id, "child_run_id": child_id},
            )
            act.record(rec)
            act.note(
                H.INVOKE_STARTED,
                rec,
                child_run_id=child_id,
                workflow=f"{definition.name}@{definition.version}",
            )
            await act.flush()
        callback = act.callbacks[rec.data["callback_id"]]
        if callback.status == CallbackStatus.PENDING:
            raise act.suspend_until(None)
        if callback.status == CallbackStatus.SUCCEEDED:
            # The child's result lives in the child's scope; the parent keeps its own copy.
            text = await act.codec.adopt(callback.result, source_run_id=rec.data["child_run_id"])
            done = rec.evolve(status=OpStatus.SUCCEEDED, result=text, ended_at=act.now())
            act.record(done)
            act.note(H.INVOKE_SUCCEEDED, done)
            await act.flush()
            return await act.codec.decode_with(
                text, serdes_result, op_id, result_type, what=f"the result of '{name}'"
            )
        error = callback.error or ErrorInfo("InvocationFailed", "the child run failed")
        failed = rec.evolve(status=OpStatus.FAILED, error=error, ended_at=act.now())
        act.record(failed)
        act.note(H.INVOKE_FAILED, failed, error=brief(error))
        await act.flush()
        raise error.to_exception(InvocationFailed, op_id=op_id, name=name)

    async def wait_for_condition(
        self,
        check: Callable[..., Any],
        initial_state: Any,
        *,
        wait_strategy: Callable[[Any, int], WaitDecision],
        name: str | None = None,
        serdes: SerDes[Any] | None = None,
    ) -> Any:
        """Poll durably: ``state = check(state)`` until ``wait_strategy`` says stop.

        As in AWS durable executions it is one step-like operation (sub-type
        ``WaitForCondition``): each check is an attempt, recorded in history as
        ``StepStarted`` and then ``StepSucceeded`` (with ``next_attempt_at`` while the
        condition is not met yet) or ``StepFailed``. ``serdes`` stores the state.
        """
        return await run_condition(self, check, initial_state, wait_strategy, name, serdes)

    # --- internals ----------------------------------------------------------------------

    @property
    def _parent(self) -> str | None:
        return self.id or None

    def _op_id(self, position: int) -> str:
        return f"{self.id}.{position}" if self.id else str(position)

    def _begin(self, op_type: OpType, name: str) -> tuple[str, OpRecord | None]:
        self._ops += 1
        op_id = self._op_id(self._ops)
        rec = self._runtime.journal.get(op_id)
        if rec is not None:
            if rec.type != op_type or rec.name != name:
                raise self._runtime.nondeterminism(op_id, rec, str(op_type), name)
            if rec.status.terminal:
                self._runtime.replayed += 1
        elif self._replay_only:
            raise self._runtime.nondeterminism_in_finished(self.id, op_id, f"{op_type} '{name}'")
        self._runtime.check_stop(op_id, rec)
        return op_id, rec

    async def _outcome(
        self,
        rec: OpRecord,
        failure: type[OperationFailed],
        tp: Any,
        serdes: SerDes[Any] | None = None,
    ) -> Any:
        if rec.status == OpStatus.SUCCEEDED:
            return await self._runtime.codec.decode_with(
                rec.result, serdes, rec.op_id, tp, what=f"the result of '{rec.name}'"
            )
        if rec.type == OpType.STEP:
            self._runtime.count_error()
        error = rec.error or ErrorInfo("OperationFailed", f"'{rec.name}' failed")
        raise error.to_exception(failure, op_id=rec.op_id, name=rec.name)


class _ReplayAwareLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    def __init__(self, ctx: Context, *, suppress_replay_logs: bool) -> None:
        super().__init__(logging.getLogger(f"cadenza.workflow.{ctx.workflow.name}"), {})
        self._ctx = ctx
        self._suppress = suppress_replay_logs

    def isEnabledFor(self, level: int) -> bool:
        if self._suppress and self._ctx.is_replaying:
            return False
        return super().isEnabledFor(level)

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        marker = " (replay)" if self._ctx.is_replaying else ""
        return f"[{self._ctx.run_id}]{marker} {msg}", kwargs
