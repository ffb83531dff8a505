"""Values over the claim-check threshold come back as values, of their annotated types,
wherever the engine reads them: map and parallel items, child contexts, child runs,
callback payloads, condition state, run inputs and results, live and on replay."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from cadenza import Context, RunStatus, poll_until, workflow
from cadenza.serde import reference_in
from cadenza.testing import TestEnvironment

BIG = 70 * 1024  # over the default 64 KiB claim-check threshold


class Blob(BaseModel):
    index: int
    body: str


def make_blob(index: int) -> Blob:
    return Blob(index=index, body=str(index % 10) * BIG)


def make_text(index: int) -> str:
    return str(index % 10) * BIG


async def typed_item(ctx: Context, index: int) -> Blob:
    return await ctx.step(make_blob, index)


async def text_item(ctx: Context, index: int) -> str:
    return await ctx.step(make_text, index)


async def untyped_item(ctx, index):  # type: ignore[no-untyped-def]
    return await ctx.step(make_blob, index)


async def blob_branch(ctx: Context) -> Blob:
    return make_blob(7)


async def text_branch(ctx: Context) -> str:
    return make_text(8)


def describe(value: Any) -> tuple[str, int, int]:
    """(type, index, length of the body) of a Blob, a dict or a string."""
    if isinstance(value, Blob):
        return ("Blob", value.index, len(value.body))
    if isinstance(value, dict):
        return ("dict", value["index"], len(value["body"]))
    return (type(value).__name__, int(value[0]), len(value))


observed: list[dict[str, Any]] = []


@workflow(name="cc-fanout")
async def fanout(ctx: Context) -> dict[str, Any]:
    typed = await ctx.map([1, 2, 3], typed_item)
    texts = await ctx.map([4, 5], text_item)
    plain = await ctx.map([6], untyped_item)
    both = await ctx.parallel([blob_branch, text_branch])
    child = await ctx.run_in_child_context(blob_branch)
    seen = {
        "typed": [describe(r) for r in typed.results()],
        "texts": [describe(r) for r in texts.results()],
        "plain": [describe(r) for r in plain.results()],
        "parallel": [describe(r) for r in both.results()],
        "child": describe(child),
    }
    observed.append(seen)
    await ctx.wait(timedelta(seconds=1))
    return seen


EXPECTED_FANOUT = {
    "typed": [("Blob", 1, BIG), ("Blob", 2, BIG), ("Blob", 3, BIG)],
    "texts": [("str", 4, BIG), ("str", 5, BIG)],
    "plain": [("dict", 6, BIG)],
    "parallel": [("Blob", 7, BIG), ("str", 8, BIG)],
    "child": ("Blob", 7, BIG),
}


async def test_batch_and_child_context_results_decode_live_and_on_replay(
    fake_env: TestEnvironment,
) -> None:
    observed.clear()
    run = await fake_env.run(fanout)
    assert run.status == RunStatus.SUSPENDED, run.error
    journal = await fake_env.engine.store.load_journal(run.run_id)
    # The values really were claim-checked: item records and batch records hold references.
    assert all(reference_in(op.result) is not None for op in journal if op.type == "map")
    await fake_env.advance(1)
    run = await fake_env.resume(run)
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert len(observed) == 2  # the live activation, then the replay
    expected = json.loads(json.dumps(EXPECTED_FANOUT))  # tuples as the run result has them
    assert [json.loads(json.dumps(o)) for o in observed] == [expected, expected]
    assert await fake_env.result(run) == expected


@workflow(name="cc-child-typed")
async def child_typed(ctx: Context, index: int) -> Blob:
    return await ctx.step(make_blob, index)


@workflow(name="cc-child-plain")
async def child_plain(ctx, index):  # type: ignore[no-untyped-def]
    return await ctx.step(make_blob, index)


@workflow(name="cc-invoke")
async def invoker(ctx: Context) -> dict[str, Any]:
    typed = await ctx.invoke(child_typed, 1)
    plain = await ctx.invoke(child_plain, 2)
    seen = {"typed": describe(typed), "plain": describe(plain)}
    observed.append(seen)
    await ctx.wait(timedelta(seconds=1))
    return seen


async def test_child_run_results_decode_live_and_on_replay(fake_env: TestEnvironment) -> None:
    observed.clear()
    run = await fake_env.run(invoker)
    for _ in range(4):  # each child runs, then wakes the parent
        if run.status != RunStatus.SUSPENDED or observed:
            break
        for child in await fake_env.engine.store.list_runs(parent_run_id=run.run_id):
            await fake_env.resume(child)
        run = await fake_env.resume(run)
    assert observed == [{"typed": ("Blob", 1, BIG), "plain": ("dict", 2, BIG)}]
    await fake_env.advance(1)
    run = await fake_env.resume(run)
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert observed[1] == observed[0]
    # The parent keeps its own copy of a claim-checked child result.
    [invoke, *_] = [
        op for op in await fake_env.engine.store.load_journal(run.run_id) if op.type == "invoke"
    ]
    ref = reference_in(invoke.result)
    assert ref is not None and ref.key.startswith(f"runs/{run.run_id}/")


@workflow(name="cc-callback")
async def awaits_payload(ctx: Context) -> dict[str, Any]:
    callback = await ctx.create_callback(name="upload")
    payload = await callback.result()
    seen = {"payload": describe(payload)}
    observed.append(seen)
    await ctx.wait(timedelta(seconds=1))
    return seen


async def test_a_large_callback_payload_decodes_live_and_on_replay(
    fake_env: TestEnvironment,
) -> None:
    observed.clear()
    run = await fake_env.run(awaits_payload)
    await fake_env.succeed(await fake_env.token(run), make_blob(3).model_dump())
    run = await fake_env.resume(run)
    assert observed == [{"payload": ("dict", 3, BIG)}]
    # Stored in the scope of the run whose callback it completed.
    [callback] = await fake_env.engine.store.load_callbacks(run.run_id)
    ref = reference_in(callback.result)
    assert ref is not None and ref.key.startswith(f"runs/{run.run_id}/")
    await fake_env.advance(1)
    run = await fake_env.resume(run)
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert observed[1] == observed[0]


def grow(state: dict[str, Any]) -> dict[str, Any]:
    return {"count": state["count"] + 1, "body": "c" * BIG}


@workflow(name="cc-condition")
async def polls(ctx: Context) -> int:
    state = await ctx.wait_for_condition(
        grow,
        {"count": 0, "body": ""},
        wait_strategy=poll_until(lambda s: s["count"] >= 2, every=timedelta(seconds=1)),
    )
    assert len(state["body"]) == BIG
    return int(state["count"])


async def test_large_condition_state_decodes_between_checks(fake_env: TestEnvironment) -> None:
    run = await fake_env.run(polls)
    assert run.status == RunStatus.SUSPENDED, run.error
    await fake_env.advance(1)
    run = await fake_env.resume(run)
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert await fake_env.result(run) == 2


@workflow(name="cc-input")
async def takes_blob(ctx: Context, blob: Blob) -> Blob:
    raw = await ctx.input_data()
    assert isinstance(blob, Blob) and raw["body"] == blob.body
    await ctx.wait(timedelta(seconds=1))
    return Blob(index=blob.index + 1, body=blob.body)


async def test_large_run_input_and_result_decode_to_their_types(
    fake_env: TestEnvironment,
) -> None:
    run = await fake_env.run(takes_blob, make_blob(4))
    assert reference_in(run.input) is not None
    await fake_env.advance(1)
    run = await fake_env.resume(run)
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert reference_in(run.result) is not None
    assert await fake_env.result(run, Blob) == Blob(index=5, body="4" * BIG)
    assert await fake_env.result(run) == {"index": 5, "body": "4" * BIG}
    assert await fake_env.engine.input_of(run, Blob) == make_blob(4)
    shown = await fake_env.engine.readable(run)
    assert json.loads(shown.result or "") == {"index": 5, "body": "4" * BIG}
    assert json.loads(shown.input)["body"] == "4" * BIG
    # History shows the size of a claim-checked result, not its reference text.
    [succeeded] = [
        e for e in await fake_env.engine.store.history(run.run_id) if e.type == "ExecutionSucceeded"
    ]
    assert "claim-checked" in succeeded.details["result"]


async def test_input_over_the_size_limit_is_refused_before_anything_is_stored(
    env: TestEnvironment,
) -> None:
    from cadenza.errors import PayloadTooLarge

    huge = Blob(index=1, body="x" * (16 * 1024 * 1024 + 1))
    try:
        await env.start(takes_blob, huge)
    except PayloadTooLarge as exc:
        assert "limit" in str(exc)
    else:
        raise AssertionError("a 16 MiB input was accepted")
    assert await env.engine.store.list_runs() == []
    assert not (env.directory / "artifacts").exists()


async def test_the_size_limit_counts_bytes_not_characters(env: TestEnvironment) -> None:
    from cadenza.errors import PayloadTooLarge

    # 9 M characters of "é" are 18 MB of UTF-8: over the 16 MiB limit, though fewer
    # characters than it.
    wide = Blob(index=1, body="é" * (9 * 1024 * 1024))
    try:
        await env.start(takes_blob, wide)
    except PayloadTooLarge as exc:
        assert "bytes" in str(exc) and "artifact" in str(exc)
    else:
        raise AssertionError("18 MB of UTF-8 were accepted under a 16 MiB limit")
    assert await env.engine.store.list_runs() == []


@workflow(name="cc-cli-big")
async def big_result(ctx: Context) -> dict[str, Any]:
    return {"body": await ctx.step(make_text, 9)}


def test_the_cli_shows_a_claim_checked_result_as_the_value(tmp_path: Path) -> None:
    cadenza = str(Path(sys.executable).with_name("cadenza"))
    environ = {
        k: v
        for k, v in os.environ.items()
        if k not in ("CADENZA_STORE", "CADENZA_SECRET", "CADENZA_ARTIFACTS")
    }
    environ["CADENZA_HOME"] = str(tmp_path)
    root = Path(__file__).resolve().parents[2]

    def cli(*args: str) -> Any:
        proc = subprocess.run(
            [cadenza, *args], cwd=root, env=environ, capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    ran = cli("run", "tests.engine.test_claim_check:big_result", "--json")
    assert ran["status"] == "SUCCEEDED" and ran["result"] == {"body": "9" * BIG}
    shown = cli("runs", "show", ran["run_id"], "--json")
    assert shown["result"] == {"body": "9" * BIG}
    # An artifact store that lost the value: the run is still listed, with the reason.
    import shutil

    shutil.rmtree(tmp_path / "artifacts")
    [listed] = cli("runs", "list", "--json")
    assert listed["run_id"] == ran["run_id"] and "result" not in listed
    assert "artifact" in listed["result_unreadable"]
