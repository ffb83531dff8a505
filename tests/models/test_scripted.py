from __future__ import annotations

import re

import pytest

from cadenza.errors import ModelThrottled
from cadenza.models import Message, ModelRequest, ModelResponse, ToolCall, infer_model
from cadenza.testing.scripted_model import ScriptedModel, ScriptExhausted


async def test_queued_replies_in_order_then_exhausted() -> None:
    model = ScriptedModel(["one", {"n": 2}, ToolCall("c1", "search", {"q": "x"})])
    assert (await model.request(ModelRequest.of("a"))).text == "one"
    assert (await model.request(ModelRequest.of("b"))).text == '{"n": 2}'
    third = await model.request(ModelRequest.of("c"))
    assert third.tool_calls == (ToolCall("c1", "search", {"q": "x"}),)
    assert third.finish_reason == "tool_calls"
    with pytest.raises(ScriptExhausted, match="no reply left for request 4"):
        await model.request(ModelRequest.of("d"))
    assert [r.messages[-1].content for r in model.requests] == ["a", "b", "c", "d"]


async def test_rules_match_the_message_being_answered() -> None:
    model = ScriptedModel(["queued"])
    model.on("weather", "sunny").on(re.compile(r"order \d+"), "shipped", times=1)
    assert (await model.request(ModelRequest.of("What's the WEATHER?"))).text == "sunny"
    assert (await model.request(ModelRequest.of("Where is order 42?"))).text == "shipped"
    # the rule fired its one time; the queue answers now
    assert (await model.request(ModelRequest.of("Where is order 43?"))).text == "queued"
    # a tool result is a message being answered too
    req = ModelRequest.of([Message.user("hi"), Message.tool("weather: rain", tool_call_id="c")])
    assert (await model.request(req)).text == "sunny"


async def test_scripted_errors_exercise_failure_paths() -> None:
    model = ScriptedModel().fail(ModelThrottled("slow down"), times=2).reply("finally")
    for _ in range(2):
        with pytest.raises(ModelThrottled, match="slow down"):
            await model.request(ModelRequest.of("x"))
    assert (await model.request(ModelRequest.of("x"))).text == "finally"
    with pytest.raises(ModelThrottled, match="scripted to raise"):
        await ScriptedModel([ModelThrottled]).request(ModelRequest.of("x"))


async def test_callable_and_async_callable_replies() -> None:
    async def later(req: ModelRequest) -> str:
        return f"async {len(req.messages)}"

    model = ScriptedModel([lambda req: req.messages[-1].content.upper(), later])
    assert (await model.request(ModelRequest.of("shout"))).text == "SHOUT"
    assert (await model.request(ModelRequest.of("x", system="s"))).text == "async 2"


async def test_usage_is_deterministic_words() -> None:
    model = ScriptedModel(["three word reply"])
    reply = await model.request(ModelRequest.of("two words", system="be nice"))
    assert (reply.usage.input_tokens, reply.usage.output_tokens, reply.usage.requests) == (4, 3, 1)


async def test_full_response_keeps_its_fields() -> None:
    canned = ModelResponse("x", finish_reason="length")
    reply = await ScriptedModel([canned]).request(ModelRequest.of("y"))
    assert reply.finish_reason == "length" and reply.model == "scripted:model"


async def test_stream_word_by_word() -> None:
    model = ScriptedModel(["the quick fox"])
    chunks = [c async for c in model.stream(ModelRequest.of("x"))]
    assert [c.delta for c in chunks[:-1]] == ["the ", "quick ", "fox"]
    assert chunks[-1].response is not None and chunks[-1].response.text == "the quick fox"


async def test_echo_through_infer_model() -> None:
    model = infer_model("scripted:echo")
    assert (await model.request(ModelRequest.of("ping"))).text == "ping"
    custom = infer_model("scripted:planner", replies=["plan"])
    assert custom.name == "scripted:planner"
    assert (await custom.request(ModelRequest.of("x"))).text == "plan"
