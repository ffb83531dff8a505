"""Recovery: one ladder for a failing step or agent, and the recovery workflow for the rest.

    policy = RecoveryPolicy(
        retry=RetryPolicy(max_attempts=3),
        fallbacks=[ask_the_local_model],          # same arguments as the action
        replan=find_another_way,                  # receives a RecoveryProblem
        escalate=ApprovalGate(notify=FileNotifier(), timeout=timedelta(hours=4)),
    )
    outcome = await recover(ctx, policy, ask_the_big_model, question, name="answer")

The rungs, in order: retry the action with backoff → each fallback → re-plan → compensate
(the saga passed as ``saga=``, or a compensating callable) → escalate to a person. The first
rung that produces a result ends the ladder. An action whose first parameter is annotated
``Context`` (an agent's ``run``, say) runs in a child context; any other callable runs as a
durable step. Every failure publishes an ``AgentError`` event (detail: run_id, workflow,
step, error_type, message, retryable, rung, final) as the reference architecture does.

When the ladder ends unrecovered without a person in it, the last ``AgentError`` says
``"final": true``, and :func:`recovery_rule` routes it (and an agent's own ``AgentError``)
to the ``cadenza.recovery`` workflow, the reference architecture's recovery state machine:
classify the error, then retry, re-plan, or ask a person.
"""

from __future__ import annotations

import inspect
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from cadenza.context import Context
from cadenza.errors import (
    ConfigurationError,
    OperationFailed,
    RunNotFound,
    RunStateError,
    StepFailed,
    WorkflowDefinitionError,
)
from cadenza.events.relay import validate_rule
from cadenza.history import HistoryEventType
from cadenza.operations import StepContext, WaitDecision, poll_until
from cadenza.patterns._classify import ErrorClass, RecoveryConfig, classify_error
from cadenza.patterns._notify import NotifierLike
from cadenza.patterns.approval import ApprovalGate, ApprovalOutcome
from cadenza.patterns.choreography import CORRELATION_KEY, correlation_id
from cadenza.patterns.saga import COMPENSATION_RETRY, Saga, SagaOutcome
from cadenza.ports.run_store import Rule, RunStatus
from cadenza.retry import NO_RETRY, RetryPolicy
from cadenza.workflow import WorkflowDefinition, workflow

if TYPE_CHECKING:
    from cadenza.client import Client

__all__ = [
    "ErrorClass",
    "RecoveryConfig",
    "RecoveryOutcome",
    "RecoveryPolicy",
    "RecoveryProblem",
    "classify_error",
    "handle_agent_error",
    "recover",
    "recovery_rule",
    "recovery_workflow",
]

RECOVERED = ("retry", "fallback", "replan")


@dataclass(frozen=True)
class RecoveryProblem:
    """What a re-plan, a compensation or a person is told about the failure."""

    name: str
    args: tuple[Any, ...]
    errors: list[dict[str, Any]]

    @property
    def last_error(self) -> dict[str, Any]:
        return self.errors[-1] if self.errors else {}


@dataclass(frozen=True)
class RecoveryPolicy:
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    fallbacks: Sequence[Callable[..., Any]] = ()
    fallback_retry: RetryPolicy = NO_RETRY
    replan: Callable[..., Any] | None = None  # (problem) or (ctx, problem) -> result
    compensate: bool | Callable[..., Any] = True  # True: abort the saga given to recover()
    escalate: ApprovalGate | NotifierLike | None = None
    emit_errors: bool = True

    def __post_init__(self) -> None:
        for what, fn in [*(("fallback", f) for f in self.fallbacks), ("replan", self.replan)]:
            if fn is not None and not callable(fn):
                raise WorkflowDefinitionError(f"RecoveryPolicy: {what} {fn!r} is not callable")
        if not isinstance(self.compensate, bool) and not callable(self.compensate):
            raise WorkflowDefinitionError(
                f"RecoveryPolicy.compensate must be True, False or a callable, got"
                f" {self.compensate!r}"
            )

    @property
    def gate(self) -> ApprovalGate | None:
        if self.escalate is None or isinstance(self.escalate, ApprovalGate):
            return self.escalate
        return ApprovalGate(notify=self.escalate, name="escalation")


@dataclass(frozen=True)
class RecoveryOutcome:
    """Where the ladder ended: retry, fallback, replan (recovered, ``result`` holds the
    value), compensated, escalated (a person decided) or exhausted (nothing left to try)."""

    rung: str
    result: Any = None
    attempts: int = 0  # actions tried; the first rung counts once, however often it retried
    errors: list[dict[str, Any]] = field(default_factory=list)
    saga: SagaOutcome | None = None
    approval: ApprovalOutcome | None = None

    @property
    def recovered(self) -> bool:
        if self.rung == "escalated":
            return self.approval is not None and self.approval.approved
        return self.rung in RECOVERED

    def unwrap(self) -> Any:
        """The result, or StepFailed describing why there is none."""
        if self.recovered:
            return self.result
        last = self.errors[-1] if self.errors else {}
        raise StepFailed(
            f"not recovered (ended at {self.rung} after {self.attempts} attempts): "
            f"{last.get('error_type', 'error')}: {last.get('message', '')}",
            error_type=str(last.get("error_type") or "RecoveryExhausted"),
            details={"rung": self.rung, "errors": self.errors},
        )


async def recover(
    ctx: Context,
    policy: RecoveryPolicy,
    action: Callable[..., Any],
    *args: Any,
    name: str | None = None,
    saga: Saga | None = None,
) -> RecoveryOutcome:
    """Run ``action(*args)`` and climb ``policy``'s ladder until something works."""
    label = name or str(getattr(action, "__name__", "action"))
    ladder = _Ladder(ctx, policy, label, args)
    try:
        value = await _run(ctx, action, args, name=label, retry=policy.retry)
        return ladder.done("retry", value)
    except OperationFailed as exc:
        await ladder.failed("retry", exc)
    for index, fallback in enumerate(policy.fallbacks, start=1):
        step = f"{label}:fallback{index}"
        try:
            value = await _run(ctx, fallback, args, name=step, retry=policy.fallback_retry)
            return ladder.done("fallback", value)
        except OperationFailed as exc:
            await ladder.failed("fallback", exc, step)
    if policy.replan is not None:
        step = f"{label}:replan"
        try:
            value = await _run(ctx, policy.replan, (ladder.problem(),), name=step, retry=NO_RETRY)
            return ladder.done("replan", value)
        except OperationFailed as exc:
            await ladder.failed("replan", exc, step)
    return await ladder.give_up(saga)


class _Ladder:
    def __init__(
        self, ctx: Context, policy: RecoveryPolicy, name: str, args: tuple[Any, ...]
    ) -> None:
        self.ctx = ctx
        self.policy = policy
        self.name = name
        self.args = args
        self.errors: list[dict[str, Any]] = []
        self.attempts = 0

    def problem(self) -> RecoveryProblem:
        return RecoveryProblem(self.name, self.args, list(self.errors))

    def done(self, rung: str, value: Any, **extra: Any) -> RecoveryOutcome:
        return RecoveryOutcome(rung, value, self.attempts + 1, list(self.errors), **extra)

    async def failed(self, rung: str, exc: OperationFailed, step: str | None = None) -> None:
        self.attempts += 1
        error = {
            "rung": rung,
            "step": step or self.name,
            "error_type": exc.error_type,
            "message": exc.message,
            "retryable": exc.retryable,
        }
        self.errors.append(error)
        await self.emit(error, final=False)

    async def emit(self, error: dict[str, Any], *, final: bool) -> None:
        if not self.policy.emit_errors:
            return
        detail = {
            "run_id": self.ctx.run_id,
            "workflow": self.ctx.workflow.name,
            **error,
            "final": final,
            CORRELATION_KEY: await correlation_id(self.ctx),
        }
        await self.ctx.emit("AgentError", detail, source="cadenza.recovery")

    async def give_up(self, saga: Saga | None) -> RecoveryOutcome:
        ctx, policy = self.ctx, self.policy
        saga_outcome: SagaOutcome | None = None
        compensated = False
        if callable(policy.compensate):
            step = f"{self.name}:compensate"
            try:
                await _run(
                    ctx, policy.compensate, (self.problem(),), name=step, retry=COMPENSATION_RETRY
                )
                compensated = True
            except OperationFailed as exc:
                await self.failed("compensate", exc, step)
        elif policy.compensate and saga is not None:
            last = self.errors[-1]
            saga_outcome = await saga.abort(f"{last['error_type']}: {last['message']}")
            compensated = True
        gate = policy.gate
        if gate is not None:
            approval = await gate.request(
                ctx,
                f"{self.name} failed and could not be recovered automatically",
                {
                    "run_id": ctx.run_id,
                    "workflow": ctx.workflow.name,
                    "step": self.name,
                    "errors": self.errors,
                    "compensated": compensated,
                },
                name=f"{self.name}:escalation",
            )
            result = (approval.answer or {}).get("result") if approval.approved else None
            return RecoveryOutcome(
                "escalated", result, self.attempts, list(self.errors), saga_outcome, approval
            )
        rung = "compensated" if compensated else "exhausted"
        await self.emit({**self.errors[-1], "rung": rung}, final=True)
        return RecoveryOutcome(rung, None, self.attempts, list(self.errors), saga_outcome)


async def _run(
    ctx: Context,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    *,
    name: str,
    retry: RetryPolicy,
) -> Any:
    """A step, or, for ``fn(ctx: Context, …)``, a child context retried with durable backoff."""
    if not _takes_context(fn):
        return await ctx.step(fn, *args, name=name, retry=retry)
    attempt = 0
    while True:
        attempt += 1
        label = name if attempt == 1 else f"{name}#{attempt}"
        try:
            return await ctx.run_in_child_context(fn, *args, name=label)
        except OperationFailed as exc:
            if not retry.should_retry(exc, attempt):
                raise
            delay = retry.delay(attempt, random.Random(ctx.random()))
            await ctx.wait(delay, name=f"{name}:backoff{attempt}")


def _takes_context(fn: Callable[..., Any]) -> bool:
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return False
    return bool(params) and params[0].annotation in (Context, "Context")


# --- the recovery workflow ---------------------------------------------------------------


async def handle_agent_error(
    ctx: Context, event: dict[str, Any], config: RecoveryConfig | None = None
) -> dict[str, Any]:
    """The recovery state machine for one ``AgentError`` event (or its detail):
    classify → retry | re-plan | ask a person. Returns what it did."""
    config = config or RecoveryConfig()
    detail: dict[str, Any] = event.get("detail", event) if "detail-type" in event else event
    kind = classify_error(detail, config)
    attempt = int(detail.get("recovery_attempt") or 0)
    failed_run = detail.get("run_id")
    ctx.state.goal = f"recover from {detail.get('error_type')} in run {failed_run}"
    ctx.state.context["results"]["classification"] = str(kind)
    report: dict[str, Any] = {"classification": str(kind), "failed_run": failed_run}
    if kind == ErrorClass.TRANSIENT and attempt >= config.max_retries:
        report["reason"] = f"still failing after {attempt} retries"
        kind = ErrorClass.UNKNOWN
    if kind == ErrorClass.TRANSIENT:
        return {**report, **await _request_retry(ctx, detail, attempt, config)}
    if kind == ErrorClass.REPLANNABLE:
        request = {**detail, "recovery_run_id": ctx.run_id}
        await ctx.emit("RecoveryReplanRequested", request, source="cadenza.recovery")
        return {**report, "action": "replan"}
    notifier = config.notify if kind == ErrorClass.PERMANENT else config.escalate_to
    gate = ApprovalGate(notify=notifier or config.notify, timeout=config.timeout, name="human")
    approval = await gate.request(
        ctx,
        f"{detail.get('error_type')} in run {failed_run} ({kind}): approve to retry,"
        " reject to abandon",
        detail,
    )
    report["decision"] = str(approval.decision)
    if approval.approved:
        return {**report, **await _request_retry(ctx, detail, attempt, config)}
    action = "expired" if approval.decision == "EXPIRED" else "abandoned"
    return {**report, "action": action}


async def _request_retry(
    ctx: Context, detail: dict[str, Any], attempt: int, config: RecoveryConfig
) -> dict[str, Any]:
    request = {**detail, "recovery_attempt": attempt + 1, "recovery_run_id": ctx.run_id}
    if config.retry_workflow is None:
        retried = await _retry_failed_run(ctx, detail.get("run_id"), config)
        request.update(retried)
        event_id = await ctx.emit("RecoveryRetryRequested", request, source="cadenza.recovery")
        return {"action": "retry", "event_id": event_id, **retried}
    try:
        result = await ctx.invoke(config.retry_workflow, request, name="retry")
    except OperationFailed as exc:
        return {"action": "retry", "retried": False, "error": f"{exc.error_type}: {exc.message}"}
    return {"action": "retry", "retried": True, "result": result}


async def _retry_failed_run(ctx: Context, run_id: Any, config: RecoveryConfig) -> dict[str, Any]:
    """Retry the run that raised the error, once it has really ended.

    The agent that publishes an ``AgentError`` usually fails its run right after, and a
    run may only be retried once it has ended: wait for that durably, then retry it in a
    step. Retrying is idempotent: a run that is no longer FAILED or CANCELLED (it
    succeeded after all, or someone retried it already) is left alone.
    """
    if not isinstance(run_id, str) or not run_id:
        return {"retried": False, "reason": "the error names no run"}

    async def run_status(step: StepContext, state: dict[str, Any]) -> dict[str, Any]:
        try:
            run = await _client(step).get_handle(run_id).describe()
        except RunNotFound:
            return {"status": "NOT_FOUND"}
        return {"status": str(run.status)}

    def ended(state: dict[str, Any]) -> bool:
        return state.get("status") in _ENDED

    final = await ctx.wait_for_condition(
        run_status,
        {"status": None},
        wait_strategy=_until_ended(ended),
        name="await-failed-run",
    )
    if final.get("status") not in ("FAILED", "CANCELLED"):
        return {"retried": False, "run_status": final.get("status")}

    async def retry_run(step: StepContext) -> dict[str, Any]:
        handle = _client(step).get_handle(run_id)
        run = await handle.describe()
        if run.status not in (RunStatus.FAILED, RunStatus.CANCELLED):
            return {"retried": False, "run_status": str(run.status)}
        history = await handle.history()
        redrives = sum(1 for e in history if e.type == HistoryEventType.EXECUTION_REDRIVEN)
        if redrives >= config.max_retries:
            return {
                "retried": False,
                "run_status": str(run.status),
                "reason": f"run {run_id} was retried {redrives} times already",
            }
        try:
            await handle.retry(by=f"recovery run {ctx.run_id}")
        except RunStateError as exc:  # someone else retried it meanwhile
            return {"retried": False, "run_status": str(run.status), "reason": str(exc)}
        return {"retried": True, "run_status": str(await handle.status())}

    result: dict[str, Any] = await ctx.step(retry_run, name="retry-failed-run")
    return result


_ENDED = ("SUCCEEDED", "FAILED", "CANCELLED", "NOT_FOUND")


def _client(step: StepContext) -> Client:
    if step.client is None:  # a StepContext made by hand, outside an engine
        raise ConfigurationError(
            f"step '{step.name}' of run {step.run_id} needs StepContext.client to read and"
            " retry other runs; run the recovery workflow on a cadenza engine"
        )
    return step.client


def _until_ended(done: Any) -> Any:
    """Check at once, then back off from 1 s to 5 min; stop waiting after about a day."""
    strategy = poll_until(
        done, every=timedelta(seconds=1), backoff_rate=2.0, max_interval=timedelta(minutes=5)
    )

    def decide(state: Any, attempt: int) -> WaitDecision:
        if attempt >= 300:  # a run that has not ended after a day is not ours to retry
            return WaitDecision.stop()
        return strategy(state, attempt)

    return decide


@workflow(name="cadenza.recovery")
async def recovery_workflow(ctx: Context, event: dict[str, Any]) -> dict[str, Any]:
    """Classify an AgentError and retry, re-plan or ask a person (the default config)."""
    return await handle_agent_error(ctx, event)


def recovery_rule(
    name: str = "agent-errors",
    *,
    workflow: WorkflowDefinition | str = recovery_workflow,
    module: str | None = None,
) -> Rule:
    """A rule starting ``workflow`` (default ``cadenza.recovery``) for every final
    ``AgentError``: an agent's, or a ladder's that ran out without a person."""
    params: dict[str, Any] = {"input": "event"}
    if isinstance(workflow, WorkflowDefinition):
        params["workflow"] = workflow.name
        module = module or workflow.module
    else:
        params["workflow"] = workflow
    if module:
        params["module"] = module
    rule = Rule(
        name,
        {"detail-type": ["AgentError"], "detail": {"final": [True, {"exists": False}]}},
        "start_workflow",
        params,
    )
    validate_rule(rule)
    return rule
