"""Cassettes record a test's model and tool calls once and answer from the file after that,
without calling the real model or tool; a changed request fails with what changed."""

from __future__ import annotations

import json

import pytest

from cadenza import Context, workflow
from cadenza.agents import Agent
from cadenza.errors import ConfigurationError
from cadenza.models import ModelRequest, ToolCall
from cadenza.testing import Cassette, CassetteMismatch, ScriptedModel, TestEnvironment
from cadenza.tools import Toolset, tool

calls: list[str] = []


@tool
def order_status(order_id: str) -> str:
    """The shipping status of an order.

    Args:
        order_id: The order, like "A-1".
    """
    calls.append(order_id)
    if order_id == "missing":
        raise LookupError(f"no order {order_id}")
    return "shipped"


def live_model() -> ScriptedModel:
    model = ScriptedModel([ToolCall("c1", "order_status", {"order_id": "A-1"})])
    model.on("shipped", "Order A-1 has shipped.")
    return model


def offline_model() -> ScriptedModel:
    """What replay runs against: a model with no replies, which fails if it is called."""
    return ScriptedModel()


async def ask(model, tools, question: str) -> str:
    desk = Agent("desk", "You answer questions about orders.", model=model, tools=tools)

    @workflow(name="cassette-desk")
    async def order_desk(ctx: Context, question: str) -> str:
        return (await desk.run(ctx, question)).answer

    async with TestEnvironment() as env:
        run = await env.run(order_desk, question)
        return await env.result(run)


async def test_recorded_once_then_answered_from_the_file(tmp_path):
    path = tmp_path / "desk.json"
    calls.clear()
    live = live_model()
    with Cassette(path) as cassette:
        assert cassette.recording
        answer = await ask(
            cassette.model(live), cassette.toolset(Toolset([order_status])), "Where is A-1?"
        )
    assert answer == "Order A-1 has shipped."
    assert len(live.requests) == 2 and calls == ["A-1"]
    recorded = json.loads(path.read_text())["calls"]
    assert [entry["kind"] for entry in recorded] == ["model", "tool", "model"]

    calls.clear()
    offline = offline_model()
    with Cassette(path) as cassette:
        assert not cassette.recording
        answer = await ask(
            cassette.model(offline), cassette.toolset(Toolset([order_status])), "Where is A-1?"
        )
    assert answer == "Order A-1 has shipped."
    assert offline.requests == [] and calls == []  # neither the model nor the tool ran


async def test_a_changed_prompt_fails_with_the_difference_and_calls_nothing(tmp_path):
    path = tmp_path / "desk.json"
    with Cassette(path) as cassette:
        await ask(cassette.model(live_model()), [order_status], "Where is A-1?")

    offline = offline_model()
    cassette = Cassette(path, mode="replay")
    with pytest.raises(Exception) as failure:
        await ask(cassette.model(offline), [order_status], "Where is order A-1 now?")
    text = str(failure.value)
    assert "CassetteMismatch" in text and "gave up" not in text  # not asked again
    assert "Where is order A-1 now?" in text and "re-record" in text
    assert offline.requests == []


async def test_identical_requests_get_their_replies_in_recorded_order(tmp_path):
    path = tmp_path / "repeat.json"
    request = ModelRequest.of("Roll a die")
    with Cassette(path) as cassette:
        model = cassette.model(ScriptedModel(["4", "2"]))
        assert [(await model.request(request)).text for _ in range(2)] == ["4", "2"]

    model = Cassette(path, mode="replay").model(offline_model())
    assert [(await model.request(request)).text for _ in range(2)] == ["4", "2"]
    with pytest.raises(CassetteMismatch, match="all answered already"):
        await model.request(request)


async def test_a_tool_that_failed_when_recorded_fails_the_same_way(tmp_path):
    path = tmp_path / "tools.json"
    with Cassette(path) as cassette:
        recorded = cassette.tool(order_status)
        with pytest.raises(LookupError, match="no order missing"):
            await recorded.call({"order_id": "missing"})

    calls.clear()
    replayed = Cassette(path, mode="replay").tool(order_status)
    with pytest.raises(LookupError, match="no order missing"):
        await replayed.call({"order_id": "missing"})
    with pytest.raises(CassetteMismatch, match="order_status"):
        await replayed.call({"order_id": "B-2"})
    assert calls == []


async def test_a_failed_recording_writes_no_cassette(tmp_path):
    path = tmp_path / "half.json"
    with pytest.raises(RuntimeError), Cassette(path) as cassette:
        await cassette.model(ScriptedModel(["hi"])).request(ModelRequest.of("hello"))
        raise RuntimeError("the test failed")
    assert not path.exists()


def test_bad_cassettes_say_what_to_do(tmp_path):
    with pytest.raises(ConfigurationError, match="record it first"):
        Cassette(tmp_path / "none.json", mode="replay")
    (tmp_path / "junk.json").write_text("{not json")
    with pytest.raises(ConfigurationError, match="delete it"):
        Cassette(tmp_path / "junk.json")
    (tmp_path / "other.json").write_text('{"something": "else"}')
    with pytest.raises(ConfigurationError, match="not a cadenza cassette"):
        Cassette(tmp_path / "other.json")
    with pytest.raises(ConfigurationError, match="unknown cassette mode"):
        Cassette(tmp_path / "x.json", mode="sometimes")  # type: ignore[arg-type]
