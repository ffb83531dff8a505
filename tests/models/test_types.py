from __future__ import annotations

import json

import pytest

from cadenza.models import (
    Message,
    ModelRequest,
    ModelResponse,
    ToolCall,
    ToolSpec,
    Usage,
    cost,
    price_for,
    register_price,
)


def test_usage_adds_up() -> None:
    total = Usage(10, 2, 1, 1) + Usage(5, 3, 0, 1)
    assert total == Usage(input_tokens=15, output_tokens=5, cached_tokens=1, requests=2)
    assert total.total_tokens == 21
    assert sum([Usage(1, 1, requests=1)] * 3, Usage()) == Usage(3, 3, requests=3)


def test_response_round_trips_through_json() -> None:
    response = ModelResponse(
        text="hi",
        tool_calls=(ToolCall("c1", "search", {"q": "x", "n": [1, 2]}),),
        usage=Usage(3, 4, 5, 1),
        model="bedrock:amazon.nova-lite-v1:0",
        finish_reason="tool_calls",
        raw={"stopReason": "tool_use"},
    )
    again = ModelResponse.from_dict(json.loads(json.dumps(response.to_dict())))
    assert again == response
    assert Usage.from_dict(json.loads(json.dumps(Usage(1, 2, 3, 4).to_dict()))) == Usage(1, 2, 3, 4)


def test_raw_that_is_not_json_is_made_safe() -> None:
    import datetime

    response = ModelResponse("x", raw={"when": datetime.datetime(2026, 1, 1)})
    assert json.dumps(response.to_dict())


def test_request_round_trip_and_canonical_form() -> None:
    req = ModelRequest.of(
        [Message.user("hi"), Message.assistant("", [ToolCall("c", "t", {"b": 1, "a": 2})])],
        system="sys",
        tools=[ToolSpec("t", "a tool")],
        output_schema={"type": "object"},
        temperature=0.2,
        max_tokens=9,
        stop=["END"],
    )
    again = ModelRequest.from_dict(json.loads(json.dumps(req.to_dict())))
    assert again == req
    assert again.canonical_json() == req.canonical_json()
    assert req.system_prompt == "sys"
    assert [m.role for m in req.conversation] == ["user", "assistant"]


def test_request_of_accepts_a_request_and_overrides() -> None:
    req = ModelRequest.of("hi")
    assert ModelRequest.of(req) is req
    assert ModelRequest.of(req, max_tokens=5).max_tokens == 5
    assert ModelRequest.of(req, system="rules").system_prompt == "rules"


def test_messages_are_checked() -> None:
    with pytest.raises(ValueError, match="role"):
        Message("robot", "hi")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="tool_call_id"):
        Message("tool", "result")


def test_response_as_a_message() -> None:
    call = ToolCall("c", "t", {})
    assert ModelResponse("x", (call,)).message == Message.assistant("x", [call])


def test_price_lookup_rules() -> None:
    assert price_for("local:smollm2") is not None
    assert cost("local:anything.gguf", Usage(10**6, 10**6)) == 0.0
    # prefixes: dated versions and inference profiles find the base price
    assert price_for("openai:gpt-4o-2024-08-06") == price_for("openai:gpt-4o")
    assert price_for("openai:gpt-4o-mini-2024-07-18") == price_for("openai:gpt-4o-mini")
    assert price_for("bedrock:us.amazon.nova-lite-v1:0") == price_for("bedrock:amazon.nova-lite-v1")
    assert price_for("openai:unknown-model") is None
    assert cost("openai:unknown-model", Usage(100, 100)) == 0.0


def test_cost_per_million_with_cached_tokens() -> None:
    register_price("openai:test-model", input=2.0, output=8.0, cached=0.5)
    usage = Usage(input_tokens=1_000_000, output_tokens=500_000, cached_tokens=2_000_000)
    assert cost("openai:test-model", usage) == pytest.approx(2.0 + 4.0 + 1.0)
    register_price("openai:test-uncached", input=2.0, output=8.0)
    assert cost("openai:test-uncached", Usage(cached_tokens=1_000_000)) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="provider:model"):
        register_price("no-provider", input=1, output=1)
