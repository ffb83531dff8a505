"""The instrumentation hooks: live work only, the first-invocation flag, attempts, and a
hook that raises never breaking a run."""

from __future__ import annotations

import logging
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest

from cadenza import ConfigurationError, Context, Engine, Instrumentation, RunStatus, workflow
from cadenza.engine._instrumentation import AttemptInfo, InvocationInfo, OperationInfo
from cadenza.testing import FakeClock, InMemoryRunStore, TestEnvironment
from tests.telemetry.otel_workflows import waiter


class Recorder(Instrumentation):
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def invocation_started(self, info: InvocationInfo) -> None:
        self.events.append(("invocation_started", info))

    def invocation_ended(self, info: InvocationInfo) -> None:
        self.events.append(("invocation_ended", info))

    def operation_started(self, info: OperationInfo) -> None:
        self.events.append(("operation_started", info))

    def operation_ended(self, info: OperationInfo) -> None:
        self.events.append(("operation_ended", info))

    def attempt_started(self, info: AttemptInfo) -> None:
        self.events.append(("attempt_started", info))

    def attempt_ended(self, info: AttemptInfo) -> None:
        self.events.append(("attempt_ended", info))

    def of(self, kind: str) -> list[Any]:
        return [info for name, info in self.events if name == kind]


async def test_each_operation_is_reported_once_across_replays() -> None:
    recorder = Recorder()
    async with TestEnvironment(clock=FakeClock(), instrumentation=[recorder]) as env:
        run = await env.run(waiter, 30.0)
        while run.status == RunStatus.SUSPENDED:
            await env.advance(timedelta(seconds=30))
            run = await env.resume(run)
        assert run.status == RunStatus.SUCCEEDED
    started = Counter(info.op_id for info in recorder.of("operation_started"))
    ended = Counter(info.op_id for info in recorder.of("operation_ended"))
    assert len(started) == 11 and set(started.values()) == {1}  # 6 steps, 5 waits
    assert started == ended
    invocations = recorder.of("invocation_ended")
    assert len(invocations) == 6
    assert [i.is_first_invocation for i in invocations] == [True] + [False] * 5
    assert [i.outcome for i in invocations] == ["SUSPENDED"] * 5 + ["SUCCEEDED"]
    assert invocations[-1].replayed > 0 and invocations[-1].executed == 1
    assert {i.trace_id for i in invocations} == {run.trace_id}
    # A wait ends an activation after it started, with its recorded start and end.
    pause = next(i for i in recorder.of("operation_ended") if i.name == "pause0")
    assert pause.type == "wait" and pause.status == "SUCCEEDED"
    assert pause.end_time - pause.start_time == timedelta(seconds=30)


def breaks_once() -> str:
    return "done"


_tries: list[int] = []


def fails_then_works() -> str:
    _tries.append(1)
    if len(_tries) == 1:
        raise RuntimeError("boom")
    return "ok"


@workflow(name="t-hooks-retry")
async def retry_flow(ctx: Context) -> str:
    return str(await ctx.step(fails_then_works, name="flaky"))


async def test_attempts_say_whether_a_retry_follows() -> None:
    _tries.clear()
    recorder = Recorder()
    async with TestEnvironment(clock=FakeClock(), instrumentation=recorder) as env:
        run = await env.run(retry_flow)
        await env.advance(timedelta(seconds=5))
        run = await env.resume(run)
        assert run.status == RunStatus.SUCCEEDED
    attempts = recorder.of("attempt_ended")
    assert [(a.attempt, a.retry_follows) for a in attempts] == [(1, True), (2, False)]
    assert attempts[0].error is not None and attempts[0].error.type == "RuntimeError"
    assert attempts[0].next_attempt_at is not None
    assert len(recorder.of("operation_started")) == 1  # attempt 2 is not a new operation
    (ended,) = recorder.of("operation_ended")
    assert ended.status == "SUCCEEDED" and ended.record.attempt == 2


class Broken(Instrumentation):
    def invocation_started(self, info: InvocationInfo) -> None:
        raise RuntimeError("exporter down")

    def operation_ended(self, info: OperationInfo) -> None:
        raise RuntimeError("exporter down")

    def attempt_scope(self, info: AttemptInfo) -> Any:
        raise RuntimeError("no scope today")


@workflow(name="t-hooks-steps")
async def three_steps(ctx: Context) -> str:
    for i in range(3):
        await ctx.step(breaks_once, name=f"s{i}")
    return "fine"


async def test_a_raising_hook_never_breaks_a_run(caplog: pytest.LogCaptureFixture) -> None:
    recorder = Recorder()
    with caplog.at_level(logging.ERROR, logger="cadenza.instrumentation"):
        async with TestEnvironment(instrumentation=[Broken(), recorder]) as env:
            run = await env.run(three_steps)
            assert run.status == RunStatus.SUCCEEDED
            assert await env.result(run) == "fine"
    # The other instrumentation still heard everything; each broken hook logged once.
    assert len(recorder.of("operation_ended")) == 3
    logged = Counter(r.getMessage().split(" ")[1] for r in caplog.records)
    assert logged == {
        "Broken.invocation_started": 1,
        "Broken.operation_ended": 1,
        "Broken.attempt_scope": 1,
    }


async def test_replay_and_replay_checks_report_nothing() -> None:
    recorder = Recorder()
    async with TestEnvironment(instrumentation=recorder) as env:
        run = await env.run(three_steps)
        before = len(recorder.events)
        results = await env.engine.replay_check(three_steps)
        assert results and all(r.compatible for r in results)
        assert len(recorder.events) == before
        assert run.status == RunStatus.SUCCEEDED


def test_instrumentation_must_be_instrumentations() -> None:
    with pytest.raises(ConfigurationError, match="subclass Instrumentation"):
        Engine(InMemoryRunStore(), secret=b"x" * 32, instrumentation=[object()])  # type: ignore[list-item]


class ScopeOnly(Instrumentation):
    """Overrides attempt_scope alone: it still hears every attempt, with its operation."""

    def __init__(self) -> None:
        self.scoped: list[AttemptInfo] = []

    def attempt_scope(self, info: AttemptInfo) -> Any:
        self.scoped.append(info)
        return super().attempt_scope(info)


async def test_hooks_are_called_for_what_each_instrumentation_overrides() -> None:
    _tries.clear()
    scope_only, recorder = ScopeOnly(), Recorder()
    async with TestEnvironment(clock=FakeClock(), instrumentation=[scope_only, recorder]) as env:
        run = await env.run(retry_flow)
        await env.advance(timedelta(seconds=5))
        assert (await env.resume(run)).status == RunStatus.SUCCEEDED
    assert [
        (i.attempt, i.operation.name, i.operation.record.attempt) for i in scope_only.scoped
    ] == [
        (1, "flaky", 1),
        (2, "flaky", 2),
    ]
    # The scope of an attempt is given the attempt that started it.
    started = recorder.of("attempt_started")
    assert [(i.attempt, i.start_time) for i in started] == [
        (i.attempt, i.start_time) for i in scope_only.scoped
    ]
    assert len(recorder.of("attempt_ended")) == 2
