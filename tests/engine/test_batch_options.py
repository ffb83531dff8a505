"""ctx.map item functions of (ctx, item[, index[, items]]), item_namer=, named parallel
branches: their names in the result, the journal and the history, and on replay."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from cadenza import Context, ItemStatus, RunStatus, workflow
from cadenza.history import HistoryEventType
from cadenza.testing import TestEnvironment
from cadenza.workflow import define, register


async def child_names(env: TestEnvironment, run_id: str, batch_id: str = "1") -> list[str]:
    journal = await env.engine.store.load_journal(run_id)
    return [op.name for op in journal if op.parent_id == batch_id and op.type == "context"]


async def started_names(env: TestEnvironment, run_id: str) -> list[str | None]:
    return [
        e.name
        for e in await env.engine.store.history(run_id)
        if e.type == HistoryEventType.CONTEXT_STARTED and e.parent_id == "1"
    ]


def defined(fn: Any, name: str) -> Any:
    definition = define(fn, name=name)
    register(definition)
    return definition


# --- the shapes of a map function ------------------------------------------------------


async def with_index(ctx: Context, word: str, index: int) -> str:
    return f"{index}:{word}"


async def with_items(ctx: Context, word: str, index: int, items: list[str]) -> str:
    return f"{word} ({index + 1} of {len(items)}, next {items[(index + 1) % len(items)]})"


async def with_star_args(ctx: Context, *args: Any) -> int:
    return len(args)


@workflow(name="t-map-shapes")
async def shapes(ctx: Context, words: list[str]) -> dict[str, list[Any]]:
    return {
        "index": (await ctx.map(words, with_index)).results(),
        "items": (await ctx.map(words, with_items)).results(),
        "star": (await ctx.map(words, with_star_args)).results(),
    }


async def test_a_map_function_may_take_the_index_and_the_whole_list(env: TestEnvironment) -> None:
    run = await env.run(shapes, ["a", "b"])
    assert await env.result(run) == {
        "index": ["0:a", "1:b"],
        "items": ["a (1 of 2, next b)", "b (2 of 2, next a)"],
        "star": [3, 3],  # *args takes everything: item, index and items
    }


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (
            "async def one(ctx): ...",
            "is called as fn(ctx, item), but one(ctx) cannot be",
        ),
        (
            "async def five(ctx, item, index, items, extra): ...",
            "is called as fn(ctx, item, index, items), but five(ctx, item, index, items, extra)"
            " cannot be (missing a required argument: 'extra')",
        ),
        (
            "async def keyword(ctx, item, *, flag): ...",
            "but keyword(ctx, item, flag) cannot be (missing a required argument: 'flag')",
        ),
    ],
)
async def test_a_map_function_of_another_shape_is_refused_at_the_call(
    env: TestEnvironment, source: str, expected: str
) -> None:
    namespace: dict[str, Any] = {}
    exec(source, namespace)
    fn = next(v for k, v in namespace.items() if not k.startswith("__"))

    async def bad(ctx: Context) -> None:
        await ctx.map(["x"], fn, name="words")

    run = await env.run(defined(bad, f"t-map-bad-{fn.__name__}"))
    assert run.status == RunStatus.FAILED
    assert run.error is not None and run.error.type == "WorkflowDefinitionError"
    message = run.error.message
    assert message.startswith("the function of ctx.map 'words' ")
    assert expected in message
    # the fix names every accepted shape
    assert f"define it as async def {fn.__name__}(ctx, item" in message
    assert f"{fn.__name__}(ctx, item, index, items)" in message


# --- item_namer ------------------------------------------------------------------------


async def shout(ctx: Context, word: str) -> str:
    await ctx.wait(timedelta(seconds=1), name="pause")
    return word.upper()


@workflow(name="t-map-named")
async def named_map(ctx: Context, words: list[str]) -> list[list[Any]]:
    batch = await ctx.map(words, shout, item_namer=lambda word, index: f"shout {word}")
    return [[item.index, item.name, item.result] for item in batch.items]


async def test_item_namer_names_each_child_context_in_result_journal_and_history(
    fake_env: TestEnvironment,
) -> None:
    run = await fake_env.run(named_map, ["hi", "yo"])
    assert run.status == RunStatus.SUSPENDED  # replay below goes through the names again
    await fake_env.advance(1)
    run = await fake_env.resume(run)
    assert await fake_env.result(run) == [[0, "shout hi", "HI"], [1, "shout yo", "YO"]]
    assert await child_names(fake_env, run.run_id) == ["shout hi", "shout yo"]
    assert await started_names(fake_env, run.run_id) == ["shout hi", "shout yo"]


async def test_default_names_are_unchanged(env: TestEnvironment) -> None:
    @workflow(name="t-map-default-names")
    async def default_names(ctx: Context) -> list[str | None]:
        batch = await ctx.map(["a", "b"], with_index)
        branches = await ctx.parallel([lambda c: c.step(lambda: 1, name="x")], name="fan")
        return [item.name for item in batch.items + branches.items]

    run = await env.run(default_names)
    assert await env.result(run) == ["map:with_index[0]", "map:with_index[1]", "fan[0]"]
    assert await child_names(env, run.run_id, "1") == ["map:with_index[0]", "map:with_index[1]"]
    assert await child_names(env, run.run_id, "2") == ["fan[0]"]


async def test_a_renamed_item_on_replay_is_non_determinism(fake_env: TestEnvironment) -> None:
    async def original(ctx: Context) -> list[str]:
        return (await ctx.map(["hi"], shout, item_namer=lambda w, i: f"shout {w}")).results()

    async def edited(ctx: Context) -> list[str]:
        return (await ctx.map(["hi"], shout, item_namer=lambda w, i: f"yell {w}")).results()

    edited.__qualname__ = original.__qualname__
    register(define(original, name="t-map-renamed", version="1"))
    run = await fake_env.run(define(original, name="t-map-renamed", version="1"))
    assert run.status == RunStatus.SUSPENDED
    register(define(edited, name="t-map-renamed", version="1"))
    await fake_env.advance(1)
    run = await fake_env.resume(run)
    assert run.status == RunStatus.FAILED
    assert run.error is not None and run.error.type == "NonDeterminismError"
    assert "operation 1.1" in run.error.message
    assert "'shout hi'" in run.error.message and "context 'yell hi'" in run.error.message
    assert "new workflow version" in run.error.message


@pytest.mark.parametrize(
    ("namer", "expected"),
    [
        (lambda item, index: "", "returned '' for item 0; it must return a non-empty str"),
        (lambda item, index: index, "returned 0 for item 0; it must return a non-empty str"),
        ("names", "item_namer of the function of ctx.map must be a function"),
    ],
)
async def test_a_bad_item_namer_is_refused_at_the_call(
    env: TestEnvironment, namer: Any, expected: str
) -> None:
    async def bad(ctx: Context) -> None:
        await ctx.map(["x"], with_index, item_namer=namer)

    run = await env.run(defined(bad, f"t-map-bad-namer-{len(expected)}"))
    assert run.status == RunStatus.FAILED
    assert run.error is not None and run.error.type == "WorkflowDefinitionError"
    assert expected in run.error.message


# --- named parallel branches -----------------------------------------------------------


async def flight(ctx: Context) -> str:
    return await ctx.step(lambda: "TP-1234", name="book")


async def hotel(ctx: Context) -> dict[str, int]:
    await ctx.step(lambda: 1, name="book")
    raise LookupError("no room")


@workflow(name="t-parallel-named")
async def named_parallel(ctx: Context) -> list[list[Any]]:
    batch = await ctx.parallel({"flight": flight, "hotel": hotel}, name="reserve")
    return [[i.index, i.name, str(i.status), i.result] for i in batch.items]


async def test_named_branches_keep_index_order_and_carry_their_names(
    env: TestEnvironment,
) -> None:
    run = await env.run(named_parallel)
    assert await env.result(run) == [
        [0, "flight", "SUCCEEDED", "TP-1234"],
        [1, "hotel", "FAILED", None],
    ]
    assert await child_names(env, run.run_id) == ["flight", "hotel"]
    assert await started_names(env, run.run_id) == ["flight", "hotel"]


async def test_a_misnamed_or_misshapen_named_branch_is_refused(env: TestEnvironment) -> None:
    async def no_ctx() -> None: ...

    async def bad_name(ctx: Context) -> None:
        await ctx.parallel({"": flight})

    async def bad_branch(ctx: Context) -> None:
        await ctx.parallel({"flight": flight, "late": no_ctx}, name="trip")

    run = await env.run(defined(bad_name, "t-parallel-bad-name"))
    assert run.error is not None and run.error.type == "WorkflowDefinitionError"
    assert "non-empty str names; got the name ''" in run.error.message
    run = await env.run(defined(bad_branch, "t-parallel-bad-branch"))
    assert run.error is not None and run.error.type == "WorkflowDefinitionError"
    assert run.error.message.startswith("branch 'late' of ctx.parallel 'trip' is called as fn(ctx)")


async def test_named_branches_replay_from_the_recorded_result(fake_env: TestEnvironment) -> None:
    calls: list[str] = []

    async def slow(ctx: Context) -> str:
        calls.append("slow")
        await ctx.wait(timedelta(seconds=1), name="nap")
        return "late"

    async def quick(ctx: Context) -> str:
        calls.append("quick")
        return "now"

    async def both(ctx: Context) -> list[Any]:
        batch = await ctx.parallel({"slow": slow, "quick": quick})
        await ctx.wait(timedelta(seconds=1), name="after")
        return [[i.name, i.result] for i in batch.items]

    definition = defined(both, "t-parallel-named-replay")
    run = await fake_env.run(definition)
    await fake_env.advance(1)
    run = await fake_env.resume(run)  # the batch finishes and is recorded
    assert run.status == RunStatus.SUSPENDED
    await fake_env.advance(1)
    run = await fake_env.resume(run)  # replays the recorded batch
    assert await fake_env.result(run) == [["slow", "late"], ["quick", "now"]]
    assert calls.count("quick") == 1  # a finished branch is never called again
    assert await child_names(fake_env, run.run_id) == ["slow", "quick"]


def test_batch_items_keep_their_name_through_the_record() -> None:
    from cadenza.batch import BatchItem, BatchResult, CompletionReason

    result = BatchResult(
        [BatchItem(0, ItemStatus.SUCCEEDED, 1, name="a"), BatchItem(1, ItemStatus.NOT_STARTED)],
        CompletionReason.MIN_SUCCESSFUL_REACHED,
    )
    assert BatchResult.from_dict(result.to_dict()) == result
    assert "name" not in result.to_dict()["items"][1]


async def test_a_map_function_that_is_not_a_function_is_refused_with_every_shape(
    env: TestEnvironment,
) -> None:
    async def bad(ctx: Context) -> None:
        await ctx.map(["x"], "with_index")  # type: ignore[arg-type]

    run = await env.run(defined(bad, "t-map-not-a-function"))
    assert run.error is not None and run.error.type == "WorkflowDefinitionError"
    assert run.error.message == (
        "the function of ctx.map must be an async function called as fn(ctx, item);"
        " got str 'with_index' (or fn(ctx, item, index), fn(ctx, item, index, items))"
    )
