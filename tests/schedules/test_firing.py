"""Schedules over an engine: defining them, firing due ticks into linked runs, pausing,
overlap with a run still open, and a worker that fires them by itself. Time is a FakeClock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cadenza import (
    CatchUp,
    Client,
    Engine,
    Overlap,
    RunStatus,
    Schedule,
    ScheduleNotFound,
    SyncClient,
    Worker,
    drive,
)
from cadenza.errors import ConfigurationError, InvalidInput
from cadenza.history import HistoryEventType
from cadenza.schedules import fire_due_schedules, run_id_for
from cadenza.testing import FakeClock, InMemoryRunStore, TestEnvironment
from tests.schedules.schedule_workflows import report, slow

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)  # a Monday


@pytest.fixture(params=["sqlite", "memory"])
async def env(request: pytest.FixtureRequest) -> AsyncIterator[TestEnvironment]:
    store = InMemoryRunStore() if request.param == "memory" else None
    async with TestEnvironment(clock=FakeClock(T0), store=store) as env:
        yield env


def clock(env: TestEnvironment) -> FakeClock:
    assert isinstance(env.clock, FakeClock)
    return env.clock


async def test_a_due_tick_starts_one_linked_run(env: TestEnvironment) -> None:
    client = Client(env.engine)
    s = await client.put_schedule(
        "ops-report", report, cron="0 9 * * MON-FRI", input={"team": "ops"}
    )
    assert s.next_fire_at == T0 + timedelta(hours=1)
    assert await fire_due_schedules(env.engine) == 0  # not yet
    clock(env).advance(timedelta(hours=1))
    assert await fire_due_schedules(env.engine) == 1
    assert await fire_due_schedules(env.engine) == 0  # the tick fired once

    run_id = run_id_for("ops-report", T0 + timedelta(hours=1))
    assert run_id == "sched-ops-report-20260302T090000Z"
    run = await env.engine.store.get_run(run_id)
    assert run.state["metadata"]["schedule"] == {
        "name": "ops-report",
        "tick": "2026-03-02T09:00:00+00:00",
    }
    [started] = await env.engine.store.history(run_id)
    assert started.type == HistoryEventType.EXECUTION_STARTED
    assert started.details["schedule"] == "ops-report"
    assert started.details["scheduled_for"] == "2026-03-02T09:00:00+00:00"
    ended = await drive(env.engine, run_id)
    assert ended.status == RunStatus.SUCCEEDED
    assert await env.engine.result(run_id) == "report for ops"
    assert ended.state["metadata"]["schedule"]["name"] == "ops-report"  # kept by replay

    shown = await client.get_schedule("ops-report")
    assert shown.last_run_id == run_id
    assert shown.next_fire_at == T0 + timedelta(days=1, hours=1)
    replaced = await client.put_schedule(
        "ops-report", report, cron="0 10 * * *", input={"team": "ops"}
    )
    assert replaced.next_fire_at == T0 + timedelta(hours=2)
    assert (replaced.last_run_id, replaced.created_at) == (run_id, T0)


async def test_time_zone_and_window(env: TestEnvironment) -> None:
    client = Client(env.engine)
    s = await client.put_schedule(
        "ny",
        report,
        cron="30 9 * * *",
        timezone="America/New_York",
        window=timedelta(minutes=20),
        input={"team": "ny"},
    )
    assert s.next_fire_at == datetime(2026, 3, 2, 14, 30, tzinfo=UTC)  # 09:30 EST
    assert s.due_at is not None
    assert s.next_fire_at <= s.due_at < s.next_fire_at + timedelta(minutes=20)
    clock(env).advance(s.due_at - T0 - timedelta(seconds=1))
    assert await fire_due_schedules(env.engine) == 0
    clock(env).advance(timedelta(seconds=1))
    assert await fire_due_schedules(env.engine) == 1


async def test_paused_schedules_do_not_fire_nor_catch_up(env: TestEnvironment) -> None:
    client = Client(env.engine)
    await client.put_schedule(
        "r", report, every=timedelta(minutes=10), input={"team": "a"}, overlap=Overlap.ALLOW
    )
    assert await fire_due_schedules(env.engine) == 1  # a rate starts at once
    await client.pause_schedule("r")
    clock(env).advance(timedelta(minutes=35))
    assert await fire_due_schedules(env.engine) == 0
    resumed = await client.resume_schedule("r")
    assert resumed.paused is False
    assert resumed.next_fire_at == T0 + timedelta(minutes=40)  # not the missed 10, 20, 30
    assert await fire_due_schedules(env.engine) == 0  # the ticks missed while paused
    clock(env).advance(timedelta(minutes=5))
    assert await fire_due_schedules(env.engine) == 1
    runs = await env.engine.store.list_runs()
    assert sorted(r.run_id for r in runs) == [
        run_id_for("r", T0),
        run_id_for("r", T0 + timedelta(minutes=40)),
    ]


async def test_missed_ticks_are_caught_up_as_the_policy_says(env: TestEnvironment) -> None:
    client = Client(env.engine)
    for name, policy in (("latest", CatchUp.LATEST), ("all", CatchUp.ALL), ("none", CatchUp.NONE)):
        await client.put_schedule(
            name,
            report,
            every=timedelta(minutes=10),
            input={"team": name},
            catch_up=policy,
            catch_up_limit=3,
            overlap=Overlap.ALLOW,
            start_at=T0 + timedelta(minutes=10),
        )
    clock(env).advance(timedelta(minutes=65))  # ticks at 10, 20, …, 60 missed
    await fire_due_schedules(env.engine)
    fired = {
        name: sorted(
            r.run_id for r in await env.engine.store.list_runs() if f"-{name}-" in r.run_id
        )
        for name in ("latest", "all", "none")
    }
    assert fired["latest"] == [run_id_for("latest", T0 + timedelta(minutes=60))]
    assert fired["all"] == [run_id_for("all", T0 + timedelta(minutes=m)) for m in (40, 50, 60)]
    assert fired["none"] == []


async def test_overlap_skip_and_buffer_one(env: TestEnvironment) -> None:
    client = Client(env.engine)
    for name, overlap in (("skip", Overlap.SKIP), ("buffer", Overlap.BUFFER_ONE)):
        await client.put_schedule(name, slow, every=timedelta(minutes=40), overlap=overlap)
    assert await fire_due_schedules(env.engine) == 2
    for name in ("skip", "buffer"):  # each first run now waits an hour
        assert (await drive(env.engine, run_id_for(name, T0))).status == RunStatus.SUSPENDED
    clock(env).advance(timedelta(minutes=40))
    assert await fire_due_schedules(env.engine) == 0
    assert (await client.get_schedule("buffer")).buffered_tick == T0 + timedelta(minutes=40)
    assert (await client.get_schedule("skip")).buffered_tick is None

    clock(env).advance(timedelta(minutes=20))  # the first runs' hour is over
    for name in ("skip", "buffer"):
        assert (await drive(env.engine, run_id_for(name, T0))).status == RunStatus.SUCCEEDED
    clock(env).advance(timedelta(seconds=5))
    assert await fire_due_schedules(env.engine) == 1  # the buffered tick, now the run ended
    ids = {r.run_id for r in await env.engine.store.list_runs()}
    assert run_id_for("buffer", T0 + timedelta(minutes=40)) in ids
    assert run_id_for("skip", T0 + timedelta(minutes=40)) not in ids
    assert (await client.get_schedule("buffer")).buffered_tick is None

    clock(env).advance(timedelta(minutes=20))
    assert await fire_due_schedules(env.engine) == 1  # skip's next tick; buffer's is held
    ids = {r.run_id for r in await env.engine.store.list_runs()}
    assert run_id_for("skip", T0 + timedelta(minutes=80)) in ids
    assert (await client.get_schedule("buffer")).buffered_tick == T0 + timedelta(minutes=80)


async def test_two_engines_on_one_store_fire_each_tick_once(env: TestEnvironment) -> None:
    client = Client(env.engine)
    for i in range(5):
        await client.put_schedule(
            f"s{i}",
            report,
            every=timedelta(minutes=1),
            input={"team": str(i)},
            overlap=Overlap.ALLOW,
        )
    other = Engine(env.engine.store, secret=b"another-engine-secret", clock=env.clock)
    for _ in range(10):
        await asyncio.gather(fire_due_schedules(env.engine), fire_due_schedules(other))
        clock(env).advance(timedelta(minutes=1))
    runs = await env.engine.store.list_runs(limit=1000)
    assert len(runs) == 50
    assert len({r.run_id for r in runs}) == 50


async def test_a_worker_fires_schedules_and_executes_their_runs(env: TestEnvironment) -> None:
    client = Client(env.engine)
    await client.put_schedule("w", report, cron="*/5 * * * *", input={"team": "w"})
    stop = asyncio.Event()
    worker = Worker(env.engine, poll_interval=0.02)
    task = asyncio.create_task(worker.run(stop=stop, grace=1))
    try:
        for minutes in (0, 5, 10):
            run_id = run_id_for("w", T0 + timedelta(minutes=minutes))
            clock(env).advance(timedelta(minutes=5) if minutes else timedelta(0))
            for _ in range(500):
                try:
                    run = await env.engine.store.get_run(run_id)
                except Exception:
                    run = None
                if run is not None and run.status == RunStatus.SUCCEEDED:
                    break
                await asyncio.sleep(0.01)
            else:
                raise AssertionError(f"{run_id} did not run")
    finally:
        stop.set()
        await task
    assert len(await env.engine.store.list_runs()) == 3


async def test_bad_definitions_are_refused_and_nothing_stored(env: TestEnvironment) -> None:
    client = Client(env.engine)
    with pytest.raises(ConfigurationError, match="exactly one of"):
        await client.put_schedule("x", report, cron="0 9 * * *", every=timedelta(minutes=5))
    with pytest.raises(ConfigurationError, match="IANA"):
        await client.put_schedule("x", report, cron="0 9 * * *", timezone="Mars/Olympus")
    with pytest.raises(ConfigurationError, match="schedule name"):
        await client.put_schedule("no spaces", report, cron="0 9 * * *")
    with pytest.raises(ConfigurationError, match="whole, positive number of minutes"):
        await client.put_schedule("x", report, every=timedelta(seconds=90))
    with pytest.raises(InvalidInput):
        await client.put_schedule("x", report, cron="0 9 * * *", input={"wrong": 1})
    with pytest.raises(ScheduleNotFound):
        await client.pause_schedule("x")
    assert await client.list_schedules() == []
    assert await client.delete_schedule("x") is False


async def test_a_one_time_schedule_fires_once(env: TestEnvironment) -> None:
    client = Client(env.engine)
    s = await client.put_schedule(
        "once",
        report,
        at=datetime(2026, 3, 2, 10, 15),
        timezone="Europe/Lisbon",
        input={"team": "once"},
    )
    assert s.expression == "at(2026-03-02T10:15:00)"
    assert s.next_fire_at == datetime(2026, 3, 2, 10, 15, tzinfo=UTC)  # WET is UTC+0
    clock(env).advance(timedelta(days=3))
    assert await fire_due_schedules(env.engine) == 1
    after = await client.get_schedule("once")
    assert (after.next_fire_at, after.due_at) == (None, None)
    clock(env).advance(timedelta(days=3))
    assert await fire_due_schedules(env.engine) == 0


async def test_a_workflow_no_worker_can_import_waits_and_is_looked_at_later(
    env: TestEnvironment,
) -> None:
    store = env.engine.store
    await store.put_schedule(
        Schedule(
            name="ghost",
            workflow="ghost-workflow",
            module="tests.schedules.nowhere:ghost",
            expression="rate(5 minutes)",
            next_fire_at=T0,
            due_at=T0,
            created_at=T0,
        )
    )
    assert await fire_due_schedules(env.engine) == 0
    waiting = await store.get_schedule("ghost")
    assert waiting.next_fire_at == T0  # the tick is kept for a worker that has the workflow
    assert waiting.due_at == T0 + timedelta(seconds=60)
    assert await store.list_runs() == []


def test_the_sync_client_manages_schedules(tmp_path: Path) -> None:
    with SyncClient.open(store=f"sqlite:///{tmp_path / 'c.db'}", secret=b"s" * 32) as client:
        made = client.put_schedule("sync", report, cron="0 6 * * *", input={"team": "s"})
        assert [s.name for s in client.list_schedules()] == ["sync"]
        assert client.get_schedule("sync") == made
        assert client.pause_schedule("sync").paused is True
        assert client.resume_schedule("sync").paused is False
        assert client.delete_schedule("sync") is True
        assert client.list_schedules() == []
