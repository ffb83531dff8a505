"""Saga: steps declared with the action that undoes them, compensated in reverse on failure.

    async with Saga(ctx, name="trip") as saga:
        flight = await saga.step(reserve_flight, trip, compensate=cancel)
        hotel = await saga.step(reserve_hotel, trip, compensate=cancel)
    if saga.outcome.status is SagaStatus.COMMITTED: ...

or, declared once and run with an input::

    TRIP = SagaDefinition([SagaStep(reserve_flight, cancel), SagaStep(reserve_hotel, cancel)])
    outcome = await run_saga(ctx, TRIP, trip)

A compensation receives the result of the step it undoes. Each one is a durable step with
its own retry policy, so a replay never compensates twice. When the saga block raises,
every completed step is compensated, latest first, and the block ends with an explicit
:class:`SagaOutcome` instead of the exception. A compensation that still fails after its
retries leaves the saga COMPENSATION_FAILED: the remaining compensations still run, a
``SagaCompensationFailed`` event is published, and, with ``escalate``, a person is asked
(through an :class:`~cadenza.patterns.approval.ApprovalGate`) to put things right.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from types import TracebackType
from typing import Any

from cadenza.context import Context
from cadenza.errors import ErrorInfo, OperationFailed, WorkflowDefinitionError
from cadenza.patterns._notify import NotifierLike
from cadenza.patterns.approval import ApprovalGate, ApprovalOutcome
from cadenza.retry import RetryPolicy

__all__ = ["Saga", "SagaDefinition", "SagaOutcome", "SagaStatus", "SagaStep", "run_saga"]

#: Compensations are tried patiently: leaving half a transaction behind is worse than waiting.
COMPENSATION_RETRY = RetryPolicy(
    max_attempts=5, initial_interval=timedelta(seconds=1), max_interval=timedelta(minutes=1)
)


class SagaStatus(StrEnum):
    COMMITTED = "COMMITTED"  # every step succeeded
    COMPENSATED = "COMPENSATED"  # a step failed; everything done before it was undone
    COMPENSATION_FAILED = "COMPENSATION_FAILED"  # some work could not be undone: escalated


@dataclass(frozen=True)
class SagaOutcome:
    status: SagaStatus
    completed: list[str] = field(default_factory=list)  # steps that succeeded, in order
    compensated: list[str] = field(default_factory=list)  # steps undone, in the order undone
    failed_compensations: dict[str, ErrorInfo] = field(default_factory=dict)
    error: ErrorInfo | None = None  # what made the saga compensate
    results: dict[str, Any] = field(default_factory=dict)  # step name -> its result
    escalation: ApprovalOutcome | None = None

    @property
    def committed(self) -> bool:
        return self.status == SagaStatus.COMMITTED


@dataclass(frozen=True)
class SagaStep:
    """One step of a :class:`SagaDefinition`: ``action(input)``, undone by
    ``compensate(result)``."""

    action: Callable[..., Any]
    compensate: Callable[..., Any] | None = None
    name: str | None = None
    retry: RetryPolicy | None = None
    compensation_retry: RetryPolicy | None = None

    def __post_init__(self) -> None:
        _check_callables(self.action, self.compensate, self.name)

    @property
    def label(self) -> str:
        return self.name or _name_of(self.action)


@dataclass(frozen=True)
class SagaDefinition:
    steps: Sequence[SagaStep]
    name: str = "saga"
    compensation_retry: RetryPolicy | None = None
    escalate: ApprovalGate | NotifierLike | None = None

    def __post_init__(self) -> None:
        if not self.steps:
            raise WorkflowDefinitionError(f"saga {self.name!r} has no steps")
        labels = [s.label for s in self.steps]
        duplicates = sorted({n for n in labels if labels.count(n) > 1})
        if duplicates:
            raise WorkflowDefinitionError(
                f"saga {self.name!r}: step names must be unique, {', '.join(duplicates)}"
                " repeat; give the steps name=…"
            )


@dataclass
class _Done:
    name: str
    result: Any
    compensate: Callable[..., Any] | None
    retry: RetryPolicy | None


class Saga:
    """A saga in progress within one workflow run. Replay rebuilds it, step by step."""

    def __init__(
        self,
        ctx: Context,
        *,
        name: str = "saga",
        compensation_retry: RetryPolicy | None = None,
        escalate: ApprovalGate | NotifierLike | None = None,
        emit_events: bool = True,
    ) -> None:
        self.ctx = ctx
        self.name = name
        self.compensation_retry = compensation_retry or COMPENSATION_RETRY
        self.escalate = _gate(escalate)
        self.emit_events = emit_events
        self._done: list[_Done] = []
        self._outcome: SagaOutcome | None = None

    @property
    def outcome(self) -> SagaOutcome:
        if self._outcome is None:
            raise RuntimeError(
                f"saga {self.name!r} has not ended: use 'async with Saga(...)', or call"
                " commit() or abort()"
            )
        return self._outcome

    @property
    def completed(self) -> list[str]:
        return [d.name for d in self._done]

    async def step(
        self,
        action: Callable[..., Any],
        *args: Any,
        compensate: Callable[..., Any] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        compensation_retry: RetryPolicy | None = None,
    ) -> Any:
        """Run ``action(*args)`` as a durable step; on success, remember how to undo it."""
        _check_callables(action, compensate, name)
        if self._outcome is not None:
            raise WorkflowDefinitionError(f"saga {self.name!r} has ended; start a new one")
        label = name or _name_of(action)
        taken = {d.name for d in self._done}
        if label in taken:  # repeated steps (a loop) get distinct names: book, book#2, …
            label = next(
                f"{label}#{n}" for n in range(2, len(taken) + 3) if f"{label}#{n}" not in taken
            )
        result = await self.ctx.step(action, *args, name=label, retry=retry)
        self._done.append(_Done(label, result, compensate, compensation_retry))
        return result

    def commit(self) -> SagaOutcome:
        """End the saga: all its steps stand."""
        self._outcome = SagaOutcome(
            SagaStatus.COMMITTED, self.completed, results={d.name: d.result for d in self._done}
        )
        return self._outcome

    async def abort(self, error: BaseException | str) -> SagaOutcome:
        """Undo every completed step, latest first, and end the saga."""
        if isinstance(error, BaseException):
            info = ErrorInfo.from_exception(error)
            info = ErrorInfo(info.type, info.message, info.retryable, info.details)
        else:
            info = ErrorInfo("SagaAborted", error)
        compensated: list[str] = []
        failed: dict[str, ErrorInfo] = {}
        for done in reversed(self._done):
            if done.compensate is None:
                continue
            try:
                await self.ctx.step(
                    done.compensate,
                    done.result,
                    name=f"compensate:{done.name}",
                    retry=done.retry or self.compensation_retry,
                )
            except OperationFailed as exc:  # keep undoing the rest; report this one
                failed[done.name] = ErrorInfo(exc.error_type, exc.message, exc.retryable)
            else:
                compensated.append(done.name)
        results = {d.name: d.result for d in self._done}
        if not failed:
            self._outcome = SagaOutcome(
                SagaStatus.COMPENSATED, self.completed, compensated, error=info, results=results
            )
            return self._outcome
        escalation = await self._escalate(compensated, failed, info)
        self._outcome = SagaOutcome(
            SagaStatus.COMPENSATION_FAILED,
            self.completed,
            compensated,
            failed,
            info,
            results,
            escalation,
        )
        return self._outcome

    async def _escalate(
        self, compensated: list[str], failed: dict[str, ErrorInfo], error: ErrorInfo
    ) -> ApprovalOutcome | None:
        detail = {
            "saga": self.name,
            "run_id": self.ctx.run_id,
            "workflow": self.ctx.workflow.name,
            "completed": self.completed,
            "compensated": compensated,
            "failed": {k: {"type": v.type, "message": v.message} for k, v in failed.items()},
            "error": {"type": error.type, "message": error.message},
        }
        if self.emit_events:
            await self.ctx.emit("SagaCompensationFailed", detail, source="cadenza.saga")
        if self.escalate is None:
            return None
        return await self.escalate.request(
            self.ctx,
            f"saga {self.name!r} could not undo {', '.join(failed)}: put it right by hand,"
            " then approve",
            detail,
            name=f"{self.name}:escalation",
        )

    async def __aenter__(self) -> Saga:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        if exc is None:
            if self._outcome is None:
                self.commit()
            return False
        if not isinstance(exc, Exception):  # suspension, cancellation: not a saga failure
            return False
        if self._outcome is not None and self._outcome.status != SagaStatus.COMMITTED:
            return False  # already aborted by hand: let the error through
        await self.abort(exc)
        return True


async def run_saga(
    ctx: Context, definition: SagaDefinition, input: Any = None, *, name: str | None = None
) -> SagaOutcome:
    """Run every step of ``definition`` with ``input``; compensate if one fails."""
    saga = Saga(
        ctx,
        name=name or definition.name,
        compensation_retry=definition.compensation_retry,
        escalate=definition.escalate,
    )
    async with saga:
        for step in definition.steps:
            await saga.step(
                step.action,
                input,
                compensate=step.compensate,
                name=step.label,
                retry=step.retry,
                compensation_retry=step.compensation_retry,
            )
    return saga.outcome


def _gate(escalate: ApprovalGate | NotifierLike | None) -> ApprovalGate | None:
    if escalate is None or isinstance(escalate, ApprovalGate):
        return escalate
    return ApprovalGate(notify=escalate)


def _check_callables(
    action: Callable[..., Any], compensate: Callable[..., Any] | None, name: str | None
) -> None:
    label = name or getattr(action, "__name__", repr(action))
    if not callable(action):
        raise WorkflowDefinitionError(f"saga step {label!r}: the action {action!r} is not callable")
    if compensate is not None and not callable(compensate):
        raise WorkflowDefinitionError(
            f"saga step {label!r}: compensate must be callable (it receives the step's result),"
            f" got {compensate!r}"
        )


def _name_of(fn: Callable[..., Any]) -> str:
    while isinstance(fn, functools.partial):
        fn = fn.func
    name = getattr(fn, "__name__", None) or type(fn).__name__
    return "lambda" if name == "<lambda>" else name
