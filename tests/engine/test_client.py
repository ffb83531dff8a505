"""The public client: start and execute runs, wait for typed results, complete callbacks,
cancel, retry and fork through a run's handle, and the blocking SyncClient."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from cadenza import (
    CallbackAlreadyCompleted,
    Client,
    Context,
    InvalidCallbackToken,
    InvalidInput,
    PendingCallback,
    RetryPolicy,
    RunFailed,
    RunHandle,
    RunNotFound,
    RunStateError,
    RunStatus,
    StepContext,
    SyncClient,
    Worker,
    workflow,
)
from cadenza.cli.runs import pending_waits

SECRET = b"client-tests-secret-0123456789"
calls: Counter[str] = Counter()
broken: set[str] = set()


@pytest.fixture(autouse=True)
def _reset() -> None:
    calls.clear()
    broken.clear()


def backends(tmp_path: Path) -> dict[str, Any]:
    return {
        "store": f"sqlite:///{tmp_path / 'cadenza.db'}",
        "artifacts": f"file://{tmp_path / 'artifacts'}",
        "secret": SECRET,
    }


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[Client]:
    async with await Client.open(**backends(tmp_path), poll_interval=timedelta(seconds=5)) as c:
        yield c


class Quote(BaseModel):
    item: str
    price_cents: int


async def price(step: StepContext, item: str) -> int:
    calls[item] += 1
    if item in broken:
        raise RuntimeError(f"no price for {item}")
    return len(item) * 100


@workflow(name="t-client-quote")
async def quote(ctx: Context, item: str) -> Quote:
    cents = await ctx.step(price, item, retry=RetryPolicy(max_attempts=1))
    ctx.state["quoted"] = item
    return Quote(item=item, price_cents=cents)


async def keep_token(step: StepContext, token: str) -> None:
    calls["asked"] += 1


@workflow(name="t-client-approval")
async def approval(ctx: Context, amount: int) -> dict[str, object]:
    decision = await ctx.wait_for_callback(keep_token, name="approval", timeout=timedelta(hours=1))
    return {"amount": amount, "by": decision["by"]}


@workflow(name="t-client-nested")
async def nested(ctx: Context, amount: int) -> dict[str, object]:
    return await ctx.invoke(approval, amount, name="child")  # type: ignore[no-any-return]


async def waits_of(handle: RunHandle) -> list[PendingCallback]:
    """What the run waits on, once it exists and waits: woken by the engine when a run
    starts or suspends in this process."""
    suspended = handle.client.engine.wakeup_event()
    try:
        while True:
            suspended.clear()
            with contextlib.suppress(RunNotFound):  # execute_run's task has not started it
                if waits := await handle.pending_callbacks():
                    return waits
            await asyncio.wait_for(suspended.wait(), 5)
    finally:
        handle.client.engine.drop_wakeup_event(suspended)


async def test_execute_run_returns_the_typed_output(client: Client) -> None:
    result = await client.execute_run(quote, "lamp")
    assert result == Quote(item="lamp", price_cents=400)
    assert isinstance(result, Quote)


async def test_start_run_leaves_the_run_to_a_worker_in_this_process(client: Client) -> None:
    handle = await client.start_run(quote, "desk", idempotency_key="q:desk")
    assert await handle.status() == RunStatus.PENDING
    with pytest.raises(RunStateError, match=r"has not ended within 0:00:00.05.*PENDING"):
        await handle.result(timeout=timedelta(milliseconds=50))
    assert calls["desk"] == 0  # waiting on a handle executes nothing

    stop = asyncio.Event()
    worker = asyncio.create_task(Worker(client.engine, poll_interval=30).run(stop=stop))
    try:
        # The poll interval (5 s) and the worker's (30 s) are far longer than the test's
        # timeout: the result arrives through the engine's wake-up, not by polling.
        started = time.monotonic()
        result = await handle.result(timeout=timedelta(seconds=3))
        assert time.monotonic() - started < 3
    finally:
        stop.set()
        await worker
    assert result == Quote(item="desk", price_cents=400)
    assert (await handle.state())["quoted"] == "desk"
    assert (await handle.describe()).idempotency_key == "q:desk"
    assert "ExecutionSucceeded" in [str(e.type) for e in await handle.history()]
    again = await client.start_run(quote, "desk", idempotency_key="q:desk")
    assert again.run_id == handle.run_id
    assert [r.run_id for r in await client.list_runs(workflow=quote)] == [handle.run_id]


async def test_a_handle_from_get_handle_decodes_by_the_registered_workflow(
    client: Client,
) -> None:
    run_id = (await client.start_run(quote, "mug", run_id="r-mug")).run_id
    await client.execute_run(quote, "cup")
    handle = client.get_handle(run_id)
    stop = asyncio.Event()
    worker = asyncio.create_task(Worker(client.engine).run(stop=stop))
    try:
        assert await handle.result(timeout=timedelta(seconds=5)) == Quote(
            item="mug", price_cents=300
        )
    finally:
        stop.set()
        await worker
    assert await client.get_handle(run_id, result_type=dict).result() == {
        "item": "mug",
        "price_cents": 300,
    }


async def test_a_failed_run_raises_run_failed_and_retries_through_its_handle(
    client: Client,
) -> None:
    broken.add("vase")
    with pytest.raises(RunFailed, match="no price for vase") as caught:
        await client.execute_run(quote, "vase", run_id="r-vase")
    assert caught.value.run_id == "r-vase"
    handle = client.get_handle("r-vase")
    assert await handle.status() == RunStatus.FAILED
    with pytest.raises(RunFailed):
        await handle.result()

    broken.clear()
    assert await handle.retry() is handle
    assert await handle.status() == RunStatus.PENDING
    with pytest.raises(RunStateError, match="has not ended"):
        await handle.result(timeout=timedelta(0))
    await handle.drive()
    assert await handle.result() == Quote(item="vase", price_cents=400)
    assert calls["vase"] == 2
    with pytest.raises(RunStateError, match="nothing to retry"):
        await handle.retry()  # nothing to retry


async def test_pending_callbacks_carry_tokens_and_a_handle_completes_one(client: Client) -> None:
    executing = asyncio.create_task(client.execute_run(nested, 250, run_id="r-nested"))
    handle = client.get_handle("r-nested")
    [wait] = await waits_of(handle)
    assert isinstance(wait, PendingCallback)
    assert (wait.name, str(wait.kind)) == ("approval", "callback")
    assert wait.run_id != handle.run_id  # the child run waits: listed through the parent
    assert wait.token is not None and wait.expires_at is not None
    # the CLI lists the same waits, with the same token
    cli = await pending_waits(client.engine, await handle.describe())
    assert cli == [wait.as_dict()] and cli[0]["token"] == wait.token

    with pytest.raises(RunStateError, match=r"no callback named 'refund'.*approval"):
        await handle.succeed_callback("refund", {"by": "x"})
    other = await client.start_run(approval, 1)
    await other.drive()
    [foreign] = await other.pending_callbacks()
    assert foreign.token is not None
    with pytest.raises(InvalidCallbackToken, match=f"of run {other.run_id}, not of run"):
        await handle.succeed_callback(foreign.token, {"by": "x"})

    await handle.succeed_callback("approval", {"by": "carol"})
    assert await asyncio.wait_for(executing, 10) == {"amount": 250, "by": "carol"}
    assert await handle.result() == {"amount": 250, "by": "carol"}
    assert await handle.pending_callbacks() == []
    with pytest.raises(CallbackAlreadyCompleted):
        await handle.succeed_callback(wait.token, {"by": "again"})


async def test_result_waits_for_a_run_resumed_after_a_callback_from_another_task(
    client: Client,
) -> None:
    handle = await client.start_run(approval, 90)
    waiter = asyncio.create_task(handle.result(timeout=timedelta(seconds=10)))

    async def approver() -> None:
        await waits_of(handle)
        await client.get_handle(handle.run_id).fail_callback("approval", message="over budget")

    stop = asyncio.Event()
    worker = asyncio.create_task(Worker(client.engine, poll_interval=30).run(stop=stop))
    try:
        await approver()
        with pytest.raises(RunFailed, match="over budget"):
            await waiter
    finally:
        stop.set()
        await worker
    assert calls["asked"] == 1


async def test_execute_run_goes_on_after_the_callback_it_waits_on(client: Client) -> None:
    execution = asyncio.create_task(client.execute_run(approval, 40, run_id="r-exec"))
    handle = client.get_handle("r-exec")
    [wait] = await waits_of(handle)
    assert not execution.done()
    assert wait.token is not None
    await client.succeed_callback(wait.token, {"by": "dan"})
    assert await asyncio.wait_for(execution, 10) == {"amount": 40, "by": "dan"}


async def test_cancel_ends_a_waiting_run_and_its_waiter(client: Client) -> None:
    handle = await client.start_run(approval, 10)
    assert (await handle.drive()).status == RunStatus.SUSPENDED
    waiter = asyncio.create_task(handle.result())
    await asyncio.sleep(0)
    await handle.cancel()
    with pytest.raises(RunFailed, match="Cancel"):
        await asyncio.wait_for(waiter, 3)  # woken by the cancel, not the 5 s poll
    assert await handle.status() == RunStatus.CANCELLED
    assert await handle.pending_callbacks() == []
    with pytest.raises(RunStateError, match="already ended"):
        await handle.cancel()


async def test_fork_through_a_handle_starts_a_new_run(client: Client) -> None:
    await client.execute_run(quote, "chair", run_id="r-chair")
    fork = await client.get_handle("r-chair").fork(from_op="1", input="sofa")
    assert fork.run_id != "r-chair"
    assert (await fork.describe()).origin is not None
    await fork.drive()
    assert await fork.result() == Quote(item="sofa", price_cents=400)
    with pytest.raises(InvalidInput, match="no operation '9'"):
        await fork.fork(from_op="9")


def test_sync_client_for_code_without_an_event_loop(tmp_path: Path) -> None:
    with SyncClient.open(**backends(tmp_path)) as client:
        assert client.execute_run(quote, "pen") == Quote(item="pen", price_cents=300)

        approved = client.start_run(approval, 5, run_id="r-sync")
        assert approved.status() == RunStatus.PENDING
        assert approved.drive().status == RunStatus.SUSPENDED
        [wait] = approved.pending_callbacks()
        assert wait.name == "approval" and wait.token is not None
        approved.succeed_callback("approval", {"by": "erin"})
        assert approved.drive().status == RunStatus.SUCCEEDED
        assert client.get_handle("r-sync").result() == {"amount": 5, "by": "erin"}

        cancelled = client.start_run(approval, 6)
        cancelled.cancel()
        with pytest.raises(RunFailed, match="Cancel"):
            cancelled.result()
        statuses = [r.status for r in client.list_runs(workflow="t-client-approval")]
        assert sorted(statuses) == [RunStatus.CANCELLED, RunStatus.SUCCEEDED]
    with SyncClient.open(**backends(tmp_path)) as reopened:  # the same store, a new loop
        assert len(reopened.list_runs()) == 3


async def test_sync_client_works_inside_a_running_event_loop(tmp_path: Path) -> None:
    # a notebook cell: an event loop is running, yet the blocking calls work
    with SyncClient.open(**backends(tmp_path)) as client:
        assert client.execute_run(quote, "ink").price_cents == 300


async def test_result_sees_a_run_finished_by_another_engine_on_the_same_store(
    client: Client, tmp_path: Path
) -> None:
    # Another engine stands for another process: its commits wake nothing here, and the
    # handle finds the end by reading the store every poll_interval.
    async with await Client.open(
        **backends(tmp_path), poll_interval=timedelta(milliseconds=50)
    ) as elsewhere:
        handle = elsewhere.get_handle((await client.start_run(quote, "rug")).run_id)
        waiting = asyncio.create_task(handle.result(timeout=timedelta(seconds=5)))
        await asyncio.sleep(0.1)
        assert not waiting.done()
        await client.get_handle(handle.run_id).drive()
        assert await waiting == Quote(item="rug", price_cents=300)
