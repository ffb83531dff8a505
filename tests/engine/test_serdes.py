"""Per-operation SerDes (``serdes=``, as in the AWS SDK's configs): a custom SerDes stores a
type JSON cannot hold (a dataclass with a set) or text that must not be readable
(a sealed payload); each operation gives the value back live and on replay, through
claim-check for large values, and through the public Client."""

from __future__ import annotations

import base64
import json
import pickle
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from cadenza import (
    BatchResult,
    CallbackFailed,
    Client,
    Context,
    RunStatus,
    SerDes,
    SerDesContext,
    StepContext,
    StepFailed,
    WaitDecision,
    workflow,
)
from cadenza.testing import FakeClock, TestEnvironment

calls: Counter[str] = Counter()
seen: list[SerDesContext] = []


@pytest.fixture(autouse=True)
def _reset() -> None:
    calls.clear()
    seen.clear()


@dataclass
class Basket:
    owner: str
    skus: set[str] = field(default_factory=set)


class BasketSerDes(SerDes[Basket]):
    """A type plain JSON cannot round-trip (a set), kept in a format of its own."""

    def serialize(self, value: Basket, context: SerDesContext) -> str:
        seen.append(context)
        return "basket:" + json.dumps({"owner": value.owner, "skus": sorted(value.skus)})

    def deserialize(self, data: str, context: SerDesContext) -> Basket:
        assert data.startswith("basket:"), data
        raw = json.loads(data.removeprefix("basket:"))
        return Basket(raw["owner"], set(raw["skus"]))


class SealedSerDes(SerDes[Any]):
    """Stands for encryption: the stored text does not show the value."""

    def serialize(self, value: Any, context: SerDesContext) -> str:
        return base64.b64encode(pickle.dumps(value)[::-1]).decode()

    def deserialize(self, data: str, context: SerDesContext) -> Any:
        return pickle.loads(base64.b64decode(data)[::-1])


BASKETS = BasketSerDes()
SEALED = SealedSerDes()


async def stored(env: TestEnvironment, run_id: str, op_id: str) -> str:
    ops = {op.op_id: op for op in await env.engine.store.load_journal(run_id)}
    return ops[op_id].result or ""


async def pause(ctx: Context) -> None:
    await ctx.wait(timedelta(seconds=1), name="pause")


def describe(basket: Basket) -> list[Any]:
    assert isinstance(basket, Basket) and isinstance(basket.skus, set)
    return [basket.owner, sorted(basket.skus)]


async def finish(env: TestEnvironment, run: Any) -> Any:
    """Resume past the pause: the second activation replays everything before it."""
    assert run.status == RunStatus.SUSPENDED
    await env.advance(1)
    run = await env.resume(run)
    assert run.status == RunStatus.SUCCEEDED, run.error
    return await env.result(run)


# --- step and child context -------------------------------------------------------------


def fill(step: StepContext) -> Basket:
    calls["fill"] += 1
    return Basket("ana", {"b-2", "a-1"})


@workflow(name="t-serdes-step")
async def step_flow(ctx: Context) -> list[Any]:
    basket = await ctx.step(fill, serdes=BASKETS)
    first = describe(basket)
    await pause(ctx)
    return [first, describe(basket)]


async def test_a_step_result_goes_through_its_serdes_live_and_on_replay(
    fake_env: TestEnvironment,
) -> None:
    run = await fake_env.run(step_flow)
    text = await stored(fake_env, run.run_id, "1")
    assert json.loads(text).startswith("basket:")  # the SerDes' text, as a JSON string
    assert await finish(fake_env, run) == [["ana", ["a-1", "b-2"]]] * 2
    assert calls["fill"] == 1
    assert seen[0] == SerDesContext(operation_id="1", run_id=run.run_id)


async def pack(ctx: Context, owner: str) -> Basket:
    calls["pack"] += 1
    return Basket(owner, {"c-3"})


@workflow(name="t-serdes-child")
async def child_flow(ctx: Context) -> list[Any]:
    basket = await ctx.run_in_child_context(pack, "bo", name="pack", serdes=BASKETS)
    await pause(ctx)
    return describe(basket)


async def test_a_child_context_result_goes_through_its_serdes(fake_env: TestEnvironment) -> None:
    run = await fake_env.run(child_flow)
    assert json.loads(await stored(fake_env, run.run_id, "1")).startswith("basket:")
    assert await finish(fake_env, run) == ["bo", ["c-3"]]
    assert calls["pack"] == 1


# --- map and parallel -------------------------------------------------------------------


async def basket_of(ctx: Context, owner: str) -> Basket:
    calls[owner] += 1
    return Basket(owner, {f"{owner}-1", f"{owner}-2"})


@workflow(name="t-serdes-map-items")
async def map_items(ctx: Context) -> list[Any]:
    batch = await ctx.map(["cy", "di"], basket_of, name="baskets", item_serdes=BASKETS)
    await pause(ctx)
    return [describe(b) for b in batch.results()]


async def test_map_items_go_through_item_serdes(fake_env: TestEnvironment) -> None:
    run = await fake_env.run(map_items)
    item_text = await stored(fake_env, run.run_id, "1.2")
    assert json.loads(item_text).startswith("basket:")
    batch_text = await stored(fake_env, run.run_id, "1")
    assert "basket:" in batch_text  # the batch keeps each item as its SerDes wrote it
    assert await finish(fake_env, run) == [["cy", ["cy-1", "cy-2"]], ["di", ["di-1", "di-2"]]]
    assert calls == Counter({"cy": 1, "di": 1})


@workflow(name="t-serdes-parallel")
async def parallel_flow(ctx: Context) -> list[Any]:
    batch = await ctx.parallel(
        {"left": lambda c: basket_of(c, "le"), "right": lambda c: basket_of(c, "ri")},
        item_serdes=BASKETS,
        serdes=SEALED,
    )
    assert isinstance(batch, BatchResult)
    await pause(ctx)
    return [[i.name, describe(i.result)] for i in batch.items]


async def test_parallel_branches_and_the_batch_result_go_through_their_serdes(
    fake_env: TestEnvironment,
) -> None:
    run = await fake_env.run(parallel_flow)
    sealed = json.loads(await stored(fake_env, run.run_id, "1"))
    assert "le-1" not in sealed  # the BatchResult is sealed
    assert isinstance(SEALED.deserialize(sealed, SerDesContext("1", run.run_id)), BatchResult)
    assert await finish(fake_env, run) == [
        ["left", ["le", ["le-1", "le-2"]]],
        ["right", ["ri", ["ri-1", "ri-2"]]],
    ]
    assert calls == Counter({"le": 1, "ri": 1})


# --- callbacks ----------------------------------------------------------------------------


@workflow(name="t-serdes-callback")
async def callback_flow(ctx: Context) -> list[Any]:
    callback = await ctx.create_callback(name="basket", serdes=BASKETS)
    basket = await callback.result()
    await pause(ctx)
    return [describe(basket), describe(await callback.result())]


async def test_a_callback_payload_goes_through_its_serdes(fake_env: TestEnvironment) -> None:
    run = await fake_env.run(callback_flow)
    payload = BASKETS.serialize(Basket("ed", {"e-5"}), SerDesContext("1", run.run_id))
    await fake_env.succeed(await fake_env.token(run), payload)
    run = await fake_env.resume(run)
    assert await finish(fake_env, run) == [["ed", ["e-5"]]] * 2


async def hand_over(step: StepContext, token: str) -> None:
    calls["asked"] += 1


@workflow(name="t-serdes-wait-for-callback")
async def wait_for_callback_flow(ctx: Context) -> list[Any]:
    basket = await ctx.wait_for_callback(hand_over, name="approval", serdes=SEALED)
    await pause(ctx)
    return describe(basket)


async def test_wait_for_callback_reads_its_payload_through_its_serdes(
    fake_env: TestEnvironment,
) -> None:
    run = await fake_env.run(wait_for_callback_flow)
    sealed = SEALED.serialize(Basket("fa", {"f-6"}), SerDesContext("1.1", run.run_id))
    await fake_env.succeed(await fake_env.token(run), sealed)
    run = await fake_env.resume(run)
    assert "f-6" not in await stored(fake_env, run.run_id, "1")  # kept sealed
    assert await finish(fake_env, run) == ["fa", ["f-6"]]
    assert calls["asked"] == 1


# --- invoke -------------------------------------------------------------------------------


@workflow(name="t-serdes-invoked")
async def invoked(ctx: Context, sealed: str) -> str:
    basket = SEALED.deserialize(sealed, SerDesContext("", ctx.run_id))
    basket.skus.add("added-by-child")
    return BASKETS.serialize(basket, SerDesContext("", ctx.run_id))


@workflow(name="t-serdes-invoke")
async def invoke_flow(ctx: Context) -> list[Any]:
    basket = await ctx.invoke(
        invoked, Basket("gu", {"g-7"}), serdes_payload=SEALED, serdes_result=BASKETS
    )
    await pause(ctx)
    return describe(basket)


async def test_invoke_sends_its_input_and_reads_its_result_through_serdes(
    fake_env: TestEnvironment,
) -> None:
    run = await fake_env.run(invoke_flow)
    child = f"{run.run_id}.1"
    assert "g-7" not in (await fake_env.engine.store.get_run(child)).input
    await fake_env.resume(child)
    run = await fake_env.resume(run)
    assert await finish(fake_env, run) == ["gu", ["added-by-child", "g-7"]]


# --- wait_for_condition -------------------------------------------------------------------


def add_sku(state: Basket) -> Basket:
    assert isinstance(state.skus, set)
    calls["check"] += 1
    return Basket(state.owner, state.skus | {f"h-{len(state.skus)}"})


def two_skus(state: Basket, attempt: int) -> WaitDecision:
    if len(state.skus) >= 2:
        return WaitDecision.stop()
    return WaitDecision.continue_after(timedelta(seconds=1))


@workflow(name="t-serdes-condition")
async def condition_flow(ctx: Context) -> list[Any]:
    basket = await ctx.wait_for_condition(
        add_sku, Basket("hu"), wait_strategy=two_skus, name="fill", serdes=BASKETS
    )
    await pause(ctx)
    return describe(basket)


async def test_condition_state_goes_through_its_serdes(fake_env: TestEnvironment) -> None:
    run = await fake_env.run(condition_flow)
    ops = {op.op_id: op for op in await fake_env.engine.store.load_journal(run.run_id)}
    assert json.loads(ops["1"].data["state"]).startswith("basket:")
    await fake_env.advance(1)
    run = await fake_env.resume(run)  # the second check meets the condition
    assert await finish(fake_env, run) == ["hu", ["h-0", "h-1"]]
    assert calls["check"] == 2


# --- claim-check and the public client ----------------------------------------------------


def big(step: StepContext) -> Basket:
    calls["big"] += 1
    return Basket("iv", {f"sku-{n:05d}" for n in range(3000)})


@workflow(name="t-serdes-claim-check")
async def big_flow(ctx: Context) -> Basket:
    basket = await ctx.step(big, serdes=SEALED)
    await pause(ctx)
    assert isinstance(basket, Basket) and len(basket.skus) == 3000
    return basket


async def test_a_large_serdes_value_is_claim_checked_and_decodes_on_replay() -> None:
    async with TestEnvironment(clock=FakeClock(), claim_check_bytes=1024) as env:
        run = await env.run(big_flow)
        assert (await stored(env, run.run_id, "1")).startswith("@artifact ")
        result = await finish(env, run)
    assert result["owner"] == "iv" and len(result["skus"]) == 3000
    assert calls["big"] == 1


async def test_the_client_returns_a_result_built_through_a_serdes(tmp_path: Path) -> None:
    options = {
        "store": f"sqlite:///{tmp_path / 'cadenza.db'}",
        "artifacts": f"file://{tmp_path / 'artifacts'}",
        "secret": b"serdes-tests-secret-0123456789",
        "claim_check_bytes": 1024,
    }
    async with await Client.open(**options, poll_interval=timedelta(milliseconds=50)) as client:
        result = await client.execute_run(big_flow)
    assert isinstance(result, Basket) and len(result.skus) == 3000
    assert calls["big"] == 1


# --- a SerDes that fails ------------------------------------------------------------------


class Broken(SerDes[Any]):
    def serialize(self, value: Any, context: SerDesContext) -> str:
        return value  # type: ignore[no-any-return]  # not text: a mistake in the SerDes

    def deserialize(self, data: str, context: SerDesContext) -> Any:
        raise ValueError(f"cannot read {data[:10]!r}")


def number(step: StepContext) -> int:
    calls["number"] += 1
    return 42


@workflow(name="t-serdes-broken-step")
async def broken_step(ctx: Context) -> str:
    try:
        await ctx.step(number, serdes=Broken())
    except StepFailed as exc:
        return f"{exc.error_type}: {exc.message}"
    return "unreachable"


async def test_a_serdes_that_returns_no_text_fails_the_step_without_retrying(
    env: TestEnvironment,
) -> None:
    run = await env.run(broken_step)
    message = await env.result(run)
    assert message.startswith("SerializationError: Broken.serialize returned int")
    assert calls["number"] == 1  # retrying cannot help: not retried


@workflow(name="t-serdes-unreadable-payload")
async def unreadable(ctx: Context) -> str:
    callback = await ctx.create_callback(name="sealed", serdes=Broken())
    try:
        await callback.result()
    except CallbackFailed as exc:
        return f"{exc.error_type}: {exc.message}"
    return "unreachable"


async def test_a_payload_its_serdes_cannot_read_fails_the_callback(env: TestEnvironment) -> None:
    run = await env.run(unreadable)
    await env.succeed(await env.token(run), "garbage")
    run = await env.resume(run)
    message = await env.result(run)
    assert message.startswith("SerializationError: the payload of 'sealed' could not be read")
    assert "cannot read 'garbage'" in message
