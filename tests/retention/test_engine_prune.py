"""Retention as a deployment meets it: ended runs go once their workflow's retention has
passed, with their history and artifacts; runs that are still needed stay."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest

from cadenza import Context, workflow
from cadenza.clock import FakeClock
from cadenza.engine.worker import Worker
from cadenza.errors import RunNotFound, WorkflowDefinitionError
from cadenza.ports.artifact_store import run_scope
from cadenza.ports.run_store import RunStatus
from cadenza.testing import TestEnvironment

BIG = "x" * 5000  # over the tests' claim-check threshold: stored as an artifact


@workflow(name="ret-short", retention=timedelta(days=1))
async def short(ctx: Context) -> str:
    return await ctx.step(lambda: BIG)


@workflow(name="ret-two-steps", retention=timedelta(days=1))
async def two_steps(ctx: Context) -> str:
    text = await ctx.step(lambda: BIG)
    return text + await ctx.step(lambda: "!")


@workflow(name="ret-default")
async def default(ctx: Context) -> str:
    return await ctx.step(lambda: "ok")


@workflow(name="ret-forever", retention=None)
async def forever(ctx: Context) -> str:
    return await ctx.step(lambda: "kept")


@workflow(name="ret-child")
async def kid(ctx: Context) -> str:
    return await ctx.step(lambda: BIG)


@workflow(name="ret-parent")
async def parent(ctx: Context) -> str:
    text = await ctx.invoke(kid, None)
    cb = await ctx.create_callback(timeout=timedelta(days=400))
    await cb.result()
    return str(len(text))


flaky = {"fail": True}


def maybe_fail() -> str:
    if flaky["fail"]:
        raise ConnectionError("the service is down")
    return BIG


@workflow(name="ret-flaky")
async def flaky_wf(ctx: Context) -> str:
    from cadenza import RetryPolicy

    return await ctx.step(maybe_fail, retry=RetryPolicy(max_attempts=1))


@pytest.fixture
async def env() -> TestEnvironment:
    async with TestEnvironment(clock=FakeClock(), claim_check_bytes=1024) as environment:
        environment.engine.retention = timedelta(days=7)
        yield environment  # type: ignore[misc]


def scope_folder(env: TestEnvironment, run_id: str) -> Path:
    return env.directory / "artifacts" / run_scope(run_id)


async def gone(env: TestEnvironment, run_id: str) -> bool:
    try:
        await env.engine.store.get_run(run_id)
    except RunNotFound:
        return True
    return False


async def test_each_workflow_keeps_its_runs_as_long_as_it_says(env: TestEnvironment) -> None:
    runs = {wf.name: await env.run(wf) for wf in (short, default, forever)}
    assert all(r.status == RunStatus.SUCCEEDED for r in runs.values())
    short_run = runs["ret-short"].run_id
    assert scope_folder(env, short_run).is_dir()

    await env.advance(timedelta(hours=23))
    assert (await env.engine.prune()).runs == 0

    await env.advance(timedelta(hours=2))  # past one day: the short one goes
    report = await env.engine.prune()
    assert report.run_ids == [short_run]
    assert report.journal_records == 1 and report.history_events >= 4
    assert report.artifacts >= 1 and report.artifact_bytes > len(BIG)
    assert await gone(env, short_run)
    assert not scope_folder(env, short_run).exists()

    await env.advance(timedelta(days=7))  # past the deployment's default
    assert (await env.engine.prune()).run_ids == [runs["ret-default"].run_id]

    # retention=None keeps runs forever, even against an explicit --older-than.
    await env.advance(timedelta(days=3650))
    assert (await env.engine.prune(older_than=timedelta(0))).runs == 0
    assert not await gone(env, runs["ret-forever"].run_id)


async def test_a_dry_run_counts_and_deletes_nothing(env: TestEnvironment) -> None:
    run = await env.run(short)
    await env.advance(timedelta(days=2))

    preview = await env.engine.prune(dry_run=True)

    assert preview.dry_run and preview.run_ids == [run.run_id]
    assert preview.journal_records == 1 and preview.artifact_bytes > len(BIG)
    assert not await gone(env, run.run_id) and scope_folder(env, run.run_id).is_dir()
    assert (await env.engine.prune()).artifact_bytes == preview.artifact_bytes


async def test_only_the_pruned_runs_artifacts_go(env: TestEnvironment) -> None:
    old = await env.run(short)
    await env.advance(timedelta(days=2))
    young = await env.run(short)

    assert (await env.engine.prune()).run_ids == [old.run_id]

    assert not scope_folder(env, old.run_id).exists()
    assert scope_folder(env, young.run_id).is_dir()
    assert await env.result(young) == BIG


async def test_a_run_retried_after_the_decision_is_not_pruned(env: TestEnvironment) -> None:
    flaky["fail"] = True
    run = await env.run(flaky_wf)
    assert run.status == RunStatus.FAILED
    await env.advance(timedelta(days=8))
    store = env.engine.store
    decide = store.ended_runs

    async def decide_then_retry(**kwargs):  # type: ignore[no-untyped-def]
        chosen = await decide(**kwargs)
        if any(r.run_id == run.run_id for r in chosen):
            await env.engine.retry(run.run_id)  # an operator, between decision and delete
        return chosen

    store.ended_runs = decide_then_retry  # type: ignore[method-assign]
    try:
        report = await env.engine.prune()
    finally:
        del store.ended_runs  # type: ignore[method-assign]

    assert report.runs == 0
    assert (await store.get_run(run.run_id)).status == RunStatus.PENDING
    flaky["fail"] = False
    assert (await env.resume(run)).status == RunStatus.SUCCEEDED
    assert await env.result(run) == BIG


async def test_an_open_parent_keeps_its_children(env: TestEnvironment) -> None:
    root = await env.run(parent)
    for _ in range(4):
        root = await env.resume(root)
    assert root.status == RunStatus.SUSPENDED
    children = await env.engine.store.list_runs(parent_run_id=root.run_id)
    assert [c.status for c in children] == [RunStatus.SUCCEEDED]
    await env.advance(timedelta(days=30))

    report = await env.engine.prune()

    assert report.runs == 0 and report.kept_for_parent == 1
    assert not await gone(env, children[0].run_id)

    await env.succeed(await env.token(root), None)
    assert (await env.resume(root)).status == RunStatus.SUCCEEDED
    await env.advance(timedelta(days=8))
    assert sorted((await env.engine.prune()).run_ids) == sorted([root.run_id, children[0].run_id])


async def test_a_fork_outlives_its_origin(env: TestEnvironment) -> None:
    origin = await env.run(two_steps)
    await env.advance(timedelta(hours=12))
    fork = await env.engine.fork(origin.run_id, from_op="2")  # replays step 1 from the copy
    fork = await env.resume(fork)
    assert fork.status == RunStatus.SUCCEEDED
    await env.advance(timedelta(hours=13))  # the origin is past its day, the fork is not

    report = await env.engine.prune()

    assert report.run_ids == [origin.run_id]
    assert not scope_folder(env, origin.run_id).exists()
    assert await env.result(fork) == BIG + "!"  # its artifacts were copied, not shared
    journal = await env.engine.store.load_journal(fork.run_id)
    assert journal and journal[0].result is not None and journal[0].result.startswith("@")


async def test_the_worker_prunes_at_its_interval(env: TestEnvironment) -> None:
    old = await env.run(short)
    await env.advance(timedelta(days=2))
    later = await env.run(short)  # a day to go
    worker = Worker(env.engine, poll_interval=0.05, prune_every=timedelta(days=2))
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop=stop, grace=1.0))

    async def until_gone(run_id: str) -> None:
        for _ in range(500):
            if await gone(env, run_id):
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"run {run_id} was not pruned")

    try:
        await until_gone(old.run_id)  # at its first round
        assert not await gone(env, later.run_id)

        await env.advance(timedelta(days=1, hours=1))  # due, but the next prune is not
        await asyncio.sleep(0.3)
        assert not await gone(env, later.run_id)

        await env.advance(timedelta(days=1))
        await until_gone(later.run_id)
    finally:
        stop.set()
        await task


async def test_a_worker_with_pruning_off_keeps_everything(env: TestEnvironment) -> None:
    run = await env.run(short)
    await env.advance(timedelta(days=2))
    worker = Worker(env.engine, poll_interval=0.05, prune_every=None)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop=stop, grace=1.0))
    await asyncio.sleep(0.3)
    stop.set()
    await task
    assert not await gone(env, run.run_id)


def test_retention_must_be_a_duration() -> None:
    with pytest.raises(WorkflowDefinitionError, match="retention"):

        @workflow(name="ret-bad", retention=30)  # type: ignore[arg-type]
        async def bad(ctx: Context) -> None: ...


async def test_the_worker_prunes_in_bounded_batches_until_done(env: TestEnvironment) -> None:
    runs = [await env.run(short) for _ in range(5)]
    await env.advance(timedelta(days=2))
    batches: list[int] = []
    prune = env.engine.prune

    async def counted(**kwargs):  # type: ignore[no-untyped-def]
        report = await prune(**kwargs)
        batches.append(report.runs)
        return report

    env.engine.prune = counted  # type: ignore[method-assign]
    worker = Worker(env.engine, poll_interval=0.05, prune_batch=2)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop=stop, grace=1.0))
    try:
        for _ in range(100):  # a second: time for many rounds at this poll interval
            if len(batches) >= 4:
                break
            await asyncio.sleep(0.01)
    finally:
        stop.set()
        await task
    # Full batches are followed at once by the next; the one that is not full waits an hour.
    assert batches == [2, 2, 1]
    assert [await gone(env, r.run_id) for r in runs] == [True] * 5
