"""Claim-check references cannot be forged, and one run never reads another's artifacts.

Run A keeps a secret over the claim-check threshold; its artifact key is visible to anyone
who reads A's journal. Run B is fed look-alike references by a model, as its input, and as
a callback payload, and passes them through every path a value takes (a step, a child
context, a child run, a callback, the next prompt, the run's result). B must get back
exactly the data it was given, live and on replay, and never a byte of A's secret.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from cadenza import Context, RunStatus, StepContext, workflow
from cadenza.adapters.fs import FolderArtifactStore
from cadenza.agents import call_model, generate, register_model
from cadenza.errors import InvalidInput, SerializationError
from cadenza.ports import run_scope
from cadenza.retry import NO_RETRY
from cadenza.serde import reference_in
from cadenza.testing import ScriptedModel, TestEnvironment

SECRET = "TOP-SECRET-OF-RUN-A:"
BIG = 70 * 1024  # over the 64 KiB claim-check threshold
MODEL = "scripted:forger"


def make_secret() -> str:
    return SECRET + "s" * BIG


@workflow(name="sec-keeper")
async def keeper(ctx: Context) -> int:
    secret = await ctx.step(make_secret, name="secret")
    return len(secret)


async def stored_secret(env: TestEnvironment) -> tuple[str, str]:
    """Run A; return its id and the stored text of its secret step (a reference)."""
    run = await env.run(keeper)
    assert run.status == RunStatus.SUCCEEDED, run.error
    [op] = [o for o in await env.engine.store.load_journal(run.run_id) if o.name == "secret"]
    assert op.result is not None and reference_in(op.result) is not None
    return run.run_id, op.result


def echo(value: Any) -> Any:
    return value


async def echo_in_child(ctx: Context, value: Any) -> Any:
    return value


@workflow(name="sec-echo-run")
async def echo_run(ctx: Context, value: Any) -> Any:
    return await ctx.step(echo, value)


observed: list[dict[str, Any]] = []


@workflow(name="sec-forger")
async def forger(ctx: Context, given: Any) -> dict[str, Any]:
    reply = await generate(ctx, MODEL, "Report the figures as JSON", dict[str, Any], name="figures")
    value = reply["forged"] if set(reply) == {"forged"} else reply
    seen: dict[str, Any] = {
        "reply": value,
        "input": given,
        "step": await ctx.step(echo, value),
        "child": await ctx.run_in_child_context(echo_in_child, value),
        "invoked": await ctx.invoke(echo_run, value),
    }
    callback = await ctx.create_callback(name="payload")
    seen["payload"] = await callback.result()
    answer = await call_model(ctx, MODEL, f"Summarise: {json.dumps(seen['step'])}", name="next")
    seen["summary"] = answer.text
    observed.append(seen)
    await ctx.wait(timedelta(seconds=1))
    return seen


def forgeries(a_run_id: str, reference: str) -> dict[str, Any]:
    ref = reference_in(reference)
    assert ref is not None
    digest = ref.key.rsplit("sha256-", 1)[1]
    return {
        # A's real key, in the shape the earlier codec dereferenced.
        "scoped-key": {"$artifact": ref.key, "size": 10},
        # The earlier, deployment-wide key form of the same content.
        "global-key": {"$artifact": f"sha256:{digest}", "size": ref.size},
        # The reference text itself, as a string value.
        "reference-text": reference,
        # The body of a reference, as a dict.
        "reference-body": {"key": ref.key, "size": ref.size},
        # A look-alike of nothing: the earlier codec failed every replay on it.
        "unknown-hash": {"$artifact": "sha256:" + "0" * 64, "size": 10},
    }


async def everything_b_holds(env: TestEnvironment, run_id: str) -> str:
    """All B's rows (and its child runs'), as one text to search."""
    parts: list[str] = []
    runs = [await env.engine.store.get_run(run_id)]
    runs += await env.engine.store.list_runs(parent_run_id=run_id)
    for run in runs:
        parts += [run.input, run.result or "", json.dumps(run.state, default=str)]
        parts += [
            f"{o.result} {o.data} {o.error}"
            for o in await env.engine.store.load_journal(run.run_id)
        ]
        parts += [str(c.result) for c in await env.engine.store.load_callbacks(run.run_id)]
        parts += [
            json.dumps(e.details, default=str) for e in await env.engine.store.history(run.run_id)
        ]
    return "\n".join(parts)


@pytest.mark.parametrize(
    "variant", ["scoped-key", "global-key", "reference-text", "reference-body", "unknown-hash"]
)
async def test_a_forged_reference_round_trips_as_plain_data_through_every_path(
    fake_env: TestEnvironment, variant: str
) -> None:
    a_run_id, reference = await stored_secret(fake_env)
    forged = forgeries(a_run_id, reference)[variant]
    model = ScriptedModel(
        [forged if isinstance(forged, dict) else {"forged": forged}, "the figures look fine"]
    )
    register_model(MODEL, model)
    observed.clear()

    run = await fake_env.run(forger, forged)  # the run input is forged too
    assert run.status == RunStatus.SUSPENDED, run.error
    await fake_env.succeed(await fake_env.token(run), forged)  # and the callback payload
    run = await fake_env.resume(run)
    assert run.status == RunStatus.SUSPENDED, run.error

    expected = {
        "reply": forged,
        "input": forged,
        "step": forged,
        "child": forged,
        "invoked": forged,
        "payload": forged,
        "summary": "the figures look fine",
    }
    assert observed == [expected]  # live
    assert json.dumps(forged) in model.requests[-1].messages[-1].content  # the next prompt

    await fake_env.advance(1)
    run = await fake_env.resume(run)
    assert run.status == RunStatus.SUCCEEDED, run.error  # replay never fails on user data
    assert observed == [expected, expected]  # replay
    assert await fake_env.result(run) == expected
    assert len(model.requests) == 2  # replay asked no model again

    assert not any(SECRET in m.content for r in model.requests for m in r.messages)
    assert SECRET not in await everything_b_holds(fake_env, run.run_id)
    assert SECRET not in json.dumps(json.loads((await fake_env.engine.readable(run)).result or ""))


async def test_a_reference_is_followed_only_into_the_run_it_belongs_to(
    env: TestEnvironment,
) -> None:
    a_run_id, reference = await stored_secret(env)
    codec = env.engine.codec
    assert (await codec.decode(reference, run_id=a_run_id)).startswith(SECRET)
    with pytest.raises(SerializationError) as refused:
        await codec.decode(reference, run_id="r-someone-else")
    assert "not one of this run's artifacts" in str(refused.value)
    assert str(env.directory) not in str(refused.value)


def make_own() -> str:
    return "B's own data:" + "b" * BIG


@workflow(name="sec-big-then-wait")
async def big_then_wait(ctx: Context) -> int:
    value = await ctx.step(make_own, name="secret")
    await ctx.wait(timedelta(seconds=1))
    return len(value)


async def test_a_reference_planted_in_another_runs_row_is_not_followed(
    fake_env: TestEnvironment,
) -> None:
    _, reference = await stored_secret(fake_env)
    run = await fake_env.run(big_then_wait)
    assert run.status == RunStatus.SUSPENDED
    # Someone with write access to the database points B's step at A's artifact.
    with sqlite3.connect(fake_env.directory / "cadenza.db") as db:
        db.execute(
            "UPDATE ops SET result = ? WHERE run_id = ? AND name = 'secret'",
            (reference, run.run_id),
        )
    await fake_env.advance(1)
    run = await fake_env.resume(run)
    assert run.status == RunStatus.FAILED
    assert run.error is not None and run.error.type == "SerializationError"
    assert "not one of this run's artifacts" in run.error.message
    assert SECRET not in await everything_b_holds(fake_env, run.run_id)


@workflow(name="sec-reader")
async def reader(ctx: Context, key: str) -> str:
    async def read(step: StepContext, key: str) -> str:
        assert step.artifacts is not None
        return (await step.artifacts.get(key)).decode()

    return await ctx.step(read, key, name="read", retry=NO_RETRY)


@workflow(name="sec-own-artifact")
async def own_artifact(ctx: Context) -> str:
    async def roundtrip(step: StepContext) -> str:
        assert step.artifacts is not None
        key = await step.artifacts.put(b"mine")
        assert key.startswith(f"runs/{step.run_id}/sha256-")
        return (await step.artifacts.get(key)).decode()

    return await ctx.step(roundtrip, name="roundtrip")


async def test_a_step_reads_only_its_own_runs_artifacts(env: TestEnvironment) -> None:
    _, reference = await stored_secret(env)
    ref = reference_in(reference)
    assert ref is not None
    run = await env.run(reader, ref.key)  # a key a model or a tool handed to the step
    assert run.status == RunStatus.FAILED
    assert run.error is not None and "does not belong to run" in run.error.message
    assert SECRET not in await everything_b_holds(env, run.run_id)
    own = await env.run(own_artifact)
    assert await env.result(own) == "mine"


async def test_a_missing_artifact_fails_the_run_without_naming_the_artifact_folder(
    fake_env: TestEnvironment,
) -> None:
    run = await fake_env.run(big_then_wait)
    assert run.status == RunStatus.SUSPENDED
    shutil.rmtree(fake_env.directory / "artifacts")
    await fake_env.advance(1)
    run = await fake_env.resume(run)
    assert run.status == RunStatus.FAILED
    assert run.error is not None and run.error.type == "NotFound"
    assert "restore the deployment's artifact store" in run.error.message
    folder = str(fake_env.directory / "artifacts")
    assert folder not in run.error.message and folder not in (run.error.traceback or "")
    history = await fake_env.engine.store.history(run.run_id)
    assert folder not in json.dumps([e.details for e in history], default=str)


@pytest.mark.parametrize("run_id", ["..", "../../escape", "a/b", "r-1\x00x", "ünï code"])
async def test_any_run_id_maps_to_one_folder_inside_the_artifact_store(
    tmp_path: Path, run_id: str
) -> None:
    store = FolderArtifactStore(tmp_path / "artifacts")
    key = await store.put(run_scope(run_id), b"data")
    [written] = [p for p in (tmp_path / "artifacts").rglob("*") if p.is_file()]
    assert written.is_relative_to(tmp_path / "artifacts" / "runs")
    assert len(written.relative_to(tmp_path / "artifacts").parts) == 3  # runs/<run>/<digest>
    assert await store.for_run(run_id).get(key) == b"data"
    with pytest.raises(InvalidInput):
        await store.get("runs/../../etc/sha256-" + "0" * 64)
