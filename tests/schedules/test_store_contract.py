"""The schedule methods of the run store port, against every adapter (SQLite, PostgreSQL,
in memory): what ``cadenza.ports.run_store`` promises for put, get, list, delete, pause,
the due query and the conditional firing."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta

import pytest

from cadenza.errors import ScheduleNotFound
from cadenza.history import HistoryEventType
from cadenza.ports.run_store import (
    CatchUp,
    Overlap,
    RunStore,
    Schedule,
    ScheduleFiring,
)
from tests.contract._support import at, new_run, started
from tests.contract.conftest import StoreFactory


def schedule(name: str = "nightly", *, due: float | None = 60, **changes: object) -> Schedule:
    s = Schedule(
        name=name,
        workflow="wf",
        expression="cron(0 2 * * *)",
        version="3",
        module="tests.contract:wf",
        input='{"n": 1}',
        timezone="Europe/Lisbon",
        window=timedelta(minutes=15, milliseconds=250),
        catch_up=CatchUp.ALL,
        catch_up_limit=4,
        overlap=Overlap.BUFFER_ONE,
        start_at=at(0),
        end_at=at(86400 * 30),
        next_fire_at=at(due) if due is not None else None,
        due_at=at(due + 1.5) if due is not None else None,
        created_at=at(0),
        updated_at=at(0),
    )
    return s.evolve(**changes)


def firing(s: Schedule, *ticks: float, now: float = 100, **changes: object) -> ScheduleFiring:
    runs = [(new_run(f"sched-{s.name}-{t:.0f}", created=now), started(now)) for t in ticks]
    f = ScheduleFiring(
        name=s.name,
        expected_revision=s.revision,
        now=at(now),
        next_fire_at=at(600),
        due_at=at(601),
        runs=runs,
        last_tick_at=at(ticks[-1]) if ticks else None,
        last_run_id=runs[-1][0].run_id if runs else None,
    )
    return replace(f, **changes)


async def test_a_schedule_reads_back_as_written(store: RunStore) -> None:
    stored = await store.put_schedule(schedule())
    assert stored == schedule(revision=1)
    assert await store.get_schedule("nightly") == stored
    assert await store.list_schedules() == [stored]


async def test_replacing_keeps_created_at_and_counts_revisions(store: RunStore) -> None:
    await store.put_schedule(schedule())
    replaced = await store.put_schedule(
        schedule(expression="rate(5 minutes)", created_at=at(50), paused=True)
    )
    assert replaced.revision == 2
    assert replaced.created_at == at(0)
    assert replaced.expression == "rate(5 minutes)"
    assert await store.get_schedule("nightly") == replaced


async def test_unknown_schedules_are_not_found(store: RunStore) -> None:
    with pytest.raises(ScheduleNotFound, match="cadenza schedules list"):
        await store.get_schedule("missing")
    with pytest.raises(ScheduleNotFound):
        await store.pause_schedule("missing", paused=True, now=at(1))
    assert await store.delete_schedule("missing") is False


async def test_list_is_by_name_and_delete_removes(store: RunStore) -> None:
    for name in ("b", "a", "c"):
        await store.put_schedule(schedule(name))
    assert [s.name for s in await store.list_schedules()] == ["a", "b", "c"]
    assert await store.delete_schedule("b") is True
    assert [s.name for s in await store.list_schedules()] == ["a", "c"]


async def test_due_schedules_are_the_unpaused_ones_whose_time_has_come(store: RunStore) -> None:
    await store.put_schedule(schedule("late", due=10))
    await store.put_schedule(schedule("early", due=5))
    await store.put_schedule(schedule("future", due=500))
    await store.put_schedule(schedule("paused", due=1, paused=True))
    await store.put_schedule(schedule("done", due=None))
    assert [s.name for s in await store.due_schedules(now=at(100), limit=10)] == [
        "early",
        "late",
    ]
    assert [s.name for s in await store.due_schedules(now=at(100), limit=1)] == ["early"]
    assert await store.due_schedules(now=at(0), limit=10) == []
    assert await store.next_schedule_due_at() == at(6.5)


async def test_pause_and_resume(store: RunStore) -> None:
    await store.put_schedule(schedule())
    paused = await store.pause_schedule("nightly", paused=True, now=at(20))
    assert (paused.paused, paused.revision, paused.resumed_at) == (True, 2, None)
    assert paused.updated_at == at(20)
    assert await store.due_schedules(now=at(1000), limit=10) == []
    assert await store.next_schedule_due_at() is None
    resumed = await store.pause_schedule("nightly", paused=False, now=at(30))
    assert (resumed.paused, resumed.revision, resumed.resumed_at) == (False, 3, at(30))
    again = await store.pause_schedule("nightly", paused=False, now=at(40))
    assert again.resumed_at == at(30)  # it was not paused: nothing resumed
    assert [s.name for s in await store.due_schedules(now=at(1000), limit=10)] == ["nightly"]


async def test_a_firing_creates_its_runs_and_moves_the_schedule_on(store: RunStore) -> None:
    s = await store.put_schedule(schedule())
    assert await store.fire_schedule(firing(s, 60, 70, buffered_tick=at(80))) is True
    moved = await store.get_schedule("nightly")
    assert moved.revision == s.revision + 1
    assert (moved.next_fire_at, moved.due_at, moved.buffered_tick) == (at(600), at(601), at(80))
    assert (moved.last_tick_at, moved.last_run_id) == (at(70), "sched-nightly-70")
    assert moved.updated_at == at(100)
    run = await store.get_run("sched-nightly-60")
    assert run == new_run("sched-nightly-60", created=100)
    [event] = await store.history("sched-nightly-70")
    assert event.type == HistoryEventType.EXECUTION_STARTED
    assert await store.due_schedules(now=at(500), limit=10) == []


async def test_a_firing_without_runs_keeps_the_last_run(store: RunStore) -> None:
    s = await store.put_schedule(schedule())
    assert await store.fire_schedule(firing(s, 60))
    s = await store.get_schedule("nightly")
    assert await store.fire_schedule(firing(s, next_fire_at=None, due_at=None))
    after = await store.get_schedule("nightly")
    assert (after.last_run_id, after.last_tick_at) == ("sched-nightly-60", at(60))
    assert (after.next_fire_at, after.due_at, after.buffered_tick) == (None, None, None)


async def test_a_stale_firing_writes_nothing(store: RunStore) -> None:
    s = await store.put_schedule(schedule())
    assert await store.fire_schedule(firing(s, 60))
    assert await store.fire_schedule(firing(s, 60, 61)) is False  # revision moved on
    assert [r.run_id for r in await store.list_runs()] == ["sched-nightly-60"]
    paused = await store.pause_schedule("nightly", paused=True, now=at(101))
    stale = await store.get_schedule("nightly")
    await store.pause_schedule("nightly", paused=False, now=at(102))
    assert await store.fire_schedule(firing(stale, 62)) is False
    assert (await store.get_schedule("nightly")).revision == paused.revision + 1
    await store.delete_schedule("nightly")
    assert await store.fire_schedule(firing(stale, 63)) is False
    assert [r.run_id for r in await store.list_runs()] == ["sched-nightly-60"]


async def test_a_tick_that_fired_before_is_not_started_again(store: RunStore) -> None:
    s = await store.put_schedule(schedule())
    assert await store.fire_schedule(firing(s, 60))
    # The schedule deleted and defined again: the same tick's run id is taken.
    await store.delete_schedule("nightly")
    s = await store.put_schedule(schedule())
    assert await store.fire_schedule(firing(s, 60, 70)) is True
    assert sorted(r.run_id for r in await store.list_runs()) == [
        "sched-nightly-60",
        "sched-nightly-70",
    ]
    assert len(await store.history("sched-nightly-60")) == 1


async def test_racing_firings_of_one_tick_start_one_run(store_factory: StoreFactory) -> None:
    first, second = store_factory(), store_factory()
    await first.open()
    await second.open()
    try:
        s = await first.put_schedule(schedule())
        results = await asyncio.gather(
            *(store.fire_schedule(firing(s, 60)) for store in (first, second, first, second))
        )
        assert sorted(results) == [False, False, False, True]
        assert [r.run_id for r in await second.list_runs()] == ["sched-nightly-60"]
        assert (await second.get_schedule("nightly")).revision == s.revision + 1
    finally:
        await first.close()
        await second.close()
