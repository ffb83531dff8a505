"""Finished child contexts, map items and parallel branches are not called again on replay
(as in AWS durable executions): they return their recorded outcome, and the state document
gets back the changes they recorded. Children that had not finished run again."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest

from cadenza import ChildContextFailed, Context, RunStatus
from cadenza.ports.run_store import RunRecord
from cadenza.testing import TestEnvironment
from cadenza.workflow import define, register

calls: Counter[str] = Counter()

# Bookkeeping that differs between activations by design.
_VOLATILE = ("lastUpdated", "invocationCount", "leaseEpoch")


@pytest.fixture(autouse=True)
def fresh_calls() -> None:
    """Each test counts its own calls; the branches' events start unset."""
    calls.clear()
    a_done.clear()
    b_wrote_first.clear()


def defined(fn: Any, name: str) -> Any:
    definition = define(fn, name=name)
    register(definition)
    return definition


def comparable(state: dict[str, Any]) -> dict[str, Any]:
    metadata = {k: v for k, v in state.get("metadata", {}).items() if k not in _VOLATILE}
    return {**state, "metadata": metadata}


async def resumed_after(env: TestEnvironment, run: RunRecord, seconds: float) -> RunRecord:
    """The run after ``seconds`` pass: its next activation."""
    await env.advance(seconds)
    return await env.resume(run)


async def stored_state(env: TestEnvironment, run_id: str) -> dict[str, Any]:
    return comparable((await env.engine.store.get_run(run_id)).state or {})


async def tally(ctx: Context, label: str) -> str:
    calls[label] += 1
    ctx.state.context["slots"][label] = calls[label]
    ctx.state.plan.append({"action": label})
    return f"{label} done"


# --- run_in_child_context -------------------------------------------------------------


async def sequence(ctx: Context) -> list[str]:
    first = await ctx.run_in_child_context(tally, "first", name="first")
    await ctx.wait(timedelta(seconds=10), name="pause")
    ctx.state["after_pause"] = True
    await ctx.wait(timedelta(seconds=10), name="pause-again")
    second = await ctx.run_in_child_context(tally, "second", name="second")
    return [first, second, await ctx.step(lambda: "tail", name="tail")]


SEQUENCE = defined(sequence, "t-child-replay-sequence")


async def test_a_finished_child_is_not_called_again_and_its_state_changes_come_back(
    fake_env: TestEnvironment,
) -> None:
    run = await fake_env.run(SEQUENCE)
    assert run.status == RunStatus.SUSPENDED
    first_state = await stored_state(fake_env, run.run_id)
    assert first_state["context"]["slots"] == {"first": 1}
    run = await resumed_after(fake_env, run, 10)
    run = await resumed_after(fake_env, run, 10)
    assert await fake_env.result(run) == ["first done", "second done", "tail"]
    # Three activations, each body once: the side effect did not repeat on replay.
    assert calls == Counter({"first": 1, "second": 1})
    state = await stored_state(fake_env, run.run_id)
    assert state["context"]["slots"] == {"first": 1, "second": 1}
    assert state["plan"] == [{"action": "first"}, {"action": "second"}]
    assert state["after_pause"] is True
    # The ids of the parent's later operations did not move.
    ops = await fake_env.engine.store.load_journal(run.run_id)
    journal = {op.op_id: (str(op.type), op.name) for op in ops}
    assert journal["1"] == ("context", "first") and journal["2"] == ("wait", "pause")
    assert journal["4"] == ("context", "second") and journal["5"] == ("step", "tail")


async def failing(ctx: Context) -> None:
    calls["failing"] += 1
    ctx.state["tried"] = calls["failing"]
    raise ValueError("the supplier said no")


async def catches(ctx: Context) -> str:
    try:
        await ctx.run_in_child_context(failing, name="risky")
    except ChildContextFailed as exc:
        ctx.state["caught"] = exc.error_type
    await ctx.wait(timedelta(seconds=5), name="pause")
    return str(ctx.state["caught"])


CATCHES = defined(catches, "t-child-replay-failed")


async def test_a_failed_child_raises_its_recorded_error_without_running_again(
    fake_env: TestEnvironment,
) -> None:
    run = await fake_env.run(CATCHES)
    run = await resumed_after(fake_env, run, 5)
    assert await fake_env.result(run) == "ValueError"
    assert calls["failing"] == 1
    state = await stored_state(fake_env, run.run_id)
    assert state["tried"] == 1 and state["caught"] == "ValueError"


# --- nested and unfinished children -----------------------------------------------------


async def outer(ctx: Context) -> str:
    calls["outer"] += 1
    inner = await ctx.run_in_child_context(tally, "inner", name="inner")
    await ctx.wait(timedelta(seconds=10), name="outer-pause")  # the outer child suspends
    return f"outer saw {inner}"


async def nesting(ctx: Context) -> list[str]:
    result = await ctx.run_in_child_context(outer, name="outer")
    await ctx.wait(timedelta(seconds=10), name="pause")
    return [result, await ctx.run_in_child_context(tally, "last", name="last")]


NESTING = defined(nesting, "t-child-replay-nested")


async def test_an_unfinished_child_runs_again_and_its_finished_children_do_not(
    fake_env: TestEnvironment,
) -> None:
    run = await fake_env.run(NESTING)
    assert calls == Counter({"outer": 1, "inner": 1})
    run = await resumed_after(fake_env, run, 10)  # the outer child finishes now: it ran again
    assert calls == Counter({"outer": 2, "inner": 1})
    run = await resumed_after(fake_env, run, 10)  # both finished: neither runs
    assert await fake_env.result(run) == ["outer saw inner done", "last done"]
    assert calls == Counter({"outer": 2, "inner": 1, "last": 1})
    state = await stored_state(fake_env, run.run_id)
    assert state["context"]["slots"] == {"inner": 1, "last": 1}
    assert state["plan"] == [{"action": "inner"}, {"action": "last"}]


# --- map items and parallel branches ----------------------------------------------------


async def item(ctx: Context, n: int) -> int:
    calls[f"item-{n}"] += 1
    ctx.state.context["results"][str(n)] = n * n
    if n == 2:
        await ctx.wait(timedelta(seconds=10), name="slow")
    return n * n


async def mapping(ctx: Context) -> list[Any]:
    batch = await ctx.map([1, 2, 3], item, name="squares")
    await ctx.wait(timedelta(seconds=10), name="pause")
    return batch.results()


MAPPING = defined(mapping, "t-child-replay-map")


async def test_finished_map_items_are_not_called_again(fake_env: TestEnvironment) -> None:
    run = await fake_env.run(MAPPING)
    assert run.status == RunStatus.SUSPENDED  # item 2 waits
    run = await resumed_after(fake_env, run, 10)  # items 1 and 3 are skipped, item 2 runs again
    assert calls == Counter({"item-1": 1, "item-2": 2, "item-3": 1})
    run = await resumed_after(fake_env, run, 10)  # the finished batch: no item runs
    assert await fake_env.result(run) == [1, 4, 9]
    assert calls == Counter({"item-1": 1, "item-2": 2, "item-3": 1})
    state = await stored_state(fake_env, run.run_id)
    assert state["context"]["results"] == {"1": 1, "2": 4, "3": 9}


async def branch_a(ctx: Context) -> str:
    calls["a"] += 1
    ctx.state.context["conversation"].append({"from": "a"})
    return "a"


async def branch_b(ctx: Context) -> str:
    calls["b"] += 1
    await ctx.wait(timedelta(seconds=10), name="b-wait")
    ctx.state.context["conversation"].append({"from": "b"})
    return "b"


async def fan_out(ctx: Context) -> list[Any]:
    batch = await ctx.parallel({"a": branch_a, "b": branch_b})
    await ctx.wait(timedelta(seconds=10), name="pause")
    ctx.state["done"] = True
    return batch.results()


FAN_OUT = defined(fan_out, "t-child-replay-parallel")


async def test_finished_parallel_branches_are_not_called_again_and_the_state_matches(
    fake_env: TestEnvironment,
) -> None:
    run = await fake_env.run(FAN_OUT)
    run = await resumed_after(fake_env, run, 10)
    assert calls == Counter({"a": 1, "b": 2})
    live = await stored_state(fake_env, run.run_id)  # as the activation that ran them left it
    run = await resumed_after(fake_env, run, 10)
    assert await fake_env.result(run) == ["a", "b"]
    assert calls == Counter({"a": 1, "b": 2})
    replayed = await stored_state(fake_env, run.run_id)
    assert replayed == {**live, "done": True, "status": replayed["status"]}
    assert replayed["context"]["conversation"] == [{"from": "a"}, {"from": "b"}]


async def test_a_replay_check_passes_over_finished_children(fake_env: TestEnvironment) -> None:
    run = await fake_env.run(SEQUENCE)
    run = await resumed_after(fake_env, run, 10)
    run = await resumed_after(fake_env, run, 10)
    assert run.status == RunStatus.SUCCEEDED
    checks = await fake_env.engine.replay_check(SEQUENCE)
    assert [c.compatible for c in checks if c.run_id == run.run_id] == [True]
    assert calls == Counter({"first": 1, "second": 1})


# --- the order in which concurrent branches finished ----------------------------------

a_done = asyncio.Event()
b_wrote_first = asyncio.Event()


async def yield_once() -> None:
    await asyncio.sleep(0)


async def wait_for_b() -> None:
    await b_wrote_first.wait()


async def wait_for_a() -> None:
    await a_done.wait()


async def writes_twice(ctx: Context) -> str:
    """Index 0; finishes last, in a later activation: it writes "first" before branch 1
    finishes and "second" after, then waits."""
    calls["twice"] += 1
    await ctx.step(yield_once)
    ctx.state["b"] = "first"
    b_wrote_first.set()
    await ctx.step(wait_for_a)
    ctx.state["b"] = "second"
    await ctx.wait(timedelta(seconds=10), name="b-wait")
    return "b"


async def finishes_early(ctx: Context) -> str:
    """Index 1; finishes in the first activation, while index 0 is half way."""
    calls["early"] += 1
    await ctx.step(wait_for_b)
    ctx.state["a"] = "done"
    a_done.set()
    return "a"


async def interleaved(ctx: Context) -> list[Any]:
    batch = await ctx.parallel([writes_twice, finishes_early])
    return [batch.results(), ctx.state["a"], ctx.state["b"]]


INTERLEAVED = defined(interleaved, "t-child-replay-interleaved")


async def test_a_branch_that_finished_first_does_not_undo_a_later_write_of_another(
    fake_env: TestEnvironment,
) -> None:
    run = await fake_env.run(INTERLEAVED)
    assert run.status == RunStatus.SUSPENDED
    assert (await stored_state(fake_env, run.run_id))["b"] == "second"
    ops = {op.op_id: op for op in await fake_env.engine.store.load_journal(run.run_id)}
    assert ops["1.2"].status == "SUCCEEDED" and not ops["1.1"].status.terminal
    run = await resumed_after(fake_env, run, 10)
    # Branch 1 was not called again; its changes (which saw "first") were given back
    # before branch 0 ran again and wrote "second" over them, as it had live.
    assert await fake_env.result(run) == [["b", "a"], "done", "second"]
    assert calls == Counter({"twice": 2, "early": 1})
    assert (await stored_state(fake_env, run.run_id))["b"] == "second"


# --- large changes --------------------------------------------------------------------


async def writes_a_lot(ctx: Context) -> int:
    calls["lot"] += 1
    ctx.state["transcript"] = "word " * 4000
    return 1


async def big_changes(ctx: Context) -> int:
    await ctx.run_in_child_context(writes_a_lot, name="transcribe")
    await ctx.wait(timedelta(seconds=1), name="pause")
    return len(ctx.state["transcript"])


BIG_CHANGES = defined(big_changes, "t-child-replay-big-changes")


async def test_large_state_changes_are_claim_checked_and_given_back() -> None:
    from cadenza.testing import FakeClock

    async with TestEnvironment(clock=FakeClock(), claim_check_bytes=1024) as env:
        run = await env.run(BIG_CHANGES)
        ops = {op.op_id: op for op in await env.engine.store.load_journal(run.run_id)}
        assert ops["1"].data["state_changes"].startswith("@artifact ")
        run = await resumed_after(env, run, 1)
        assert await env.result(run) == 20000
        # A fork copies the record, and the claim-checked changes into its own scope.
        fork = await env.engine.fork(run.run_id, from_op="2")
        fork = await env.resume(fork)
        fork = await resumed_after(env, fork, 1)
        assert await env.result(fork) == 20000
    assert calls["lot"] == 1
