"""An idle worker waits for news instead of spinning on work it cannot take, and hears about
new work through the store (``wait_for_work``) as soon as the store tells it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from cadenza import Context, workflow
from cadenza.adapters.sqlite import SqliteRunStore
from cadenza.config import open_engine
from cadenza.engine.engine import Engine
from cadenza.engine.worker import Worker
from cadenza.history import HistoryEvent, HistoryEventType
from cadenza.ports.run_store import QueueConfig, RunRecord, RunStatus


@workflow(name="idle-test-noop", queue="elsewhere")
async def noop(ctx: Context) -> int:
    return 1


class CountingStore(SqliteRunStore):
    """Counts claims; its ``wait_for_work`` returns when ``news`` is set."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, synchronous="NORMAL")
        self.claims = 0
        self.news = asyncio.Event()

    async def claim_runs(self, **kwargs: Any) -> list[RunRecord]:
        self.claims += 1
        return await super().claim_runs(**kwargs)

    async def wait_for_work(self, max_wait: float) -> None:
        try:
            await asyncio.wait_for(self.news.wait(), max_wait)
        except TimeoutError:
            pass
        self.news.clear()


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[Engine]:
    store = CountingStore(tmp_path / "c.db")
    engine = await open_engine(
        store=store, artifacts=f"file://{tmp_path / 'a'}", secret=b"idle-test-secret-0123456789"
    )
    try:
        yield engine
    finally:
        await engine.close()


async def work_for(engine: Engine, worker: Worker, seconds: float) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop=stop))
    await asyncio.sleep(seconds)
    stop.set()
    await task


def claims(engine: Engine) -> int:
    store = engine.store
    assert isinstance(store, CountingStore)
    return store.claims


async def test_runs_of_other_queues_do_not_make_a_worker_spin(engine: Engine) -> None:
    await engine.start(noop)  # runnable, but not in this worker's queue
    await work_for(engine, Worker(engine, queues=["mine"], poll_interval=0.5), 1.2)
    assert claims(engine) <= 5  # about one per poll interval, not thousands


async def test_a_capped_queue_does_not_make_a_worker_spin(engine: Engine) -> None:
    await engine.store.put_queue(QueueConfig("elsewhere", concurrency=0))
    await engine.start(noop)
    await work_for(engine, Worker(engine, poll_interval=0.5), 1.2)
    assert claims(engine) <= 5
    assert (await engine.store.list_runs())[0].status == RunStatus.PENDING


async def test_word_from_the_store_wakes_an_idle_worker(engine: Engine) -> None:
    store = engine.store
    assert isinstance(store, CountingStore)
    stop = asyncio.Event()
    worker = Worker(engine, poll_interval=30)
    task = asyncio.create_task(worker.run(stop=stop))
    await asyncio.sleep(0.3)
    # Another process starts a run: this engine is not poked, only the store tells.
    other = SqliteRunStore(store.path, synchronous="NORMAL")
    await other.open()
    started = time.monotonic()
    run = RunRecord(
        run_id="r-from-elsewhere",
        workflow="idle-test-noop",
        version="1",
        status=RunStatus.PENDING,
        input="null",
        created_at=datetime.now().astimezone(),
        updated_at=datetime.now().astimezone(),
        queue="elsewhere",
    )
    await other.create_run(run, HistoryEvent(0, HistoryEventType.EXECUTION_STARTED, run.created_at))
    await other.close()
    store.news.set()
    for _ in range(100):
        if (await store.get_run("r-from-elsewhere")).status == RunStatus.SUCCEEDED:
            break
        await asyncio.sleep(0.05)
    assert (await store.get_run("r-from-elsewhere")).status == RunStatus.SUCCEEDED
    assert time.monotonic() - started < 5  # not the 30 s poll interval
    stop.set()
    await task
