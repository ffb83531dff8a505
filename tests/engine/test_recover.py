"""Retry and fork: a failed, cancelled or finished run goes on without repeating what its
journal recorded, and typed callbacks refuse payloads that do not fit."""

from __future__ import annotations

import asyncio
import re
import types
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from cadenza import (
    Context,
    InvalidInput,
    RetryPolicy,
    RunNotFound,
    RunStateError,
    RunStatus,
    StepContext,
    StepFailed,
    WorkflowNotFound,
    workflow,
)
from cadenza.engine._rewind import fork_journal
from cadenza.errors import CallbackTokenError
from cadenza.history import HistoryEvent
from cadenza.history import HistoryEventType as H
from cadenza.journal import OpRecord, OpStatus, OpType, parent_of
from cadenza.testing import TestEnvironment
from tests.contract.pg import fresh_database

calls: Counter[str] = Counter()
broken: set[str] = set()
attempts: list[int] = []

ONCE = RetryPolicy(max_attempts=2, initial_interval=timedelta(0))


@pytest.fixture(autouse=True)
def _reset() -> None:
    calls.clear()
    broken.clear()
    attempts.clear()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres), "dynamodb"])
async def any_env(request: pytest.FixtureRequest) -> AsyncIterator[TestEnvironment]:
    """An environment on each store: the engine decides, and every store must apply it."""
    if request.param == "sqlite":
        async with TestEnvironment() as environment:
            yield environment
        return
    if request.param == "dynamodb":
        store = request.getfixturevalue("dynamodb_store")()
        async with TestEnvironment(store=store) as environment:
            yield environment
        return
    with fresh_database() as url:
        async with TestEnvironment(store=f"{url}?schema=t_recover") as environment:
            yield environment


def research(topic: str) -> str:
    calls["research"] += 1  # stands for a model call that costs money
    return f"notes on {topic}"


def write(step: StepContext, notes: str) -> str:
    calls["write"] += 1
    attempts.append(step.attempt)
    if "write" in broken:
        raise ConnectionError("the model endpoint is down")
    return f"report from {notes}"


@workflow(name="t-recover-chain")
async def chain(ctx: Context, topic: str) -> str:
    notes = await ctx.step(research, topic)
    return await ctx.step(write, notes, retry=ONCE)


async def test_retry_reruns_only_the_failed_step_with_fresh_attempts(env: TestEnvironment) -> None:
    broken.add("write")
    run = await env.run(chain, "tides", linger=1)
    assert run.status == RunStatus.FAILED and attempts == [1, 2]
    broken.clear()  # the outage is over

    again = await env.engine.retry(run.run_id)
    assert again.status == RunStatus.PENDING and again.error is None
    run = await env.resume(again)
    assert run.status == RunStatus.SUCCEEDED
    assert await env.result(run) == "report from notes on tides"
    assert calls["research"] == 1  # recorded before the failure: not paid for again
    assert attempts == [1, 2, 1]  # a fresh attempt sequence
    history = await env.engine.store.history(run.run_id)
    [redriven] = [e for e in history if e.type == H.EXECUTION_REDRIVEN]
    assert redriven.op_id == "2" and redriven.name == "write"
    assert redriven.details["dropped"] == ["2"]
    assert redriven.details["previous_status"] == "FAILED"
    assert redriven.details["error"]["type"] == "ConnectionError"


async def test_a_run_that_fails_again_can_be_retried_again(env: TestEnvironment) -> None:
    broken.add("write")
    run = await env.run(chain, "tides", linger=1)
    run = await env.resume(await env.engine.retry(run.run_id), linger=1)
    assert run.status == RunStatus.FAILED and attempts == [1, 2, 1, 2]
    broken.clear()
    run = await env.resume(await env.engine.retry(run.run_id))
    assert run.status == RunStatus.SUCCEEDED and calls["research"] == 1


async def test_two_retries_of_one_failure_cannot_both_win(any_env: TestEnvironment) -> None:
    broken.add("write")
    run = await any_env.run(chain, "tides", linger=1)
    broken.clear()
    outcomes = await asyncio.gather(
        any_env.engine.retry(run.run_id), any_env.engine.retry(run.run_id), return_exceptions=True
    )
    won = [o for o in outcomes if not isinstance(o, BaseException)]
    lost = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(won) == 1 and len(lost) == 1 and isinstance(lost[0], RunStateError)
    run = await any_env.resume(won[0])
    assert run.status == RunStatus.SUCCEEDED and calls["research"] == 1
    history = await any_env.engine.store.history(run.run_id)
    assert [e.type for e in history].count(H.EXECUTION_REDRIVEN) == 1


async def test_only_ended_runs_can_be_retried(fake_env: TestEnvironment) -> None:
    @workflow(name="t-recover-waits")
    async def waits(ctx: Context) -> str:
        await ctx.wait(timedelta(hours=1))
        return "done"

    run = await fake_env.run(waits)
    with pytest.raises(RunStateError, match=r"has not ended .*cadenza cancel"):
        await fake_env.engine.retry(run.run_id)
    await fake_env.advance(timedelta(hours=1))
    run = await fake_env.resume(run)
    with pytest.raises(RunStateError, match=r"succeeded; there is nothing to retry.*fork"):
        await fake_env.engine.retry(run.run_id)
    with pytest.raises(RunNotFound):
        await fake_env.engine.retry("r-nope")


@workflow(name="t-recover-cancel")
async def cancellable(ctx: Context, topic: str) -> str:
    notes = await ctx.step(research, topic)
    await ctx.wait(timedelta(minutes=10))
    return notes


async def test_a_cancelled_run_is_retried_with_its_cancel_flag_cleared(
    fake_env: TestEnvironment,
) -> None:
    run = await fake_env.run(cancellable, "moss")
    cancelled = await fake_env.engine.cancel(run.run_id)
    assert cancelled.status == RunStatus.CANCELLED
    again = await fake_env.engine.retry(run.run_id)
    assert not again.cancel_requested and again.status == RunStatus.PENDING
    run = await fake_env.resume(again)
    assert run.status == RunStatus.SUSPENDED  # the wait goes on; the run was not cancelled
    await fake_env.advance(timedelta(minutes=10))
    run = await fake_env.resume(run)
    assert run.status == RunStatus.SUCCEEDED and calls["research"] == 1


def fetch(city: str) -> str:
    calls[f"fetch:{city}"] += 1
    if city in broken:
        raise ValueError(f"no data for {city}")
    return city.upper()


async def one_city(ctx: Context, city: str) -> str:
    return await ctx.step(fetch, city, retry=ONCE)


@workflow(name="t-recover-map")
async def survey(ctx: Context, cities: list[str]) -> list[str]:
    batch = await ctx.map(cities, one_city)
    batch.throw_if_error()
    return [str(r) for r in batch.results()]


async def test_retry_of_a_failed_map_reruns_only_its_failed_items(any_env: TestEnvironment) -> None:
    broken.add("oslo")
    run = await any_env.run(survey, ["lima", "oslo", "pune"], linger=1)
    assert run.status == RunStatus.FAILED
    broken.clear()
    retried = await any_env.engine.retry(run.run_id)
    [redriven] = [
        e for e in await any_env.engine.store.history(run.run_id) if e.type == H.EXECUTION_REDRIVEN
    ]
    assert redriven.details["dropped"] == ["1", "1.2", "1.2.1"]  # the batch, its item, the step
    run = await any_env.resume(retried)
    assert run.status == RunStatus.SUCCEEDED
    assert await any_env.result(run) == ["LIMA", "OSLO", "PUNE"]
    assert (calls["fetch:lima"], calls["fetch:oslo"], calls["fetch:pune"]) == (1, 3, 1)


def fallback(topic: str) -> str:
    calls["fallback"] += 1
    return f"cached notes on {topic}"


@workflow(name="t-recover-caught")
async def caught(ctx: Context, topic: str) -> str:
    try:
        notes = await ctx.step(fetch, topic, retry=ONCE)
    except StepFailed:  # the workflow's own decision: recorded, kept on retry
        notes = await ctx.step(fallback, topic)
    return await ctx.step(write, notes, retry=ONCE)


async def test_a_failure_the_workflow_caught_stays_recorded(env: TestEnvironment) -> None:
    broken.update({"kelp", "write"})
    run = await env.run(caught, "kelp", linger=1)
    assert run.status == RunStatus.FAILED
    broken.clear()
    run = await env.resume(await env.engine.retry(run.run_id))
    assert run.status == RunStatus.SUCCEEDED
    assert await env.result(run) == "report from cached notes on kelp"
    assert (calls["fetch:kelp"], calls["fallback"]) == (2, 1)  # neither ran again
    journal = {op.op_id: op for op in await env.engine.store.load_journal(run.run_id)}
    assert journal["1"].status == OpStatus.FAILED


async def test_a_child_context_failure_is_retried_inside_it(env: TestEnvironment) -> None:
    @workflow(name="t-recover-child")
    async def nested(ctx: Context, topic: str) -> str:
        async def section(child: Context) -> str:
            notes = await child.step(research, topic)
            return await child.step(write, notes, retry=ONCE)

        return await ctx.run_in_child_context(section, name="section")

    broken.add("write")
    run = await env.run(nested, "reefs", linger=1)
    broken.clear()
    run = await env.resume(await env.engine.retry(run.run_id))
    assert run.status == RunStatus.SUCCEEDED and calls["research"] == 1


@workflow(name="t-recover-invoked")
async def invoked(ctx: Context, topic: str) -> str:
    notes = await ctx.step(research, topic)
    return await ctx.step(write, notes, retry=ONCE)


@workflow(name="t-recover-parent")
async def parent(ctx: Context, topic: str) -> str:
    intro = await ctx.step(fallback, topic)
    body = await ctx.invoke(invoked, topic)
    return f"{intro} / {body}"


async def test_retrying_a_parent_retries_the_failed_child_it_waits_on(
    any_env: TestEnvironment,
) -> None:
    broken.add("write")
    run = await any_env.run(parent, "dunes", linger=1)
    assert run.status == RunStatus.FAILED
    [child] = await any_env.engine.store.list_runs(parent_run_id=run.run_id)
    assert child.status == RunStatus.FAILED
    broken.clear()
    run = await any_env.resume(await any_env.engine.retry(run.run_id), linger=1)
    assert run.status == RunStatus.SUCCEEDED
    assert await any_env.result(run) == "cached notes on dunes / report from notes on dunes"
    assert (calls["fallback"], calls["research"]) == (1, 1)
    child = await any_env.engine.store.get_run(child.run_id)
    assert child.status == RunStatus.SUCCEEDED
    child_history = [e.type for e in await any_env.engine.store.history(child.run_id)]
    assert H.EXECUTION_REDRIVEN in child_history


def flaky_call(turn: int) -> str:
    calls["flaky_call"] += 1
    if "model" in broken:
        raise ConnectionError("the model timed out")
    return f"turn {turn} ok"


@workflow(name="t-recover-gave-up")
async def gave_up(ctx: Context, topic: str) -> str:
    notes = await ctx.step(research, topic)
    failures = 0
    for turn in range(1, 10):  # an agent's loop: three failures in a row and it gives up
        try:
            return f"{notes}: " + await ctx.step(flaky_call, turn, name="model", retry=ONCE)
        except StepFailed:
            failures += 1
            if failures == 3:
                await ctx.emit("AgentError", {"run_id": ctx.run_id, "reason": "3 failures"})
                raise
    return "unreachable"


async def test_a_run_of_failures_and_its_report_are_all_retried(env: TestEnvironment) -> None:
    broken.add("model")
    run = await env.run(gave_up, "kelp", linger=1)
    assert run.status == RunStatus.FAILED and calls["flaky_call"] == 6
    broken.clear()
    again = await env.engine.retry(run.run_id)
    [redriven] = [
        e for e in await env.engine.store.history(run.run_id) if e.type == H.EXECUTION_REDRIVEN
    ]
    assert redriven.details["dropped"] == ["2", "3", "4", "5"]  # three failures, the report
    run = await env.resume(again)
    assert await env.result(run) == "notes on kelp: turn 1 ok"
    assert (calls["research"], calls["flaky_call"]) == (1, 7)


# --- a new version takes a failed run over ------------------------------------------------


def check(value: str) -> str:
    calls["check"] += 1
    return value


@workflow(name="t-recover-versioned", version="1")
async def versioned_v1(ctx: Context, text: str) -> str:
    checked = await ctx.step(check, text)
    raise ValueError(f"bug: cannot handle {checked!r}")  # the code, not a step, fails


@workflow(name="t-recover-versioned", version="2")
async def versioned_v2(ctx: Context, text: str) -> str:
    checked = await ctx.step(check, text)
    return checked.title()


@workflow(name="t-recover-versioned", version="3")
async def versioned_v3(ctx: Context, text: str) -> str:
    checked = await ctx.step(research, text)  # a different operation at the same place
    return checked


async def test_a_newer_version_takes_over_a_failed_run(env: TestEnvironment) -> None:
    run = await env.run(versioned_v1, "sea glass")
    assert run.status == RunStatus.FAILED and run.error and "bug" in run.error.message
    with pytest.raises(WorkflowNotFound, match="version '9'"):
        await env.engine.retry(run.run_id, version="9")

    # A version whose code does not replay the journal fails clearly and loses nothing.
    run = await env.resume(await env.engine.retry(run.run_id, version="3"))
    assert run.status == RunStatus.FAILED and run.version == "3"
    assert run.error is not None and run.error.type == "NonDeterminismError"
    assert calls == Counter({"check": 1})
    [first] = await env.engine.store.load_journal(run.run_id)
    assert first.status == OpStatus.SUCCEEDED and first.name == "check"

    run = await env.resume(await env.engine.retry(run.run_id, version="2"))
    assert run.status == RunStatus.SUCCEEDED and run.version == "2"
    assert await env.result(run) == "Sea Glass"
    assert calls == Counter({"check": 1})
    redrives = [
        e.details
        for e in await env.engine.store.history(run.run_id)
        if e.type == H.EXECUTION_REDRIVEN
    ]
    assert [d["version"] for d in redrives] == [{"from": "1", "to": "3"}, {"from": "3", "to": "2"}]


# --- typed callbacks -----------------------------------------------------------------------


class Decision(BaseModel):
    approved: bool
    comment: str = ""


@workflow(name="t-recover-typed")
async def typed(ctx: Context) -> str:
    cb = await ctx.create_callback(name="approval", payload_type=Decision)
    decision = await cb.result()
    assert isinstance(decision, Decision)
    return f"approved={decision.approved} ({decision.comment})"


async def test_a_payload_that_does_not_fit_is_refused_and_the_callback_stays_open(
    env: TestEnvironment,
) -> None:
    run = await env.run(typed)
    token = await env.token(run)
    with pytest.raises(InvalidInput, match=r"approved.*required.*\{approved: boolean"):
        await env.succeed(token, {"comment": "fine"})
    with pytest.raises(InvalidInput, match=r"none was given.*--payload"):
        await env.succeed(token, None)
    with pytest.raises(InvalidInput, match=r"is not of type '?boolean"):
        await env.succeed(token, {"approved": "sure"})
    [callback] = await env.engine.store.load_callbacks(run.run_id)
    assert callback.status == "PENDING"
    assert callback.payload_schema is not None
    assert callback.payload_schema["required"] == ["approved"]
    await env.succeed(token, {"approved": True, "comment": "ship it"})
    run = await env.resume(run)
    assert await env.result(run) == "approved=True (ship it)"


@workflow(name="t-recover-typed-wait")
async def typed_wait(ctx: Context) -> str:
    decision = await ctx.wait_for_callback(
        lambda token: calls.update(["submit"]),
        name="review",
        timeout=timedelta(hours=1),
        payload_type=Decision,
    )
    assert isinstance(decision, Decision)
    return "yes" if decision.approved else "no"


async def test_a_timed_out_callback_is_opened_again_by_retry_with_a_new_token(
    fake_env: TestEnvironment,
) -> None:
    run = await fake_env.run(typed_wait)
    old = await fake_env.token(run)
    await fake_env.advance(timedelta(hours=2))
    run = await fake_env.resume(run)
    assert run.status == RunStatus.FAILED and calls["submit"] == 1

    run = await fake_env.resume(await fake_env.engine.retry(run.run_id))
    assert run.status == RunStatus.SUSPENDED
    new = await fake_env.token(run)
    assert new != old
    with pytest.raises(CallbackTokenError):  # the old token stays spent
        await fake_env.succeed(old, {"approved": True})
    await fake_env.succeed(new, {"approved": False})
    run = await fake_env.resume(run)
    assert await fake_env.result(run) == "no"
    assert calls["submit"] == 1  # a recorded success is never run again


# --- fork ----------------------------------------------------------------------------------


def plan(goal: str) -> list[str]:
    calls["plan"] += 1
    return [f"{goal}: step {i}" for i in (1, 2)]


def act(item: str) -> str:
    calls["act"] += 1
    return item.upper()


@workflow(name="t-recover-fork")
async def agent(ctx: Context, goal: str) -> dict[str, Any]:
    steps = await ctx.step(plan, goal)

    async def carry_out(child: Context) -> list[str]:
        return [await child.step(act, s, name=f"act{i}") for i, s in enumerate(steps)]

    done = await ctx.run_in_child_context(carry_out, name="carry_out")
    ctx.state.goal = ctx.state.goal or goal
    return {"done": done, "goal": ctx.state.goal}


async def test_fork_replays_up_to_an_operation_and_runs_live_from_there(
    any_env: TestEnvironment,
) -> None:
    source = await any_env.run(agent, "paint")
    assert calls == Counter({"plan": 1, "act": 2})

    fork = await any_env.engine.fork(source.run_id, from_op="2.2")
    assert fork.run_id != source.run_id and fork.status == RunStatus.PENDING
    assert fork.origin is not None and (fork.origin.run_id, fork.origin.op_id) == (
        source.run_id,
        "2.2",
    )
    copied = {op.op_id for op in await any_env.engine.store.load_journal(fork.run_id)}
    assert copied == {"1", "2.1"}  # not "2", which encloses 2.2 and depends on it
    fork = await any_env.resume(fork)
    assert await any_env.result(fork) == {
        "done": ["PAINT: STEP 1", "PAINT: STEP 2"],
        "goal": "paint",
    }
    assert calls == Counter({"plan": 1, "act": 3})  # only 2.2 ran again
    history = await any_env.engine.store.history(fork.run_id)
    assert [e.type for e in history[:2]] == [H.EXECUTION_STARTED, H.EXECUTION_FORKED]
    assert history[1].details["run_id"] == source.run_id and history[1].details["copied"] == 2


async def test_fork_with_new_input_and_state(env: TestEnvironment) -> None:
    source = await env.run(agent, "paint")
    fork = await env.resume(
        await env.engine.fork(source.run_id, from_op="1", input="sand", state={"goal": "dig"})
    )
    assert await env.result(fork) == {"done": ["SAND: STEP 1", "SAND: STEP 2"], "goal": "dig"}
    assert calls == Counter({"plan": 2, "act": 4})
    assert (await env.engine.store.get_run(source.run_id)).status == RunStatus.SUCCEEDED


async def test_fork_refuses_an_operation_the_run_does_not_have(env: TestEnvironment) -> None:
    source = await env.run(agent, "paint")
    with pytest.raises(InvalidInput, match=r"no operation '7'.*cadenza runs history"):
        await env.engine.fork(source.run_id, from_op="7")
    with pytest.raises(InvalidInput, match="JSON object"):
        await env.engine.fork(source.run_id, from_op="1", state=["not", "a", "document"])  # type: ignore[arg-type]


# --- the docs page's example is real code --------------------------------------------------

DOCS = Path(__file__).resolve().parents[2] / "docs" / "recovering.md"


async def test_the_docs_example_retries_without_repeating_the_draft_or_the_review(
    env: TestEnvironment,
) -> None:
    [source] = re.findall(r"```python\n(.*?)```", DOCS.read_text(), flags=re.DOTALL)[:1]
    example = types.ModuleType("docs_recovering")
    exec(compile(source, str(DOCS), "exec"), example.__dict__)
    drafts: list[str] = []
    example.draft = lambda topic: drafts.append(topic) or f"A piece about {topic}."

    run = await env.run(example.publish_piece, "moss")
    await env.succeed(await env.token(run), {"approved": True})
    run = await env.resume(run, linger=3)  # through the retry's backoff (1 s, jittered)
    assert run.status == RunStatus.FAILED  # the CMS was down
    example.outage["down"] = False
    assert await example.carry_on(env.engine, run.run_id) == "published: A piece about moss."
    assert drafts == ["moss"] and len(await env.tokens(run)) == 0

    assert await example.try_another_topic(env.engine, run.run_id) == RunStatus.SUSPENDED
    assert drafts == ["moss", "tides"]  # a fork from op 1 runs everything again


def test_fork_copies_what_ended_before_the_operation_began_in_every_branch() -> None:
    def rec(op_id: str, op_type: OpType = OpType.STEP) -> OpRecord:
        return OpRecord(op_id, op_type, op_id, OpStatus.SUCCEEDED, parent_of(op_id))

    def events(*pairs: tuple[str, H]) -> list[HistoryEvent]:
        return [
            HistoryEvent(seq, kind, datetime(2026, 1, 1, tzinfo=UTC), op_id=op_id)
            for seq, (op_id, kind) in enumerate(pairs, start=2)
        ]

    journal = [
        rec("1"),
        rec("2", OpType.PARALLEL),
        rec("2.1", OpType.CONTEXT),
        rec("2.1.1"),
        rec("2.1.2"),
        rec("2.2", OpType.CONTEXT),
        rec("2.2.1"),
    ]
    history = events(
        ("1", H.STEP_STARTED),
        ("1", H.STEP_SUCCEEDED),
        ("2", H.CONTEXT_STARTED),
        ("2.1", H.CONTEXT_STARTED),
        ("2.1.1", H.STEP_STARTED),
        ("2.2", H.CONTEXT_STARTED),
        ("2.2.1", H.STEP_STARTED),
        ("2.1.1", H.STEP_SUCCEEDED),
        ("2.2.1", H.STEP_SUCCEEDED),
        ("2.1.2", H.STEP_STARTED),  # the other branch has not finished yet
        ("2.2", H.CONTEXT_SUCCEEDED),
        ("2.1.2", H.STEP_SUCCEEDED),
        ("2.1", H.CONTEXT_SUCCEEDED),
        ("2", H.CONTEXT_SUCCEEDED),
    )
    copied = [r.op_id for r in fork_journal(journal, history, "2.1.2")]
    assert copied == ["1", "2.1.1", "2.2.1"]  # 2.2 ended after 2.1.2 began: it runs again
    assert [r.op_id for r in fork_journal(journal, history, "2")] == ["1"]
