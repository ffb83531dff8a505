from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from cadenza.errors import (
    CadenzaError,
    ConfigurationError,
    ModelError,
    ModelNotFound,
    ModelResponseError,
    ModelThrottled,
    ModelUnavailable,
)
from cadenza.models import Message, ModelRequest, ToolCall, ToolSpec, infer_model
from cadenza.models._openai import OpenAIModel

from .conftest import FakeProvider

WEATHER = ToolSpec(
    "get_weather",
    "Current weather in a city",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)


@pytest.fixture
async def model(provider: FakeProvider) -> AsyncIterator[OpenAIModel]:
    m = OpenAIModel("gpt-4o-mini", base_url=f"{provider.url}/v1", api_key="sk-test")
    yield m
    await m.aclose()


def completion(message: dict[str, object], finish: str = "stop", **usage: int) -> dict[str, object]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 3, **usage},
    }


async def test_text_reply_with_usage_and_cached_tokens(
    model: OpenAIModel, provider: FakeProvider
) -> None:
    provider.json(
        completion(
            {"role": "assistant", "content": "Paris"},
            prompt_tokens_details={"cached_tokens": 10},  # type: ignore[arg-type]
        )
    )
    reply = await model.request(ModelRequest.of("Capital of France?", system="Be brief"))

    assert reply.text == "Paris"
    assert reply.model == "openai:gpt-4o-mini"
    assert reply.finish_reason == "stop"
    # cached prompt tokens are counted apart from the full-price ones
    assert (reply.usage.input_tokens, reply.usage.cached_tokens) == (2, 10)
    assert reply.usage.output_tokens == 3
    sent = provider.requests[0]
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == "Bearer sk-test"
    assert sent.json["messages"] == [
        {"role": "system", "content": "Be brief"},
        {"role": "user", "content": "Capital of France?"},
    ]


async def test_tools_and_tool_results_round_trip(
    model: OpenAIModel, provider: FakeProvider
) -> None:
    provider.json(
        completion(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_9",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                    }
                ],
            },
            finish="tool_calls",
        )
    )
    reply = await model.request(ModelRequest.of("Weather in Oslo?", tools=[WEATHER]))
    assert reply.tool_calls == (ToolCall("call_9", "get_weather", {"city": "Oslo"}),)
    assert reply.finish_reason == "tool_calls"
    assert provider.requests[0].json["tools"][0]["function"]["name"] == "get_weather"

    provider.json(completion({"role": "assistant", "content": "It is snowing."}))
    follow_up = ModelRequest.of(
        [
            Message.user("Weather in Oslo?"),
            reply.message,
            Message.tool("snow", tool_call_id="call_9", name="get_weather"),
        ]
    )
    await model.request(follow_up)
    sent = provider.requests[1].json["messages"]
    assert sent[1]["tool_calls"][0]["function"] == {
        "name": "get_weather",
        "arguments": '{"city": "Oslo"}',
    }
    assert sent[2] == {"role": "tool", "tool_call_id": "call_9", "content": "snow"}


async def test_output_schema_is_sent_as_response_format(
    model: OpenAIModel, provider: FakeProvider
) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    provider.json(completion({"role": "assistant", "content": '{"n": 3}'}))
    reply = await model.request(ModelRequest.of("Three?", output_schema=schema, max_tokens=20))
    assert reply.text == '{"n": 3}'
    body = provider.requests[0].json
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["schema"] == schema
    assert body["max_tokens"] == 20


async def test_stream_yields_deltas_then_the_whole_reply(
    model: OpenAIModel, provider: FakeProvider
) -> None:
    def chunk(delta: dict[str, object], finish: str | None = None) -> dict[str, object]:
        return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    provider.sse(
        [
            (None, chunk({"role": "assistant", "content": "Hel"})),
            (None, chunk({"content": "lo"})),
            (None, chunk({}, "stop")),
            (None, {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2}}),
            (None, "[DONE]"),
        ]
    )
    chunks = [c async for c in model.stream(ModelRequest.of("Hi"))]
    assert [c.delta for c in chunks[:-1]] == ["Hel", "lo"]
    final = chunks[-1].response
    assert final is not None
    assert final.text == "Hello"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (5, 2)
    assert provider.requests[0].json["stream_options"] == {"include_usage": True}


async def test_streamed_tool_call_arguments_are_assembled(
    model: OpenAIModel, provider: FakeProvider
) -> None:
    def call(part: dict[str, object]) -> dict[str, object]:
        return {"choices": [{"index": 0, "delta": {"tool_calls": [part]}, "finish_reason": None}]}

    provider.sse(
        [
            (None, call({"index": 0, "id": "c1", "function": {"name": "get_weather"}})),
            (None, call({"index": 0, "function": {"arguments": '{"ci'}})),
            (None, call({"index": 0, "function": {"arguments": 'ty": "Rome"}'}})),
            (None, {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}),
            (None, "[DONE]"),
        ]
    )
    chunks = [c async for c in model.stream(ModelRequest.of("Rome?", tools=[WEATHER]))]
    final = chunks[-1].response
    assert final is not None
    assert final.tool_calls == (ToolCall("c1", "get_weather", {"city": "Rome"}),)
    assert final.finish_reason == "tool_calls"


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (429, ModelThrottled),
        (503, ModelUnavailable),
        (404, ModelNotFound),
        (401, ModelError),
        (400, ModelError),
    ],
)
async def test_http_errors_become_cadenza_errors(
    model: OpenAIModel, provider: FakeProvider, status: int, error: type[CadenzaError]
) -> None:
    provider.json({"error": {"message": "nope"}}, status=status, headers={"Retry-After": "7"})
    with pytest.raises(error) as caught:
        await model.request(ModelRequest.of("Hi"))
    assert "nope" in str(caught.value)
    if status == 429:
        assert caught.value.retryable and "7s" in str(caught.value)
    if status == 401:
        assert "OPENAI_API_KEY" in str(caught.value)


async def test_stream_http_error(model: OpenAIModel, provider: FakeProvider) -> None:
    provider.json({"error": {"message": "slow down"}}, status=429)
    with pytest.raises(ModelThrottled, match="slow down"):
        async for _ in model.stream(ModelRequest.of("Hi")):
            pass


async def test_garbage_reply_is_a_response_error(
    model: OpenAIModel, provider: FakeProvider
) -> None:
    provider.raw(b"<html>gateway</html>", headers={"Content-Type": "text/html"})
    with pytest.raises(ModelResponseError, match="not JSON"):
        await model.request(ModelRequest.of("Hi"))


async def test_unreachable_server_is_unavailable() -> None:
    model = OpenAIModel("m", base_url="http://127.0.0.1:9/v1", api_key="k")
    try:
        with pytest.raises(ModelUnavailable, match="cannot reach"):
            await model.request(ModelRequest.of("Hi"))
    finally:
        await model.aclose()


def test_missing_key_names_the_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(ConfigurationError, match="OPENAI_API_KEY"):
        infer_model("openai:gpt-4o")


async def test_compatible_server_needs_no_key(
    monkeypatch: pytest.MonkeyPatch, provider: FakeProvider
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("OPENAI_BASE_URL", f"{provider.url}/v1")
    model = infer_model("openai:llama3.2")
    provider.json(completion({"role": "assistant", "content": "ok"}))
    try:
        assert (await model.request(ModelRequest.of("Hi"))).text == "ok"
    finally:
        await model.aclose()
    assert "authorization" not in provider.requests[0].headers
