"""A budget whose action is "pause": the model call that finds it spent parks the run on a
durable ``budget`` callback until the window ends (or an operator succeeds the callback),
then asks again; one event per pause; the same journal on every replay."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from cadenza import Context, RunStatus, workflow
from cadenza.agents import call_model
from cadenza.journal import OpStatus, OpType
from cadenza.models import register_price
from cadenza.ports.run_store import RunRecord
from cadenza.telemetry._costs import (
    BUDGET_EVENT,
    CostConfig,
    SpendGuard,
    SpendLimit,
    read_costs,
)
from cadenza.testing import FakeClock, ScriptedModel, TestEnvironment
from tests._cli import cadenza_in, cli_env

MODEL = ScriptedModel(default="one two three", name="scripted:pausing")  # 3 output tokens
# $1 per input token, $2 per output token: each call below ("draft x", 2 tokens in) is $8.
register_price("scripted:pausing", input=1_000_000.0, output=2_000_000.0)
MORNING = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
MIDNIGHT = datetime(2026, 11, 27, tzinfo=UTC)
SCOPE = "workflow:paused-drafts"
BUDGET_CALLBACK = "budget:workflow:paused-drafts"


@workflow(name="paused-drafts")
async def paused_drafts(ctx: Context, topic: str) -> str:
    return (await call_model(ctx, MODEL, f"draft {topic}", name="draft")).text


def guard(usd: float = 12.0, action: str = "pause") -> SpendGuard:
    spend_guard = SpendGuard(CostConfig({SCOPE: SpendLimit(usd, "day", action)}))
    spend_guard.refresh = 0  # read the spend afresh for every call
    return spend_guard


async def spend_the_budget(env: TestEnvironment) -> RunRecord:
    """Two runs spend $16 of the $12 (the second was allowed); the third is refused."""
    for topic in ("a", "b"):
        assert (await env.run(paused_drafts, topic)).status == RunStatus.SUCCEEDED
    return await env.run(paused_drafts, "c")


async def budget_events(env: TestEnvironment) -> list[dict[str, Any]]:
    events = [e.event for e in await env.engine.store.list_events(limit=100)]
    return [e for e in events if e["detail-type"] == BUDGET_EVENT]


async def test_a_paused_run_waits_for_the_window_and_goes_on() -> None:
    clock = FakeClock(MORNING)
    async with TestEnvironment(clock=clock) as env:
        env.engine.spend_guard = guard()
        paused = await spend_the_budget(env)
        assert paused.status == RunStatus.SUSPENDED  # not failed: parked, holding no worker
        [wait] = await env.engine.pending_callbacks(paused)
        assert wait.name == BUDGET_CALLBACK and wait.expires_at == MIDNIGHT
        journal = await env.engine.store.load_journal(paused.run_id)
        [refused] = [op for op in journal if op.name == "draft"]
        assert refused.status == OpStatus.FAILED and refused.error is not None
        assert refused.error.type == "BudgetExceeded"
        assert refused.error.details["action"] == "pause"
        # What the history says tells a person why the run waits and what to do.
        message = refused.error.message
        assert "workflow paused-drafts has spent $16.0000" in message
        assert message.startswith("the run pauses until 2026-11-27 00:00 UTC")
        assert "costs.toml" in message and f"cadenza runs show {paused.run_id}" in message
        assert "cadenza callback succeed" in message

        [event] = await budget_events(env)
        assert event["run_id"] == paused.run_id
        assert event["detail"] == {
            "scope": SCOPE,
            "action": "pause",
            "limit_usd": 12.0,
            "spent_usd": 16.0,
            "window_start": "2026-11-26T00:00:00+00:00",
            "window_end": MIDNIGHT.isoformat(),
            "resume_at": MIDNIGHT.isoformat(),
            "run_id": paused.run_id,
            "op_id": refused.op_id,
        }

        await env.advance(timedelta(hours=13, minutes=59))
        assert (await env.resume(paused)).status == RunStatus.SUSPENDED  # not yet
        await env.advance(timedelta(minutes=1))  # midnight: a new window, nothing spent
        done = await env.resume(paused)
        assert done.status == RunStatus.SUCCEEDED
        assert await env.result(done) == "one two three"
        assert len(await budget_events(env)) == 1  # one pause, one event
        kinds = [
            (op.type, op.name, op.status)
            for op in await env.engine.store.load_journal(paused.run_id)
            if op.parent_id is None
        ]
        assert kinds == [
            (OpType.STEP, "draft", OpStatus.FAILED),
            (OpType.CALLBACK, BUDGET_CALLBACK, OpStatus.FAILED),  # timed out: window over
            (OpType.STEP, "draft", OpStatus.SUCCEEDED),
        ]
        # The run replays the same: the refusal, the wait and the second call are read back.
        [check] = [
            r for r in await env.engine.replay_check(paused_drafts) if r.run_id == done.run_id
        ]
        assert check.compatible, check


async def test_a_window_spent_again_by_the_time_it_is_due_pauses_the_run_again() -> None:
    async with TestEnvironment(clock=FakeClock(MORNING)) as env:
        env.engine.spend_guard = guard()
        paused = await spend_the_budget(env)
        await env.advance(timedelta(hours=14))
        for topic in ("d", "e"):  # the new day's budget is spent before the run wakes
            assert (await env.run(paused_drafts, topic)).status == RunStatus.SUCCEEDED
        again = await env.resume(paused)
        assert again.status == RunStatus.SUSPENDED
        [wait] = await env.engine.pending_callbacks(again)
        assert wait.expires_at == MIDNIGHT + timedelta(days=1)  # the next window, not now
        assert sorted(e["detail"]["resume_at"] for e in await budget_events(env)) == [
            MIDNIGHT.isoformat(),
            (MIDNIGHT + timedelta(days=1)).isoformat(),
        ]


async def test_an_operator_resumes_a_paused_run_early_after_raising_the_budget(
    tmp_path: Path,
) -> None:
    costs = tmp_path / "costs.toml"
    costs.write_text(f'[budgets."{SCOPE}"]\nusd = 12.0\nper = "day"\naction = "pause"\n')
    async with TestEnvironment(clock=FakeClock(MORNING)) as env:
        env.engine.spend_guard = SpendGuard(read_costs(costs), refresh=timedelta(0))
        paused = await spend_the_budget(env)
        assert paused.status == RunStatus.SUSPENDED

        # Resumed without raising the budget: the call asks again, is refused again, and
        # the run pauses again with another event, not in a loop.
        await env.succeed(await env.token(paused))
        again = await env.resume(paused)
        assert again.status == RunStatus.SUSPENDED
        assert len(await budget_events(env)) == 2
        [wait] = await env.engine.pending_callbacks(again)
        assert wait.name == BUDGET_CALLBACK and wait.expires_at == MIDNIGHT

        # Raised in costs.toml: the running engine reads the file again.
        costs.write_text(f'[budgets."{SCOPE}"]\nusd = 50.0\nper = "day"\naction = "pause"\n')
        os.utime(costs, (costs.stat().st_atime, costs.stat().st_mtime + 10))
        await env.succeed(await env.token(paused))
        done = await env.resume(paused)
        assert done.status == RunStatus.SUCCEEDED
        assert len(await budget_events(env)) == 2
        [check] = [
            r for r in await env.engine.replay_check(paused_drafts) if r.run_id == done.run_id
        ]
        assert check.compatible, check


async def test_failing_the_budget_callback_stops_the_run_as_a_stop_budget_does() -> None:
    async with TestEnvironment(clock=FakeClock(MORNING)) as env:
        env.engine.spend_guard = guard()
        paused = await spend_the_budget(env)
        await env.fail(await env.token(paused), message="not worth it")
        stopped = await env.resume(paused)
        assert stopped.status == RunStatus.FAILED and stopped.error is not None
        assert "BudgetExceeded" in f"{stopped.error.type} {stopped.error.message}"


async def test_a_stop_budget_still_fails_the_call() -> None:
    async with TestEnvironment(clock=FakeClock(MORNING)) as env:
        env.engine.spend_guard = guard(action="stop")
        stopped = await spend_the_budget(env)
        assert stopped.status == RunStatus.FAILED and stopped.error is not None
        assert "BudgetExceeded" in f"{stopped.error.type} {stopped.error.message}"
        assert await env.engine.pending_callbacks(stopped) == []
        [event] = await budget_events(env)
        assert event["detail"]["action"] == "stop" and event["detail"]["resume_at"] is None


async def test_a_run_stopped_while_paused_resumes_in_another_process(tmp_path: Path) -> None:
    """Nothing of the pause lives in memory: an engine opened afresh on the store (a worker
    started after the first one died) replays the refusal and the wait and goes on."""
    clock = FakeClock(MORNING)
    store = f"sqlite:///{tmp_path / 'runs.db'}"
    async with TestEnvironment(clock=clock, store=store) as first:
        first.engine.spend_guard = guard()
        paused = await spend_the_budget(first)
        assert paused.status == RunStatus.SUSPENDED
        [check] = [
            r for r in await first.engine.replay_check(paused_drafts) if r.run_id == paused.run_id
        ]
        assert check.compatible, check  # a replay while paused asks for the same callback
    clock.advance(timedelta(hours=14))
    async with TestEnvironment(clock=clock, store=store) as second:
        second.engine.spend_guard = guard()
        done = await second.resume(paused.run_id)
        assert done.status == RunStatus.SUCCEEDED
        assert await second.result(done) == "one two three"
        assert len(await budget_events(second)) == 1


def test_a_paused_run_as_the_command_line_shows_and_resumes_it(tmp_path: Path) -> None:
    costs = tmp_path / "costs.toml"
    costs.write_text(
        '[prices."scripted:pausing"]\ninput = 1000000.0\noutput = 2000000.0\n'
        f'[budgets."{SCOPE}"]\nusd = 12.0\nper = "day"\naction = "pause"\n'
    )
    cadenza = cadenza_in(tmp_path)
    seeded = subprocess.run(
        [sys.executable, "-c", SEED],
        capture_output=True,
        text=True,
        env=cli_env(tmp_path),
        timeout=60,
        cwd=tmp_path,
    )
    assert seeded.returncode == 0, seeded.stderr
    run_id = seeded.stdout.strip()
    shown = cadenza("runs", "show", run_id)
    assert shown.returncode == 0, shown.stderr
    assert f"waiting for callback {BUDGET_CALLBACK}" in shown.stdout
    assert "cadenza callback succeed" in shown.stdout
    history = cadenza("runs", "history", run_id)
    assert "BudgetExceeded" in history.stdout and "the run pauses until" in history.stdout
    budgets = json.loads(cadenza("costs", "budgets", "--json").stdout)
    assert budgets["budgets"][0]["action"] == "pause"

    costs.write_text(costs.read_text().replace("usd = 12.0", "usd = 100.0"))
    [wait] = json.loads(cadenza("runs", "show", run_id, "--json").stdout)["waiting_for"]
    resumed = cadenza("callback", "succeed", wait["token"], "--json")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["status"] == "SUCCEEDED"


SEED = """
import asyncio
from cadenza import open_engine
from cadenza.engine.worker import drive
from tests.telemetry.test_budget_pause import paused_drafts

async def main():
    engine = await open_engine()
    engine.spend_guard.refresh = 0  # the third run sees what the first two spent
    for topic in ("a", "b", "c"):
        run = await engine.start(paused_drafts, topic)
        run = await drive(engine, run.run_id)
    print(run.run_id)
    await engine.close()

asyncio.run(main())
"""


@pytest.mark.parametrize("action", ["halt", 3])
def test_an_unknown_action_says_what_is_allowed(tmp_path: Path, action: object) -> None:
    from cadenza.errors import ConfigurationError

    costs = tmp_path / "costs.toml"
    value = json.dumps(action)
    costs.write_text(f'[budgets."{SCOPE}"]\nusd = 1.0\naction = {value}\n')
    with pytest.raises(ConfigurationError, match="action must be 'stop' or 'pause'"):
        read_costs(costs)
