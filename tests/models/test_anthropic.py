from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from cadenza.errors import ConfigurationError, ModelError, ModelThrottled, ModelUnavailable
from cadenza.models import (
    Message,
    ModelRequest,
    ToolCall,
    ToolSpec,
    generate_structured,
    infer_model,
)
from cadenza.models._anthropic import AnthropicModel

from .conftest import FakeProvider

LOOKUP = ToolSpec(
    "lookup",
    "Look up an order",
    {"type": "object", "properties": {"order": {"type": "string"}}, "required": ["order"]},
)


@pytest.fixture
async def model(provider: FakeProvider) -> AsyncIterator[AnthropicModel]:
    m = AnthropicModel("claude-3-5-haiku-latest", api_key="sk-ant-test", base_url=provider.url)
    yield m
    await m.aclose()


def message(content: list[dict[str, object]], stop: str = "end_turn") -> dict[str, object]:
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "content": content,
        "stop_reason": stop,
        "usage": {
            "input_tokens": 20,
            "output_tokens": 4,
            "cache_read_input_tokens": 100,
            "cache_creation_input_tokens": 5,
        },
    }


async def test_text_reply_headers_system_and_usage(
    model: AnthropicModel, provider: FakeProvider
) -> None:
    provider.json(message([{"type": "text", "text": "Bonjour"}]))
    reply = await model.request(ModelRequest.of("Say hello in French", system="Be brief"))

    assert reply.text == "Bonjour"
    assert reply.model == "anthropic:claude-3-5-haiku-latest"
    # cache reads are cached tokens; cache writes are billed as input
    assert (reply.usage.input_tokens, reply.usage.cached_tokens) == (25, 100)
    sent = provider.requests[0]
    assert sent.path == "/v1/messages"
    assert sent.headers["x-api-key"] == "sk-ant-test"
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert sent.json["system"] == "Be brief"
    assert sent.json["max_tokens"] == 1024
    assert sent.json["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Say hello in French"}]}
    ]


async def test_tool_use_and_merged_tool_results(
    model: AnthropicModel, provider: FakeProvider
) -> None:
    provider.json(
        message(
            [
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "tu_1", "name": "lookup", "input": {"order": "A1"}},
                {"type": "tool_use", "id": "tu_2", "name": "lookup", "input": {"order": "B2"}},
            ],
            stop="tool_use",
        )
    )
    reply = await model.request(ModelRequest.of("Where are A1 and B2?", tools=[LOOKUP]))
    assert reply.text == "Checking."
    assert [c.arguments for c in reply.tool_calls] == [{"order": "A1"}, {"order": "B2"}]
    assert reply.finish_reason == "tool_calls"
    assert provider.requests[0].json["tools"][0]["input_schema"] == LOOKUP.parameters

    provider.json(message([{"type": "text", "text": "Both shipped."}]))
    await model.request(
        ModelRequest.of(
            [
                Message.user("Where are A1 and B2?"),
                reply.message,
                Message.tool("shipped", tool_call_id="tu_1"),
                Message.tool("shipped", tool_call_id="tu_2"),
            ]
        )
    )
    sent = provider.requests[1].json["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    assert [b["tool_use_id"] for b in sent[2]["content"]] == ["tu_1", "tu_2"]


async def test_structured_output_uses_a_forced_tool(
    model: AnthropicModel, provider: FakeProvider
) -> None:
    provider.json(
        message(
            [{"type": "tool_use", "id": "tu", "name": "final_answer", "input": {"value": [1, 2]}}],
            stop="tool_use",
        )
    )
    value, _ = await generate_structured(model, "Two numbers", {"type": "array"})
    assert value == [1, 2]
    body = provider.requests[0].json
    assert body["tool_choice"] == {"type": "tool", "name": "final_answer"}
    # a non-object schema is wrapped, since tool input must be an object
    assert body["tools"][0]["input_schema"]["properties"]["value"] == {"type": "array"}


async def test_stream_text_and_tool_input(model: AnthropicModel, provider: FakeProvider) -> None:
    provider.sse(
        [
            (
                "message_start",
                {"type": "message_start", "message": {"usage": {"input_tokens": 9}}},
            ),
            (
                "content_block_start",
                {"type": "content_block_start", "index": 0, "content_block": {"type": "text"}},
            ),
            (
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": "Let me "},
                },
            ),
            (
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": "check."},
                },
            ),
            ("ping", {"type": "ping"}),
            (
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 1,
                    "content_block": {"type": "tool_use", "id": "tu_7", "name": "lookup"},
                },
            ),
            (
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 1,
                    "delta": {"type": "input_json_delta", "partial_json": '{"order": '},
                },
            ),
            (
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 1,
                    "delta": {"type": "input_json_delta", "partial_json": '"C3"}'},
                },
            ),
            (
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "tool_use"},
                    "usage": {"output_tokens": 11},
                },
            ),
            ("message_stop", {"type": "message_stop"}),
        ]
    )
    chunks = [c async for c in model.stream(ModelRequest.of("C3?", tools=[LOOKUP]))]
    assert [c.delta for c in chunks if c.delta] == ["Let me ", "check."]
    final = chunks[-1].response
    assert final is not None
    assert final.text == "Let me check."
    assert final.tool_calls == (ToolCall("tu_7", "lookup", {"order": "C3"}),)
    assert (final.usage.input_tokens, final.usage.output_tokens) == (9, 11)
    assert final.finish_reason == "tool_calls"


async def test_overloaded_and_rate_limited(model: AnthropicModel, provider: FakeProvider) -> None:
    provider.json(
        {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}, status=529
    )
    with pytest.raises(ModelUnavailable, match="busy"):
        await model.request(ModelRequest.of("Hi"))
    provider.json(
        {"type": "error", "error": {"type": "rate_limit_error", "message": "slow"}}, status=429
    )
    with pytest.raises(ModelThrottled):
        await model.request(ModelRequest.of("Hi"))


async def test_error_event_in_stream(model: AnthropicModel, provider: FakeProvider) -> None:
    provider.sse(
        [("error", {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}})]
    )
    with pytest.raises(ModelUnavailable, match="busy"):
        async for _ in model.stream(ModelRequest.of("Hi")):
            pass


async def test_request_without_user_message_is_refused(model: AnthropicModel) -> None:
    with pytest.raises(ModelError, match="user message"):
        await model.request(ModelRequest.of([Message.system("only a system prompt")]))


def test_missing_key_names_the_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with pytest.raises(ConfigurationError, match="ANTHROPIC_API_KEY"):
        infer_model("anthropic:claude-3-5-haiku-latest")
