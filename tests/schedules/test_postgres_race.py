"""Two workers on one PostgreSQL store race over the same due ticks: each tick starts
exactly one run. Each worker has its own connection pool, as separate machines would."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from cadenza import Client, Engine, Overlap, RunStatus, Worker
from cadenza.adapters.postgres import PostgresRunStore
from cadenza.history import HistoryEventType
from cadenza.schedules import fire_due_schedules, run_id_for
from cadenza.testing import FakeClock
from tests.schedules.schedule_workflows import report

pytestmark = pytest.mark.postgres

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
SECRET = b"race-secret-0123456789abcdef"


@pytest.fixture
async def engines(postgres_url: str) -> AsyncIterator[tuple[Engine, Engine, FakeClock]]:
    url = f"{postgres_url}?schema=race_{uuid.uuid4().hex[:10]}&pool_max=4"
    clock = FakeClock(T0)
    stores = [PostgresRunStore.from_url(url), PostgresRunStore.from_url(url)]
    for store in stores:
        await store.open()
    first, second = (
        Engine(store, secret=SECRET, clock=clock, owner=f"w{i}") for i, store in enumerate(stores)
    )
    try:
        yield first, second, clock
    finally:
        for store in stores:
            await store.close()


async def test_racing_firings_start_each_tick_once(
    engines: tuple[Engine, Engine, FakeClock],
) -> None:
    first, second, clock = engines
    client = Client(first)
    for i in range(12):
        await client.put_schedule(
            f"s{i}",
            report,
            every=timedelta(minutes=1),
            input={"team": str(i)},
            overlap=Overlap.ALLOW,
            window=timedelta(seconds=40) if i % 2 else timedelta(0),
        )
    started = 0
    for _ in range(8):
        counts = await asyncio.gather(
            *(fire_due_schedules(engine) for engine in (first, second, first, second))
        )
        started += sum(counts)
        clock.advance(timedelta(seconds=30))
    runs = await second.store.list_runs(limit=1000)
    # Every tick up to the last look (3.5 minutes in) fired: the ones with no window at
    # 0, 1, 2 and 3 minutes; with a window, those whose drawn time had come.
    assert len(runs) == started
    expected = 0
    for i in range(12):
        s = await second.store.get_schedule(f"s{i}")
        ticks = [T0 + timedelta(minutes=m) for m in range(4)]
        fired = [t for t in ticks if run_id_for(s.name, t) in {r.run_id for r in runs}]
        assert fired == ticks[: len(fired)]
        expected += len(fired)
        if i % 2 == 0:
            assert len(fired) == 4
    assert expected == started
    for run in runs:
        history = await first.store.history(run.run_id)
        assert [e.type for e in history] == [HistoryEventType.EXECUTION_STARTED]


async def test_two_workers_fire_and_run_each_tick_once(
    engines: tuple[Engine, Engine, FakeClock],
) -> None:
    first, second, clock = engines
    client = Client(first)
    for i in range(4):
        await client.put_schedule(
            f"w{i}", report, cron="*/5 * * * *", input={"team": str(i)}, overlap=Overlap.ALLOW
        )
    stop = asyncio.Event()
    workers = [Worker(engine, poll_interval=0.02) for engine in (first, second)]
    tasks = [asyncio.create_task(w.run(stop=stop, grace=1)) for w in workers]
    try:
        for step in range(3):
            if step:
                clock.advance(timedelta(minutes=5))
            wanted = {run_id_for(f"w{i}", T0 + timedelta(minutes=5 * step)) for i in range(4)}
            for _ in range(1000):
                runs = {r.run_id: r for r in await first.store.list_runs(limit=1000)}
                if all(runs.get(w) and runs[w].status == RunStatus.SUCCEEDED for w in wanted):
                    break
                await asyncio.sleep(0.01)
            else:
                raise AssertionError(f"not all of {sorted(wanted)} ran: {runs}")
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    runs_now = await first.store.list_runs(limit=1000)
    assert len(runs_now) == 12
    for run in runs_now:
        starts = [
            e
            for e in await first.store.history(run.run_id)
            if e.type == HistoryEventType.EXECUTION_STARTED
        ]
        assert len(starts) == 1
