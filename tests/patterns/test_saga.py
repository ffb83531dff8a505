"""Saga: reverse-order compensation, compensation retries, escalation when undoing fails,
and replay that never runs a step or a compensation twice."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from cadenza import Context, RetryPolicy, RunStatus, StepContext, workflow
from cadenza.errors import WorkflowDefinitionError
from cadenza.patterns._notify import Notification
from cadenza.patterns.approval import ApprovalDecision, ApprovalGate
from cadenza.patterns.saga import Saga, SagaDefinition, SagaOutcome, SagaStatus, SagaStep, run_saga
from cadenza.testing import TestEnvironment

ledger: list[str] = []
flaky: dict[str, int] = {}  # compensation name -> failures still to come
notes: list[Notification] = []

FAST = RetryPolicy(max_attempts=3, initial_interval=timedelta(0), jitter=0)


@pytest.fixture(autouse=True)
def _clean() -> None:
    ledger.clear()
    flaky.clear()
    notes.clear()


def reserve(kind: str) -> Any:
    async def action(step: StepContext, trip: str) -> dict[str, str]:
        ledger.append(f"reserve {kind}")
        return {"kind": kind, "ref": f"{kind}-{trip}"}

    action.__name__ = f"reserve_{kind}"
    return action


async def cancel(reservation: dict[str, str]) -> str:
    key = f"cancel {reservation['kind']}"
    ledger.append(key)
    if flaky.get(key, 0) > 0:
        flaky[key] -= 1
        raise ConnectionError(f"{key}: the supplier did not answer")
    return f"cancelled {reservation['ref']}"


async def refuse_car(trip: str) -> None:
    ledger.append("reserve car")
    raise ValueError("no cars left")


reserve_flight, reserve_hotel = reserve("flight"), reserve("hotel")


@workflow(name="t-saga-commit")
async def all_good(ctx: Context, trip: str) -> SagaOutcome:
    async with Saga(ctx, name="trip") as saga:
        await saga.step(reserve_flight, trip, compensate=cancel)
        await saga.step(reserve_hotel, trip, compensate=cancel)
    return saga.outcome


async def test_a_saga_whose_steps_all_succeed_commits(env: TestEnvironment) -> None:
    outcome: SagaOutcome = await env.result(await env.run(all_good, "lis"), SagaOutcome)
    assert outcome.status == SagaStatus.COMMITTED and outcome.committed
    assert outcome.completed == ["reserve_flight", "reserve_hotel"]
    assert outcome.compensated == [] and outcome.error is None
    assert outcome.results["reserve_hotel"] == {"kind": "hotel", "ref": "hotel-lis"}
    assert ledger == ["reserve flight", "reserve hotel"]


@workflow(name="t-saga-compensate")
async def no_car(ctx: Context, trip: str) -> SagaOutcome:
    async with Saga(ctx, name="trip", compensation_retry=FAST) as saga:
        await saga.step(reserve_flight, trip, compensate=cancel)
        await saga.step(reserve_hotel, trip, compensate=cancel)
        await saga.step(refuse_car, trip, compensate=cancel, retry=RetryPolicy(max_attempts=1))
    return saga.outcome


async def test_a_failed_step_compensates_the_completed_ones_in_reverse(
    env: TestEnvironment,
) -> None:
    run = await env.run(no_car, "lis")
    outcome: SagaOutcome = await env.result(run, SagaOutcome)
    assert outcome.status == SagaStatus.COMPENSATED
    assert outcome.completed == ["reserve_flight", "reserve_hotel"]
    assert outcome.compensated == ["reserve_hotel", "reserve_flight"]
    assert outcome.error is not None and outcome.error.type == "ValueError"
    assert "no cars left" in outcome.error.message
    assert ledger == [
        "reserve flight",
        "reserve hotel",
        "reserve car",
        "cancel hotel",
        "cancel flight",
    ]
    names = [e.name for e in await env.engine.store.history(run.run_id) if e.name]
    assert names.index("compensate:reserve_hotel") < names.index("compensate:reserve_flight")


async def test_a_compensation_is_retried_until_it_succeeds(env: TestEnvironment) -> None:
    flaky["cancel hotel"] = 2  # two failures, then success: within FAST's three attempts
    outcome: SagaOutcome = await env.result(await env.run(no_car, "lis"), SagaOutcome)
    assert outcome.status == SagaStatus.COMPENSATED
    assert outcome.compensated == ["reserve_hotel", "reserve_flight"]
    assert ledger.count("cancel hotel") == 3 and ledger.count("cancel flight") == 1


def remember(notification: Notification) -> None:
    notes.append(notification)


@workflow(name="t-saga-escalate")
async def undo_fails(ctx: Context, trip: str) -> SagaOutcome:
    gate = ApprovalGate(notify=remember, name="ops")
    async with Saga(ctx, name="trip", compensation_retry=FAST, escalate=gate) as saga:
        await saga.step(reserve_flight, trip, compensate=cancel)
        await saga.step(reserve_hotel, trip, compensate=cancel)
        await saga.step(refuse_car, trip, retry=RetryPolicy(max_attempts=1))
    return saga.outcome


async def test_a_compensation_that_keeps_failing_escalates_to_a_person(
    env: TestEnvironment,
) -> None:
    flaky["cancel hotel"] = 99
    run = await env.run(undo_fails, "lis")
    assert run.status == RunStatus.SUSPENDED  # waiting for a person
    # the other compensation still ran; the failed one was tried FAST.max_attempts times
    assert ledger.count("cancel hotel") == 3 and ledger.count("cancel flight") == 1
    [event] = [
        e.event
        for e in await env.engine.store.list_events()
        if e.event["detail-type"] == "SagaCompensationFailed"
    ]
    assert event["detail"]["failed"]["reserve_hotel"]["type"] == "ConnectionError"
    assert event["detail"]["compensated"] == ["reserve_flight"]
    [note] = notes
    assert note.token == await env.token(run) and "reserve_hotel" in note.subject
    await env.succeed(note.token or "", {"decision": "approve", "comment": "refunded by hand"})
    outcome: SagaOutcome = await env.result(await env.resume(run), SagaOutcome)
    assert outcome.status == SagaStatus.COMPENSATION_FAILED
    assert outcome.compensated == ["reserve_flight"]
    assert list(outcome.failed_compensations) == ["reserve_hotel"]
    assert outcome.escalation is not None
    assert outcome.escalation.decision == ApprovalDecision.APPROVED
    assert outcome.escalation.comments[0].comment == "refunded by hand"
    assert ledger.count("cancel hotel") == 3 and len(notes) == 1  # nothing ran again


@workflow(name="t-saga-suspends")
async def patient(ctx: Context, trip: str) -> SagaOutcome:
    slow_undo = RetryPolicy(max_attempts=3, initial_interval=timedelta(minutes=5), jitter=0)
    async with Saga(ctx, name="trip", compensation_retry=slow_undo) as saga:
        await saga.step(reserve_flight, trip, compensate=cancel)
        await ctx.wait(timedelta(hours=1), name="hold")
        await saga.step(reserve_hotel, trip, compensate=cancel)
        await saga.step(refuse_car, trip, retry=RetryPolicy(max_attempts=1))
    await ctx.wait(timedelta(hours=1), name="settle")
    return saga.outcome


async def test_replay_after_suspensions_runs_no_step_or_compensation_twice(
    fake_env: TestEnvironment,
) -> None:
    flaky["cancel flight"] = 1  # its retry backs off durably: the run suspends mid-undo
    run = await fake_env.run(patient, "lis")
    assert run.status == RunStatus.SUSPENDED and ledger == ["reserve flight"]
    await fake_env.advance(timedelta(hours=1))
    run = await fake_env.resume(run)
    assert run.status == RunStatus.SUSPENDED  # the flight's cancellation is backing off
    assert ledger == [
        "reserve flight",
        "reserve hotel",
        "reserve car",
        "cancel hotel",
        "cancel flight",
    ]
    await fake_env.advance(timedelta(minutes=5))
    run = await fake_env.resume(run)
    assert run.status == RunStatus.SUSPENDED  # settling: one more replay ahead
    await fake_env.advance(timedelta(hours=1))
    outcome: SagaOutcome = await fake_env.result(await fake_env.resume(run), SagaOutcome)
    assert outcome.status == SagaStatus.COMPENSATED
    assert outcome.compensated == ["reserve_hotel", "reserve_flight"]
    assert ledger == [
        "reserve flight",
        "reserve hotel",
        "reserve car",
        "cancel hotel",
        "cancel flight",
        "cancel flight",  # the retry, and nothing else: the rest replayed from the journal
    ]


TRIP = SagaDefinition(
    [
        SagaStep(reserve_flight, cancel),
        SagaStep(reserve_hotel, cancel),
        SagaStep(refuse_car, name="car", retry=RetryPolicy(max_attempts=1)),
    ],
    name="declared-trip",
    compensation_retry=FAST,
)


@workflow(name="t-saga-declared")
async def declared(ctx: Context, trip: str) -> SagaOutcome:
    return await run_saga(ctx, TRIP, trip)


@workflow(name="t-saga-declared-ok")
async def declared_ok(ctx: Context, trip: str) -> SagaOutcome:
    return await run_saga(ctx, SagaDefinition(TRIP.steps[:2]), trip)


async def test_a_declared_saga_runs_each_step_with_the_input(env: TestEnvironment) -> None:
    outcome: SagaOutcome = await env.result(await env.run(declared, "osl"), SagaOutcome)
    assert outcome.status == SagaStatus.COMPENSATED
    assert outcome.completed == ["reserve_flight", "reserve_hotel"]
    assert outcome.compensated == ["reserve_hotel", "reserve_flight"]
    ledger.clear()
    outcome = await env.result(await env.run(declared_ok, "osl"), SagaOutcome)
    assert outcome.committed and outcome.results["reserve_flight"]["ref"] == "flight-osl"


@workflow(name="t-saga-by-hand")
async def by_hand(ctx: Context, trip: str) -> dict[str, Any]:
    saga = Saga(ctx, name="manual", compensation_retry=FAST)
    flight = await saga.step(reserve_flight, trip, compensate=cancel)
    if flight["ref"].endswith("x"):
        outcome = await saga.abort("the traveller changed their mind")
    else:
        outcome = saga.commit()
    return {"status": outcome.status, "error": outcome.error and outcome.error.message}


async def test_commit_and_abort_by_hand(env: TestEnvironment) -> None:
    assert await env.result(await env.run(by_hand, "lis")) == {
        "status": "COMMITTED",
        "error": None,
    }
    assert await env.result(await env.run(by_hand, "x")) == {
        "status": "COMPENSATED",
        "error": "the traveller changed their mind",
    }
    assert ledger == ["reserve flight", "reserve flight", "cancel flight"]


def test_a_compensation_that_is_not_callable_fails_at_definition() -> None:
    with pytest.raises(WorkflowDefinitionError, match="compensate must be callable"):
        SagaStep(reserve_flight, "cancel")  # type: ignore[arg-type]
    with pytest.raises(WorkflowDefinitionError, match="unique"):
        SagaDefinition([SagaStep(reserve_flight), SagaStep(reserve_flight)])
    with pytest.raises(WorkflowDefinitionError, match="no steps"):
        SagaDefinition([])


@workflow(name="t-saga-bad-compensation")
async def bad_compensation(ctx: Context) -> None:
    saga = Saga(ctx)
    await saga.step(reserve_flight, "lis", compensate=42)  # type: ignore[arg-type]


async def test_a_bad_compensation_fails_the_run_before_the_step_runs(
    env: TestEnvironment,
) -> None:
    run = await env.run(bad_compensation)
    assert run.status == RunStatus.FAILED
    assert run.error is not None and run.error.type == "WorkflowDefinitionError"
    assert ledger == []


@workflow(name="t-saga-escalate-notifier")
async def undo_fails_quietly(ctx: Context, trip: str) -> SagaOutcome:
    saga = Saga(ctx, name="trip", compensation_retry=FAST, escalate=remember, emit_events=False)
    async with saga:
        await saga.step(reserve_flight, trip, compensate=cancel)
        await saga.step(refuse_car, trip, retry=RetryPolicy(max_attempts=1))
    return saga.outcome


async def test_a_plain_notifier_escalates_through_a_default_gate(env: TestEnvironment) -> None:
    flaky["cancel flight"] = 99
    run = await env.run(undo_fails_quietly, "lis")
    [note] = notes
    assert note.kind == "approval_requested" and note.body["failed"]["reserve_flight"]
    assert not [
        e for e in await env.engine.store.list_events() if e.event["run_id"] == run.run_id
    ]  # emit_events=False
    await env.succeed(note.token or "", {"decision": "reject", "comment": "cannot fix"})
    outcome: SagaOutcome = await env.result(await env.resume(run), SagaOutcome)
    assert outcome.status == SagaStatus.COMPENSATION_FAILED
    assert outcome.escalation is not None and not outcome.escalation.approved
