"""Recovery ladder (retry → fallback → re-plan → compensate → escalate), its AgentError
events, the recovery workflow a rule starts on them, and replay that repeats nothing."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any

import pytest

from cadenza import Context, RetryPolicy, RunStatus, workflow
from cadenza.agents import Agent
from cadenza.errors import StepFailed
from cadenza.events.relay import relay_outbox
from cadenza.patterns._notify import Notification
from cadenza.patterns.approval import ApprovalGate
from cadenza.patterns.recovery import (
    ErrorClass,
    RecoveryConfig,
    RecoveryOutcome,
    RecoveryPolicy,
    RecoveryProblem,
    classify_error,
    handle_agent_error,
    recover,
    recovery_rule,
    recovery_workflow,
)
from cadenza.patterns.saga import Saga
from cadenza.testing import TestEnvironment
from cadenza.testing.scripted_model import ScriptedModel

calls: Counter[str] = Counter()
people: list[Notification] = []
FAST = RetryPolicy(max_attempts=3, initial_interval=timedelta(0), jitter=0)


@pytest.fixture(autouse=True)
def _clean() -> None:
    calls.clear()
    people.clear()


def tell(notification: Notification) -> None:
    people.append(notification)


async def primary(question: str) -> str:
    calls["primary"] += 1
    raise ConnectionError("the big model is down")


async def cheap(question: str) -> str:
    calls["cheap"] += 1
    raise ValueError("the cheap model made no sense")


async def local(question: str) -> str:
    calls["local"] += 1
    return f"local answer to {question}"


async def replan(problem: RecoveryProblem) -> str:
    calls["replan"] += 1
    tried = ", ".join(e["step"] for e in problem.errors)
    return f"another way for {problem.args[0]} (after {tried})"


async def agent_errors(env: TestEnvironment) -> list[dict[str, Any]]:
    return [
        e.event["detail"]
        for e in reversed(await env.engine.store.list_events(limit=500))
        if e.event["detail-type"] == "AgentError"
    ]


@workflow(name="t-recover-fallback")
async def with_fallbacks(ctx: Context, question: str) -> RecoveryOutcome:
    policy = RecoveryPolicy(retry=FAST, fallbacks=[cheap, local])
    return await recover(ctx, policy, primary, question, name="answer")


async def test_the_ladder_retries_then_falls_back_in_order(env: TestEnvironment) -> None:
    run = await env.run(with_fallbacks, "why")
    outcome: RecoveryOutcome = await env.result(run, RecoveryOutcome)
    assert outcome.rung == "fallback" and outcome.recovered
    assert outcome.result == "local answer to why" and outcome.attempts == 3
    assert calls == {"primary": 3, "cheap": 1, "local": 1}
    assert [(e["rung"], e["step"], e["error_type"]) for e in outcome.errors] == [
        ("retry", "answer", "ConnectionError"),
        ("fallback", "answer:fallback1", "ValueError"),
    ]
    events = await agent_errors(env)
    assert [(e["rung"], e["final"]) for e in events] == [("retry", False), ("fallback", False)]
    assert events[0]["run_id"] == run.run_id and events[0]["workflow"] == "t-recover-fallback"
    assert events[0]["message"] == "the big model is down" and events[0]["retryable"]
    assert events[0]["correlation_id"] == run.trace_id


@workflow(name="t-recover-first-try")
async def first_try(ctx: Context, question: str) -> RecoveryOutcome:
    return await recover(ctx, RecoveryPolicy(retry=FAST, fallbacks=[cheap]), local, question)


async def test_a_working_action_needs_no_ladder(env: TestEnvironment) -> None:
    outcome: RecoveryOutcome = await env.result(await env.run(first_try, "q"), RecoveryOutcome)
    assert (outcome.rung, outcome.attempts, outcome.errors) == ("retry", 1, [])
    assert calls == {"local": 1} and await agent_errors(env) == []


@workflow(name="t-recover-replan")
async def replanned(ctx: Context, question: str) -> RecoveryOutcome:
    policy = RecoveryPolicy(retry=FAST, fallbacks=[cheap], replan=replan)
    return await recover(ctx, policy, primary, question, name="answer")


async def test_replan_gets_the_failures_so_far(env: TestEnvironment) -> None:
    outcome: RecoveryOutcome = await env.result(await env.run(replanned, "q"), RecoveryOutcome)
    assert outcome.rung == "replan" and outcome.attempts == 3
    assert outcome.result == "another way for q (after answer, answer:fallback1)"
    assert calls == {"primary": 3, "cheap": 1, "replan": 1}


async def book(item: str) -> str:
    calls[f"book {item}"] += 1
    return item


async def unbook(item: str) -> None:
    calls[f"unbook {item}"] += 1


@workflow(name="t-recover-compensate")
async def compensating(ctx: Context, question: str) -> RecoveryOutcome:
    saga = Saga(ctx, name="trip")
    await saga.step(book, "flight", compensate=unbook, name="flight")
    await saga.step(book, "hotel", compensate=unbook, name="hotel")
    policy = RecoveryPolicy(retry=FAST, fallbacks=[cheap])
    return await recover(ctx, policy, primary, question, name="answer", saga=saga)


async def test_with_nothing_left_the_saga_is_compensated_and_the_error_handed_on(
    env: TestEnvironment,
) -> None:
    outcome: RecoveryOutcome = await env.result(await env.run(compensating, "q"), RecoveryOutcome)
    assert outcome.rung == "compensated" and not outcome.recovered
    assert outcome.saga is not None and outcome.saga.compensated == ["hotel", "flight"]
    assert calls["unbook flight"] == 1 and calls["unbook hotel"] == 1
    assert [(e["rung"], e["final"]) for e in await agent_errors(env)] == [
        ("retry", False),
        ("fallback", False),
        ("compensated", True),  # the one the recovery rule picks up
    ]
    with pytest.raises(StepFailed, match="ended at compensated"):
        outcome.unwrap()


@workflow(name="t-recover-escalate")
async def escalating(ctx: Context, question: str) -> RecoveryOutcome:
    policy = RecoveryPolicy(
        retry=FAST,
        fallbacks=[cheap],
        compensate=unbook_everything,
        escalate=ApprovalGate(notify=tell, timeout=timedelta(hours=2)),
    )
    outcome = await recover(ctx, policy, primary, question, name="answer")
    await ctx.wait(timedelta(minutes=1), name="after")  # one more replay of the whole ladder
    return outcome


async def unbook_everything(problem: RecoveryProblem) -> None:
    calls["compensate"] += 1


async def test_escalation_asks_a_person_and_replay_repeats_nothing(
    fake_env: TestEnvironment,
) -> None:
    run = await fake_env.run(escalating, "q")
    assert run.status == RunStatus.SUSPENDED
    [note] = people
    assert note.body["step"] == "answer" and note.body["compensated"] is True
    assert [e["step"] for e in note.body["errors"]] == ["answer", "answer:fallback1"]
    await fake_env.succeed(note.token or "", {"decision": "approve", "result": "42, by hand"})
    run = await fake_env.resume(run)
    assert run.status == RunStatus.SUSPENDED
    await fake_env.advance(timedelta(minutes=1))
    outcome: RecoveryOutcome = await fake_env.result(await fake_env.resume(run), RecoveryOutcome)
    assert outcome.rung == "escalated" and outcome.recovered
    assert outcome.unwrap() == "42, by hand"
    # three activations, yet every action, notification and event happened once
    assert calls == {"primary": 3, "cheap": 1, "compensate": 1}
    assert len(people) == 1
    assert [e["final"] for e in await agent_errors(fake_env)] == [False, False]


async def test_a_person_who_rejects_leaves_it_unrecovered(fake_env: TestEnvironment) -> None:
    run = await fake_env.run(escalating, "q")
    await fake_env.fail(people[0].token or "", "Rejected", "not worth it")
    assert (await fake_env.resume(run)).status == RunStatus.SUSPENDED  # the final wait
    await fake_env.advance(timedelta(minutes=1))
    outcome: RecoveryOutcome = await fake_env.result(await fake_env.resume(run), RecoveryOutcome)
    assert outcome.rung == "escalated" and not outcome.recovered and outcome.result is None


SILENT = ScriptedModel(name="scripted:silent")


@workflow(name="t-recover-agent")
async def agent_first(ctx: Context, retry_agents: bool) -> RecoveryOutcome:
    researcher = Agent("researcher", "Answer.", model=SILENT, max_turns=1)
    retry = RetryPolicy(
        max_attempts=2,
        initial_interval=timedelta(0),
        retryable_errors=["AgentError"] if retry_agents else [],
    )
    policy = RecoveryPolicy(retry=retry, fallbacks=[local])
    return await recover(ctx, policy, researcher.run, "q", name="research")


@pytest.mark.parametrize("retry_agents", [False, True])
async def test_an_agent_runs_in_a_child_context_retried_only_when_asked(
    env: TestEnvironment, retry_agents: bool
) -> None:
    SILENT.requests.clear()
    SILENT.reply(*[""] * (2 if retry_agents else 1))  # empty replies: the agent gives up
    outcome: RecoveryOutcome = await env.result(
        await env.run(agent_first, retry_agents), RecoveryOutcome
    )
    assert outcome.rung == "fallback" and outcome.result == "local answer to q"
    assert len(SILENT.requests) == (2 if retry_agents else 1)  # AgentError: opt-in retry
    assert outcome.errors[0]["error_type"] == "AgentError"
    sources = [(e.get("agent"), e.get("rung")) for e in await agent_errors(env)]
    gave_up = [("researcher", None)] * (2 if retry_agents else 1)
    assert sources == [*gave_up, (None, "retry")]  # the agent's own events, then the ladder's


def test_classification_is_explicit() -> None:
    assert classify_error({"error_type": "ModelThrottled"}) == ErrorClass.TRANSIENT
    assert classify_error({"error_type": "ValueError", "retryable": True}) == ErrorClass.TRANSIENT
    assert classify_error({"error_type": "StructuredOutputError"}) == ErrorClass.REPLANNABLE
    assert classify_error({"error_type": "MaxTurns"}) == ErrorClass.REPLANNABLE
    assert (
        classify_error({"error_type": "BudgetExceeded", "retryable": True}) == ErrorClass.PERMANENT
    )
    assert classify_error({"error_type": "KeyError"}) == ErrorClass.UNKNOWN
    assert classify_error({}) == ErrorClass.UNKNOWN
    custom = RecoveryConfig(permanent=frozenset({"KeyError"}))
    assert classify_error({"error_type": "KeyError"}, custom) == ErrorClass.PERMANENT


def test_the_rule_routes_final_and_agent_errors_only() -> None:
    from cadenza.events.patterns import compile_pattern

    rule = recovery_rule()
    assert rule.name == "agent-errors" and rule.target == "start_workflow"
    assert rule.params == {
        "workflow": "cadenza.recovery",
        "module": "cadenza.patterns.recovery:recovery_workflow",
        "input": "event",
    }
    pattern = compile_pattern(rule.pattern)

    def event(detail: dict[str, Any], kind: str = "AgentError") -> dict[str, Any]:
        return {"detail-type": kind, "source": "x", "detail": detail}

    assert pattern.matches(event({"agent": "a", "error_type": "MaxTurns"}))
    assert pattern.matches(event({"final": True}))
    assert not pattern.matches(event({"final": False}))
    assert not pattern.matches(event({"final": True}, "StepFailed"))


@workflow(name="t-recover-exhausted")
async def exhausted(ctx: Context, question: str) -> str:
    outcome = await recover(ctx, RecoveryPolicy(retry=FAST), primary, question, name="answer")
    return outcome.rung


async def test_a_rule_starts_the_recovery_workflow_which_requests_a_retry(
    env: TestEnvironment,
) -> None:
    await env.engine.store.put_rule(recovery_rule())
    run = await env.run(exhausted, "q")
    assert await env.result(run) == "exhausted"
    await relay_outbox(env.engine)  # delivers the final AgentError (if the worker did not)
    [recovery] = await env.engine.store.list_runs(workflow="cadenza.recovery")
    report = await env.result(await env.resume(recovery))
    assert report["classification"] == "transient" and report["action"] == "retry"
    assert report["failed_run"] == run.run_id
    [requested] = [
        e.event
        for e in await env.engine.store.list_events(limit=500)
        if e.event["detail-type"] == "RecoveryRetryRequested"
    ]
    assert requested["detail"]["recovery_attempt"] == 1
    assert requested["detail"]["step"] == "answer" and requested["trace_id"] == run.trace_id
    assert len(await env.engine.store.list_runs(workflow="cadenza.recovery")) == 1


def failure(error_type: str, **more: Any) -> dict[str, Any]:
    return {
        "detail-type": "AgentError",
        "source": "cadenza.agents",
        "detail": {"error_type": error_type, "run_id": "r-failed", "step": "s", **more},
    }


async def test_permanent_errors_ask_a_person_who_can_approve_a_retry(
    env: TestEnvironment,
) -> None:
    run = await env.run(recovery_workflow, failure("BudgetExceeded"))
    assert run.status == RunStatus.SUSPENDED
    await env.succeed(await env.token(run), {"decision": "approve"})
    report = await env.result(await env.resume(run))
    assert report["classification"] == "permanent" and report["decision"] == "APPROVED"
    assert report["action"] == "retry"
    assert run.state["context"]["results"]["classification"] == "permanent"

    run = await env.run(recovery_workflow, failure("BudgetExceeded"))
    await env.succeed(await env.token(run), {"decision": "reject"})
    assert (await env.result(await env.resume(run)))["action"] == "abandoned"


@workflow(name="t-recovery-custom")
async def custom_recovery(ctx: Context, event: dict[str, Any]) -> dict[str, Any]:
    config = RecoveryConfig(
        notify=tell,
        escalate_to=escalated_to,
        timeout=timedelta(hours=1),
        max_retries=2,
        retry_workflow="t-recovery-retry",
    )
    return await handle_agent_error(ctx, event, config)


escalations: list[Notification] = []


def escalated_to(notification: Notification) -> None:
    escalations.append(notification)


@workflow(name="t-recovery-retry")
async def retry_the_work(ctx: Context, detail: dict[str, Any]) -> str:
    return f"retried {detail['step']} (attempt {detail['recovery_attempt']})"


async def test_custom_config_invokes_a_retry_workflow_and_escalates_unknowns(
    fake_env: TestEnvironment,
) -> None:
    escalations.clear()
    report = await fake_env.result(await fake_env.run(custom_recovery, failure("ModelTimeout")))
    assert report["action"] == "retry" and report["result"] == "retried s (attempt 1)"

    replan = await fake_env.result(await fake_env.run(custom_recovery, failure("UnknownTool")))
    assert replan["action"] == "replan"

    run = await fake_env.run(custom_recovery, failure("KeyError"))  # unknown: escalate
    assert len(escalations) == 1 and people == []
    await fake_env.advance(timedelta(hours=1))
    report = await fake_env.result(await fake_env.resume(run))
    assert report["classification"] == "unknown" and report["action"] == "expired"

    run = await fake_env.run(custom_recovery, failure("ModelTimeout", recovery_attempt=2))
    assert run.status == RunStatus.SUSPENDED  # retries used up: a person decides
    assert len(escalations) == 2


# --- the recovery workflow retries the failed run itself ----------------------------------

outage = {"failures_left": 0}


def look_up(question: str) -> str:
    calls["look_up"] += 1  # a paid call made before the failure: never made again
    return f"facts for {question}"


def ask_model(facts: str) -> str:
    calls["ask_model"] += 1
    if outage["failures_left"] != 0:
        outage["failures_left"] -= 1
        raise ConnectionError("the model timed out")
    return f"answer from {facts}"


@workflow(name="t-recovery-gives-up")
async def gives_up(ctx: Context, question: str) -> str:
    facts = await ctx.step(look_up, question)
    try:
        return await ctx.step(ask_model, facts, retry=RetryPolicy(max_attempts=1))
    except StepFailed as exc:  # an agent reports, then fails its run
        detail = {"run_id": ctx.run_id, "step": "ask_model", "error_type": exc.error_type}
        await ctx.emit("AgentError", {**detail, "message": exc.message}, source="tests")
        raise


async def test_the_recovery_workflow_retries_the_failed_run_once_it_has_ended(
    env: TestEnvironment,
) -> None:
    await env.engine.store.put_rule(recovery_rule())
    outage["failures_left"] = 1
    run = await env.run(gives_up, "tides", linger=5)
    assert run.status == RunStatus.SUCCEEDED  # failed, was retried, then worked
    assert await env.result(run) == "answer from facts for tides"
    assert (calls["look_up"], calls["ask_model"]) == (1, 2)
    [recovery] = await env.engine.store.list_runs(workflow="cadenza.recovery")
    report = await env.result(recovery)
    assert report["classification"] == "transient" and report["retried"] is True
    history = await env.engine.store.history(run.run_id)
    [redriven] = [e for e in history if e.type == "ExecutionRedriven"]
    assert redriven.details["by"] == f"recovery run {recovery.run_id}"


async def test_a_run_that_keeps_failing_is_retried_at_most_max_retries_times(
    env: TestEnvironment,
) -> None:
    await env.engine.store.put_rule(recovery_rule())
    outage["failures_left"] = -1  # down for good
    run = await env.run(gives_up, "tides", linger=5)
    assert run.status == RunStatus.FAILED
    assert (calls["look_up"], calls["ask_model"]) == (1, 4)  # the first try and 3 retries
    recoveries = await env.engine.store.list_runs(workflow="cadenza.recovery")
    reports = [await env.result(r) for r in recoveries]
    assert sorted(r["retried"] for r in reports) == [False, True, True, True]
    [refused] = [r for r in reports if not r["retried"]]
    assert "retried 3 times already" in refused["reason"]
    errors = [
        e.event["id"]
        for e in await env.engine.store.list_events(limit=500)
        if e.event["detail-type"] == "AgentError"
    ]
    assert len(errors) == len(set(errors)) == 4  # each failure reported anew


@workflow(name="t-recovery-still-running")
async def still_running(ctx: Context) -> str:
    await ctx.wait(timedelta(hours=1))
    return "done"


async def test_the_recovery_workflow_waits_until_the_run_has_ended(
    fake_env: TestEnvironment,
) -> None:
    target = await fake_env.run(still_running)
    assert target.status == RunStatus.SUSPENDED
    recovery = await fake_env.run(recovery_workflow, failure("ModelTimeout", run_id=target.run_id))
    assert recovery.status == RunStatus.SUSPENDED  # polls the run, durably
    await fake_env.advance(timedelta(seconds=2))
    assert (await fake_env.resume(recovery)).status == RunStatus.SUSPENDED
    await fake_env.engine.cancel(target.run_id)
    await fake_env.advance(timedelta(seconds=5))
    report = await fake_env.result(await fake_env.resume(recovery))
    assert report["retried"] is True and report["run_status"] == "PENDING"
    target = await fake_env.engine.store.get_run(target.run_id)
    assert target.status == RunStatus.PENDING and not target.cancel_requested


async def test_retrying_is_a_no_op_for_a_run_that_did_not_fail(env: TestEnvironment) -> None:
    report = await env.result(await env.run(recovery_workflow, failure("ModelTimeout")))
    assert report["action"] == "retry" and report["retried"] is False
    assert report["run_status"] == "NOT_FOUND"
