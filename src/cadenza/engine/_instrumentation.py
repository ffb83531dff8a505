"""Instrumentation hooks: what an activation does live, as it does it.

An :class:`Instrumentation` hears about each activation (invocation), each durable
operation and each step attempt. The events are read off the history an activation writes
(``Activation.note``), and replay writes none, so an operation is reported once however
many times its run is replayed: by the activation that started it, and by the one that
ended it (a wait or a callback may end activations later, on another worker). A hook that
raises is logged once and ignored; it never breaks a run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeAlias, cast, runtime_checkable

from cadenza.errors import ErrorInfo
from cadenza.history import HistoryEvent
from cadenza.history import HistoryEventType as H
from cadenza.journal import OpRecord
from cadenza.ports.run_store import QueueStats

if TYPE_CHECKING:
    from cadenza.context import Context
    from cadenza.engine.activation import Activation, ActivationResult

__all__ = [
    "AgentInfo",
    "AgentScope",
    "AttemptInfo",
    "Instrumentation",
    "InvocationInfo",
    "OperationInfo",
    "QueueObserver",
    "agent_invocation",
]

log = logging.getLogger("cadenza.instrumentation")
# The registered instrumentations that override one hook, each with its bound hook.
_Hooks: TypeAlias = "tuple[tuple[Instrumentation, Callable[[Any], Any]], ...]"

_STARTS = frozenset(
    {
        H.STEP_STARTED,
        H.WAIT_STARTED,
        H.CALLBACK_STARTED,
        H.CONTEXT_STARTED,
        H.INVOKE_STARTED,
        H.EVENT_WAIT_STARTED,
    }
)
_ENDS = {
    H.WAIT_SUCCEEDED: "SUCCEEDED",
    H.CALLBACK_SUCCEEDED: "SUCCEEDED",
    H.CALLBACK_FAILED: "FAILED",
    H.CALLBACK_TIMED_OUT: "TIMED_OUT",
    H.CONTEXT_SUCCEEDED: "SUCCEEDED",
    H.CONTEXT_FAILED: "FAILED",
    H.INVOKE_SUCCEEDED: "SUCCEEDED",
    H.INVOKE_FAILED: "FAILED",
    H.EVENT_WAIT_SUCCEEDED: "SUCCEEDED",
    H.EVENT_WAIT_TIMED_OUT: "TIMED_OUT",
}


@dataclass(frozen=True, slots=True)
class InvocationInfo:
    """One activation of a run. The end fields are set when it ends: ``outcome`` is
    ``SUCCEEDED``, ``FAILED``, ``CANCELLED``, ``SUSPENDED`` or ``ABORTED`` (the store
    refused a checkpoint, e.g. the lease was lost)."""

    run_id: str
    workflow: str
    version: str
    trace_id: str | None
    lease_epoch: int
    worker: str | None
    invocation: int  # 1 for the run's first activation
    start_time: datetime
    tenant: str
    parent_run_id: str | None = None
    parent_op_id: str | None = None
    causation_id: str | None = None  # "RUN/OP" of the emit that started a rule's run
    created_at: datetime | None = None
    end_time: datetime | None = None
    replayed: int = 0
    executed: int = 0
    outcome: str | None = None
    error: ErrorInfo | None = None

    @property
    def is_first_invocation(self) -> bool:
        return self.invocation == 1


@dataclass(frozen=True, slots=True)
class OperationInfo:
    """A durable operation. ``status`` is None when it starts, then ``SUCCEEDED``,
    ``FAILED`` or ``TIMED_OUT``; ``start_time`` is the recorded start, possibly in an
    earlier activation. ``record`` is the journal record (a model call's reply is its
    result)."""

    run_id: str
    trace_id: str | None
    op_id: str
    parent_op_id: str | None
    type: str
    name: str
    start_time: datetime
    record: OpRecord
    redrives: int = 0  # how often the run was retried: a retried run runs op ids again
    end_time: datetime | None = None
    status: str | None = None
    error: ErrorInfo | None = None
    details: dict[str, Any] = field(default_factory=dict)
    agent: AgentScope | None = None  # the agent the operation runs in, if any


@dataclass(frozen=True, slots=True)
class AttemptInfo:
    """One attempt of a step (or one check of ``wait_for_condition``)."""

    operation: OperationInfo
    attempt: int
    start_time: datetime
    end_time: datetime | None = None
    error: ErrorInfo | None = None
    retry_follows: bool = False
    next_attempt_at: str | None = None


@dataclass(frozen=True, slots=True)
class AgentScope:
    """An agent running in a workflow: its id is the op id of its first operation, so it
    is the same in every replay. ``outer`` is the agent it runs inside, if any."""

    name: str
    agent_id: str
    parent_op_id: str | None
    outer: AgentScope | None = None

    def enclosing(self, parent_op_id: str | None) -> AgentScope | None:
        """The innermost agent an operation with ``parent_op_id`` belongs to directly."""
        scope: AgentScope | None = self
        while scope is not None and scope.parent_op_id != parent_op_id:
            scope = scope.outer
        return scope


@dataclass(frozen=True, slots=True)
class AgentInfo:
    """An agent's run (``Agent.run``) that ended live: its first operation's recorded
    start to now. ``model`` is the agent's ``provider:model``."""

    run_id: str
    trace_id: str | None
    scope: AgentScope
    model: str
    start_time: datetime
    end_time: datetime
    redrives: int = 0
    error: ErrorInfo | None = None


_AGENT: ContextVar[AgentScope | None] = ContextVar("cadenza_agent", default=None)


@contextmanager
def agent_invocation(ctx: Context, name: str, model: str) -> Iterator[None]:
    """Around ``Agent.run``: operations inside belong to the agent, and its end, when it
    happens live, is reported to ``agent_ended``."""
    act = cast("Activation", ctx._runtime)  # the engine's contexts run on an Activation
    if not act.engine.instruments or act.check_only:
        yield
        return
    first = ctx._op_id(ctx._ops + 1)
    scope = AgentScope(name, first, ctx._parent, _AGENT.get())
    token = _AGENT.set(scope)
    error: ErrorInfo | None = None
    ended = False
    try:
        yield
        ended = True
    except Exception as exc:  # the agent failed; Suspend and the like are not ends
        error, ended = ErrorInfo.from_exception(exc), True
        raise
    finally:
        _AGENT.reset(token)
        record = act.journal.get(first)
        # An agent that ended in an earlier activation was reported then: replay is past
        # its end only when the operation after it is recorded too.
        if ended and record is not None and not ctx.is_replaying:
            info = AgentInfo(
                run_id=act.run.run_id,
                trace_id=act.run.trace_id,
                scope=scope,
                model=model,
                start_time=record.started_at or act.now(),
                end_time=act.now(),
                redrives=act.redrives,
                error=error,
            )
            act.engine.instruments._call("agent_ended", info)


class Instrumentation:
    """Override what you need; every hook does nothing by default.

    Register instances with ``Engine(..., instrumentation=[...])``,
    ``open_engine(instrumentation=...)`` or ``TestEnvironment(instrumentation=...)``. Hooks
    run on the event loop, synchronously, for live work only; keep them quick.
    """

    def invocation_started(self, info: InvocationInfo) -> None:
        """An activation begins (before it replays anything)."""

    def invocation_ended(self, info: InvocationInfo) -> None:
        """An activation ended: the run ended, suspended, or the activation was aborted."""

    def operation_started(self, info: OperationInfo) -> None:
        """An operation began live (a retried step reports this once, at attempt 1)."""

    def operation_ended(self, info: OperationInfo) -> None:
        """An operation reached its final outcome."""

    def attempt_started(self, info: AttemptInfo) -> None:
        """A step attempt (or condition check) is about to run the user's function."""

    def attempt_ended(self, info: AttemptInfo) -> None:
        """A step attempt ended; ``retry_follows`` says whether another is scheduled."""

    def agent_ended(self, info: AgentInfo) -> None:
        """An agent (``Agent.run``) ended live, with its answer or an error."""

    def attempt_scope(self, info: AttemptInfo) -> AbstractContextManager[object]:
        """Entered around the user's function of an attempt, in the task (and copied into
        the thread) that runs it: e.g. to make the attempt's span current."""
        return nullcontext()


@runtime_checkable
class QueueObserver(Protocol):
    """Wants the store's queue statistics (``RunStore.queue_stats``): a worker samples them
    every ``queue_sample_interval`` and hands each sample to ``queues_sampled`` (which,
    like a hook, runs on the event loop and must be quick)."""

    queue_sample_interval: timedelta

    def queues_sampled(self, stats: Sequence[QueueStats], now: datetime) -> None: ...


class Instruments:
    """The registered instrumentations, called safely. Falsy when there are none, so the
    engine pays one truth test per history event when nothing is registered."""

    def __init__(self, items: Iterable[Instrumentation] | Instrumentation | None) -> None:
        if items is None:
            items = ()
        elif isinstance(items, Instrumentation):
            items = (items,)
        self.items: tuple[Instrumentation, ...] = tuple(items)
        for item in self.items:
            if not isinstance(item, Instrumentation):
                from cadenza.errors import ConfigurationError

                raise ConfigurationError(
                    f"instrumentation must be cadenza.Instrumentation instances; got"
                    f" {type(item).__name__}: subclass Instrumentation and override its hooks"
                )
        self._reported: set[tuple[int, str]] = set()
        # Per hook, the bound hooks of the instrumentations that override it: a hook nobody
        # overrides costs no call, and the info it would be given is not even built.
        self._hooks: dict[str, _Hooks] = {
            hook: tuple(
                (item, getattr(item, hook)) for item in self.items if _overrides(item, hook)
            )
            for hook in _HOOKS
        }
        # The attempt a step just started: its scope is entered right after, with the same
        # info (one slot: steps running side by side only cost a rebuild).
        self._started: AttemptInfo | None = None

    def __bool__(self) -> bool:
        return bool(self.items)

    def queue_observers(self) -> list[QueueObserver]:
        """The registered instrumentations that observe queues, or whose ``metrics`` do
        (``OpenTelemetryInstrumentation`` keeps its instruments, queue gauges included,
        there). None registered: no worker samples anything."""
        found: list[QueueObserver] = []
        for item in self.items:
            for candidate in (item, getattr(item, "metrics", None)):
                if isinstance(candidate, QueueObserver):
                    found.append(candidate)
        return found

    def _call(self, hook: str, info: Any) -> None:
        self._run(self._hooks[hook], hook, info)

    def _run(
        self,
        hooks: _Hooks,
        hook: str,
        info: Any,
    ) -> None:
        for item, method in hooks:
            try:
                method(info)
            except Exception:
                self._failed(item, hook)

    def _failed(self, item: Instrumentation, hook: str) -> None:
        key = (id(item), hook)
        if key not in self._reported:  # once per hook: a broken exporter must not flood logs
            self._reported.add(key)
            log.exception(
                "instrumentation %s.%s raised; the run goes on and further errors of this"
                " hook are not logged",
                type(item).__name__,
                hook,
            )

    # --- activations ----------------------------------------------------------------------

    def invocation_started(self, act: Activation) -> InvocationInfo:
        run = act.run
        metadata = run.state.get("metadata", {}) if run.state else {}
        info = InvocationInfo(
            run_id=run.run_id,
            workflow=run.workflow,
            version=run.version,
            trace_id=run.trace_id,
            lease_epoch=run.lease_epoch,
            worker=run.lease_owner,
            invocation=act.invocation,
            start_time=act.now(),
            tenant=run.tenant,
            parent_run_id=run.parent_run_id,
            parent_op_id=run.parent_op_id,
            causation_id=metadata.get("causationId"),
            created_at=run.created_at,
        )
        self._call("invocation_started", info)
        return info

    def invocation_ended(
        self, act: Activation, info: InvocationInfo, result: ActivationResult
    ) -> None:
        outcome = "ABORTED" if result.status is None else str(result.status)
        ended = replace(
            info,
            end_time=act.now(),
            replayed=result.replayed,
            executed=result.executed,
            outcome=outcome,
            error=result.error,
        )
        self._call("invocation_ended", ended)

    # --- operations (from the history an activation writes) --------------------------------

    def noted(self, act: Activation, event: HistoryEvent, op: OpRecord) -> None:
        """Report what the live history event ``event`` about ``op`` says happened."""
        kind, at, details = event.type, event.timestamp, event.details
        hooks = self._hooks
        if kind == H.STEP_STARTED:
            started, attempts = hooks["operation_started"], hooks["attempt_started"]
            attempt = int(details.get("attempt") or op.attempt or 1)
            if attempt != 1:
                started = ()  # attempt 2 is not a new operation
            if started or attempts or hooks["attempt_scope"]:
                info = _operation_info(act, op, at, None, None, None, details)
                self._run(started, "operation_started", info)
                self._started = AttemptInfo(info, attempt, at)
                self._run(attempts, "attempt_started", self._started)
        elif kind in _STEP_ENDS:
            retry_at = details.get("next_attempt_at")
            failed = kind == H.STEP_FAILED
            error = op.error if failed else None
            if hooks["attempt_ended"]:
                ended = AttemptInfo(
                    _operation_info(act, op, at, at, None, None, details),
                    int(details.get("attempt") or op.attempt or 1),
                    at,
                    end_time=at,
                    error=error,
                    retry_follows=retry_at is not None,
                    next_attempt_at=retry_at,
                )
                self._run(hooks["attempt_ended"], "attempt_ended", ended)
            if retry_at is None and hooks["operation_ended"]:
                status = "FAILED" if failed else "SUCCEEDED"
                info = _operation_info(act, op, at, at, status, error, details)
                self._run(hooks["operation_ended"], "operation_ended", info)
        elif kind in _ENDS:
            if hooks["operation_ended"]:
                status = _ENDS[kind]
                error = op.error if status != "SUCCEEDED" else None
                info = _operation_info(act, op, at, at, status, error, details)
                self._run(hooks["operation_ended"], "operation_ended", info)
        elif kind in _STARTS:
            if hooks["operation_started"]:
                info = _operation_info(act, op, at, None, None, None, details)
                self._run(hooks["operation_started"], "operation_started", info)
        elif kind == H.EVENT_EMITTED and (hooks["operation_started"] or hooks["operation_ended"]):
            info = _operation_info(act, op, at, at, "SUCCEEDED", None, details)
            self._run(hooks["operation_started"], "operation_started", info)
            self._run(hooks["operation_ended"], "operation_ended", info)

    # --- attempts -------------------------------------------------------------------------

    def attempt_scope(self, act: Activation, op: OpRecord) -> AbstractContextManager[object]:
        hooks = self._hooks["attempt_scope"]
        if not hooks:
            return _NO_SCOPE
        info, self._started = self._started, None
        if info is None or info.operation.record is not op or info.attempt != op.attempt:
            now = act.now()
            info = AttemptInfo(_operation_info(act, op, now), op.attempt, now)
        return _Scopes(self, hooks, info)


_HOOKS = (
    "invocation_started",
    "invocation_ended",
    "operation_started",
    "operation_ended",
    "attempt_started",
    "attempt_ended",
    "agent_ended",
    "attempt_scope",
)
# nullcontext keeps no state: one instance serves every attempt that nobody scopes.
_NO_SCOPE: AbstractContextManager[object] = nullcontext()


def _overrides(item: Instrumentation, hook: str) -> bool:
    """Whether ``item`` does anything on ``hook``: the defaults of Instrumentation do not."""
    method = getattr(item, hook)
    return getattr(method, "__func__", method) is not getattr(Instrumentation, hook)


_STEP_ENDS = frozenset({H.STEP_SUCCEEDED, H.STEP_FAILED})


def _operation_info(
    act: Activation,
    op: OpRecord,
    now: datetime,
    end_time: datetime | None = None,
    status: str | None = None,
    error: ErrorInfo | None = None,
    details: dict[str, Any] | None = None,
) -> OperationInfo:
    """Operation ``op`` of the activation's run, as the instrumentations see it (started
    ``now`` when its record has no start yet)."""
    run = act.run
    # Positional, in field order: this runs two or three times per traced step.
    return OperationInfo(
        run.run_id,
        run.trace_id,
        op.op_id,
        op.parent_id,
        str(op.type),
        op.name,
        op.started_at or now,
        op,
        act.redrives,
        end_time,
        status,
        error,
        details if details is not None else {},
        _AGENT.get(),
    )


def attempt_scope(act: Activation, op: OpRecord) -> AbstractContextManager[object]:
    """The instrumentations' scopes around attempt ``op`` of a step (none: a no-op)."""
    instruments = act.engine.instruments
    return instruments.attempt_scope(act, op) if instruments else _NO_SCOPE


class _Scopes:
    """Enters every instrumentation's ``attempt_scope``; one that fails is skipped."""

    __slots__ = ("entered", "hooks", "info", "instruments")

    def __init__(
        self,
        instruments: Instruments,
        hooks: _Hooks,
        info: AttemptInfo,
    ) -> None:
        self.instruments = instruments
        self.hooks = hooks
        self.info = info
        self.entered: list[tuple[Instrumentation, AbstractContextManager[object]]] = []

    def __enter__(self) -> None:
        for item, attempt_scope in self.hooks:
            try:
                scope = attempt_scope(self.info)
                scope.__enter__()
            except Exception:
                self.instruments._failed(item, "attempt_scope")
                continue
            self.entered.append((item, scope))

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Literal[False]:
        for item, scope in reversed(self.entered):
            try:
                scope.__exit__(exc_type, exc, tb)
            except Exception:
                self.instruments._failed(item, "attempt_scope")
        return False  # never swallow what the user's function raised
