"""wait_for_condition in history as AWS durable executions show it: one step-like operation
of sub-type WaitForCondition, each check an attempt (StepStarted, then StepSucceeded —
with the next attempt's time while the condition is not met — or StepFailed)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from cadenza import Context, RunStatus, StepFailed, poll_until, workflow
from cadenza.testing import TestEnvironment


def count_up(state: dict[str, int]) -> dict[str, int]:
    return {"checks": state["checks"] + 1}


@workflow(name="t-condition-history")
async def polls(ctx: Context) -> dict[str, int]:
    return await ctx.wait_for_condition(  # type: ignore[no-any-return]
        count_up,
        {"checks": 0},
        wait_strategy=poll_until(lambda s: s["checks"] >= 3, every=timedelta(seconds=30)),
        name="job-done",
    )


async def condition_events(env: TestEnvironment, run_id: str) -> list[tuple[str, dict[str, Any]]]:
    return [
        (str(e.type), e.details) for e in await env.engine.store.history(run_id) if e.op_id == "1"
    ]


async def test_each_check_is_a_step_attempt_of_sub_type_wait_for_condition(
    fake_env: TestEnvironment,
) -> None:
    run = await fake_env.run(polls)
    for _ in range(2):
        await fake_env.advance(30)
        run = await fake_env.resume(run)
    assert await fake_env.result(run) == {"checks": 3}
    events = await condition_events(fake_env, run.run_id)
    assert [(t, d["attempt"]) for t, d in events] == [
        ("StepStarted", 1),
        ("StepSucceeded", 1),
        ("StepStarted", 2),
        ("StepSucceeded", 2),
        ("StepStarted", 3),
        ("StepSucceeded", 3),
    ]
    assert {d["sub_type"] for _, d in events} == {"WaitForCondition"}
    retries = [d for t, d in events if t == "StepSucceeded" and "next_attempt_at" in d]
    assert [d["next_attempt_delay_s"] for d in retries] == [30.0, 30.0]
    assert [d["state"] for d in retries] == ['{"checks":1}', '{"checks":2}']
    final = events[-1][1]
    assert "next_attempt_at" not in final
    names = [name for name in await fake_env.history(run)]
    assert "WaitStarted" not in names  # a check is not a wait


def broken(state: dict[str, int]) -> dict[str, int]:
    raise ConnectionError("the job service is down")


@workflow(name="t-condition-history-failed")
async def fails(ctx: Context) -> str:
    try:
        await ctx.wait_for_condition(
            broken,
            {"checks": 0},
            wait_strategy=poll_until(lambda s: True, every=timedelta(seconds=30)),
            name="job-done",
        )
    except StepFailed as exc:
        return exc.error_type
    return "unreachable"


async def test_a_check_that_raises_is_a_failed_step_attempt(fake_env: TestEnvironment) -> None:
    run = await fake_env.run(fails)
    assert run.status == RunStatus.SUCCEEDED and await fake_env.result(run) == "ConnectionError"
    events = await condition_events(fake_env, run.run_id)
    assert [t for t, _ in events] == ["StepStarted", "StepFailed"]
    assert events[1][1]["sub_type"] == "WaitForCondition" and events[1][1]["attempt"] == 1
    assert events[1][1]["error"]["type"] == "ConnectionError"
