"""ctx.patched: changing a workflow's code while runs started under the old code wait."""

from __future__ import annotations

from datetime import timedelta

from cadenza import Context, RunStatus, WorkflowDefinitionError
from cadenza.testing import TestEnvironment
from cadenza.workflow import define, register

NAME = "t-patched"


async def old_step() -> str:
    return "old"


async def new_step() -> str:
    return "new"


async def after() -> str:
    return "after"


async def original(ctx: Context) -> list[str]:
    await ctx.wait(timedelta(seconds=1), name="pause")
    taken = await ctx.step(old_step)
    await ctx.wait(timedelta(seconds=1), name="pause-2")
    return [taken, await ctx.step(after)]


async def changed(ctx: Context) -> list[str]:
    await ctx.wait(timedelta(seconds=1), name="pause")
    if ctx.patched("use-new-step"):
        taken = await ctx.step(new_step)
    else:
        taken = await ctx.step(old_step)
    await ctx.wait(timedelta(seconds=1), name="pause-2")
    return [taken, await ctx.step(after)]


changed.__qualname__ = original.__qualname__


def deploy(fn: object) -> object:
    definition = define(fn, name=NAME, version="1")  # type: ignore[arg-type]
    register(definition)
    return definition


async def finish(env: TestEnvironment, run_id: str) -> list[str]:
    for _ in range(3):
        await env.advance(1)
        run = await env.resume(run_id)
        if run.status != RunStatus.SUSPENDED:
            break
    assert run.status == RunStatus.SUCCEEDED, run.error
    result: list[str] = await env.result(run)
    return result


async def test_a_run_past_the_patch_point_keeps_the_old_branch(
    fake_env: TestEnvironment,
) -> None:
    deploy(original)
    old = await fake_env.run(define(original, name=NAME, version="1"))
    await fake_env.advance(1)
    old = await fake_env.resume(old)  # past "pause", old_step done, waiting on "pause-2"
    assert old.status == RunStatus.SUSPENDED

    new_definition = deploy(changed)
    assert await finish(fake_env, old.run_id) == ["old", "after"]
    state = (await fake_env.engine.store.get_run(old.run_id)).state or {}
    assert "patches" not in state.get("metadata", {})

    fresh = await fake_env.start(new_definition)  # type: ignore[arg-type]
    assert await finish(fake_env, fresh.run_id) == ["new", "after"]
    state = (await fake_env.engine.store.get_run(fresh.run_id)).state or {}
    assert state["metadata"]["patches"] == ["use-new-step"]


async def test_a_run_suspended_before_the_patch_point_takes_the_new_branch(
    fake_env: TestEnvironment,
) -> None:
    deploy(original)
    run = await fake_env.run(define(original, name=NAME, version="1"))  # waiting on "pause"
    deploy(changed)
    assert await finish(fake_env, run.run_id) == ["new", "after"]


async def test_replaying_a_patched_run_keeps_the_new_branch(fake_env: TestEnvironment) -> None:
    definition = deploy(changed)
    run = await fake_env.run(definition)  # type: ignore[arg-type]
    await fake_env.advance(1)
    run = await fake_env.resume(run)  # new_step recorded, waiting on "pause-2"
    assert run.status == RunStatus.SUSPENDED
    # Each later activation replays from the top: the marker, not the position, decides.
    assert await finish(fake_env, run.run_id) == ["new", "after"]
    journal = await fake_env.engine.store.load_journal(run.run_id)
    assert [op.name for op in journal if op.type == "step"] == ["new_step", "after"]
    # The marker took no position: the ids are those of the code without the patch.
    assert [op.op_id for op in journal] == ["1", "2", "3", "4"]


async def test_the_answer_is_fixed_for_the_whole_run(fake_env: TestEnvironment) -> None:
    async def looped_old(ctx: Context) -> list[str]:
        out = []
        for i in range(2):
            out.append(await ctx.step(old_step, name=f"s{i}"))
            await ctx.wait(timedelta(seconds=1), name=f"w{i}")
        return out

    async def looped_new(ctx: Context) -> list[str]:
        out = []
        for i in range(2):
            fn = new_step if ctx.patched("loop-change") else old_step
            out.append(await ctx.step(fn, name=f"s{i}"))
            await ctx.wait(timedelta(seconds=1), name=f"w{i}")
        return out

    looped_new.__qualname__ = looped_old.__qualname__
    register(define(looped_old, name="t-patched-loop", version="1"))
    run = await fake_env.run(define(looped_old, name="t-patched-loop", version="1"))
    register(define(looped_new, name="t-patched-loop", version="1"))
    # The first iteration ran the old code, so the second one must too (and so must replay).
    assert await finish(fake_env, run.run_id) == ["old", "old"]


async def test_a_change_id_is_required(fake_env: TestEnvironment) -> None:
    async def bad(ctx: Context) -> bool:
        return ctx.patched("")

    definition = define(bad, name="t-patched-bad", version="1")
    register(definition)
    run = await fake_env.run(definition)
    assert run.status == RunStatus.FAILED
    assert run.error is not None and run.error.type == WorkflowDefinitionError.__name__
    assert "change id" in run.error.message


async def send(token: str) -> str:
    return f"sent {token[:4]}"


async def mail(token: str) -> str:
    return f"mailed {token[:4]}"


async def test_replay_check_replays_past_a_pending_callback_without_writing(
    fake_env: TestEnvironment,
) -> None:
    async def asks(ctx: Context) -> object:
        callback = await ctx.create_callback(name="answer")
        await ctx.step(send, callback.token)
        return await callback.result()

    async def asks_by_mail(ctx: Context) -> object:
        callback = await ctx.create_callback(name="answer")
        await ctx.step(mail, callback.token)
        return await callback.result()

    asks_by_mail.__qualname__ = asks.__qualname__
    definition = define(asks, name="t-check-callback", version="1")
    register(definition)
    waiting = await fake_env.run(definition)
    assert waiting.status == RunStatus.SUSPENDED
    store = fake_env.engine.store
    before = (await store.load_journal(waiting.run_id), await store.history(waiting.run_id))

    [ok] = await fake_env.engine.replay_check(definition)
    assert ok.compatible and ok.run_id == waiting.run_id and ok.status == "SUSPENDED"

    edited = define(asks_by_mail, name="t-check-callback", version="1")
    [broken] = await fake_env.engine.replay_check(edited)
    assert not broken.compatible
    assert (broken.op_id, broken.recorded, broken.asked) == ("2", "step 'send'", "step 'mail'")
    after = (await store.load_journal(waiting.run_id), await store.history(waiting.run_id))
    assert after == before
    assert (await store.get_run(waiting.run_id)).status == RunStatus.SUSPENDED


async def test_replay_check_reports_a_finished_run_that_would_now_end_otherwise(
    fake_env: TestEnvironment,
) -> None:
    async def fine(ctx: Context) -> str:
        return await ctx.step(after)

    async def raising(ctx: Context) -> str:
        value = await ctx.step(after)
        raise ValueError(f"no longer accepts {value}")

    raising.__qualname__ = fine.__qualname__
    definition = define(fine, name="t-check-finished", version="1")
    register(definition)
    run = await fake_env.run(definition)
    assert run.status == RunStatus.SUCCEEDED
    [ok] = await fake_env.engine.replay_check(definition)
    assert ok.compatible and ok.replayed == 1
    [result] = await fake_env.engine.replay_check(
        define(raising, name="t-check-finished", version="1")
    )
    assert not result.compatible and result.op_id is None
    assert "succeeded" in (result.message or "") and "no longer accepts after" in (
        result.message or ""
    )


async def test_a_fork_of_a_patched_run_keeps_the_new_branch(fake_env: TestEnvironment) -> None:
    definition = deploy(changed)
    run = await fake_env.start(definition)  # type: ignore[arg-type]
    assert await finish(fake_env, run.run_id) == ["new", "after"]
    fork = await fake_env.engine.fork(run.run_id, from_op="4")  # replays new_step at op 2
    assert await finish(fake_env, fork.run_id) == ["new", "after"]
