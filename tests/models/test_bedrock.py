"""Bedrock Converse with botocore's Stubber; ConverseStream against a local event-stream server."""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.stub import ANY, Stubber

from cadenza.errors import (
    ConfigurationError,
    ModelError,
    ModelNotFound,
    ModelThrottled,
    ModelTimeout,
    ModelUnavailable,
)
from cadenza.models import (
    Message,
    ModelRequest,
    ToolCall,
    ToolSpec,
    generate_structured,
    infer_model,
)
from cadenza.models._bedrock import BedrockModel

from .conftest import FakeProvider

MODEL_ID = "us.amazon.nova-lite-v1:0"
WEATHER = ToolSpec(
    "get_weather",
    "Current weather in a city",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)


def client(endpoint: str | None = None) -> Any:
    return boto3.client(
        "bedrock-runtime",
        region_name="us-east-1",
        endpoint_url=endpoint,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=Config(retries={"mode": "standard", "total_max_attempts": 1}),
    )


@pytest.fixture
def stubbed() -> Iterator[tuple[BedrockModel, Stubber]]:
    c = client()
    with Stubber(c) as stubber:
        yield BedrockModel(MODEL_ID, client=c), stubber
        stubber.assert_no_pending_responses()


def converse_reply(content: list[dict[str, Any]], stop: str = "end_turn") -> dict[str, Any]:
    return {
        "output": {"message": {"role": "assistant", "content": content}},
        "stopReason": stop,
        "usage": {
            "inputTokens": 30,
            "outputTokens": 5,
            "totalTokens": 35,
            "cacheReadInputTokens": 8,
        },
        "metrics": {"latencyMs": 120},
    }


async def test_text_reply(stubbed: tuple[BedrockModel, Stubber]) -> None:
    model, stubber = stubbed
    stubber.add_response(
        "converse",
        converse_reply([{"text": "Lisbon"}]),
        {
            "modelId": MODEL_ID,
            "messages": [{"role": "user", "content": [{"text": "Capital of Portugal?"}]}],
            "system": [{"text": "Answer in one word"}],
            "inferenceConfig": {"maxTokens": 10, "temperature": 0.0},
        },
    )
    reply = await model.request(
        ModelRequest.of(
            "Capital of Portugal?", system="Answer in one word", max_tokens=10, temperature=0.0
        )
    )
    assert reply.text == "Lisbon"
    assert reply.model == f"bedrock:{MODEL_ID}"
    assert (reply.usage.input_tokens, reply.usage.output_tokens, reply.usage.cached_tokens) == (
        30,
        5,
        8,
    )
    assert reply.finish_reason == "stop"
    json.dumps(reply.to_dict())  # journaled: must be JSON


async def test_tool_use_and_results(stubbed: tuple[BedrockModel, Stubber]) -> None:
    model, stubber = stubbed
    stubber.add_response(
        "converse",
        converse_reply(
            [{"toolUse": {"toolUseId": "t1", "name": "get_weather", "input": {"city": "Oslo"}}}],
            stop="tool_use",
        ),
        {
            "modelId": MODEL_ID,
            "messages": ANY,
            "toolConfig": {
                "tools": [
                    {
                        "toolSpec": {
                            "name": "get_weather",
                            "description": "Current weather in a city",
                            "inputSchema": {"json": WEATHER.parameters},
                        }
                    }
                ]
            },
        },
    )
    reply = await model.request(ModelRequest.of("Weather in Oslo?", tools=[WEATHER]))
    assert reply.tool_calls == (ToolCall("t1", "get_weather", {"city": "Oslo"}),)
    assert reply.finish_reason == "tool_calls"

    stubber.add_response(
        "converse",
        converse_reply([{"text": "Snow."}]),
        {
            "modelId": MODEL_ID,
            "messages": [
                {"role": "user", "content": [{"text": "Weather in Oslo?"}]},
                {
                    "role": "assistant",
                    "content": [
                        {
                            "toolUse": {
                                "toolUseId": "t1",
                                "name": "get_weather",
                                "input": {"city": "Oslo"},
                            }
                        }
                    ],
                },
                {
                    "role": "user",
                    "content": [{"toolResult": {"toolUseId": "t1", "content": [{"text": "snow"}]}}],
                },
            ],
        },
    )
    follow_up = [
        Message.user("Weather in Oslo?"),
        reply.message,
        Message.tool("snow", tool_call_id="t1"),
    ]
    assert (await model.request(ModelRequest.of(follow_up))).text == "Snow."


async def test_structured_output_forces_the_output_tool(
    stubbed: tuple[BedrockModel, Stubber],
) -> None:
    model, stubber = stubbed
    schema = {
        "type": "object",
        "properties": {"category": {"enum": ["legal", "billing"]}},
        "required": ["category"],
    }
    stubber.add_response(
        "converse",
        converse_reply(
            [
                {
                    "toolUse": {
                        "toolUseId": "t",
                        "name": "final_answer",
                        "input": {"category": "legal"},
                    }
                }
            ],
            stop="tool_use",
        ),
        {
            "modelId": MODEL_ID,
            "messages": ANY,
            "toolConfig": {
                "tools": [
                    {
                        "toolSpec": {
                            "name": "final_answer",
                            "description": ANY,
                            "inputSchema": {"json": schema},
                        }
                    }
                ],
                "toolChoice": {"tool": {"name": "final_answer"}},
            },
        },
    )
    value, responses = await generate_structured(model, "Review my contract", schema)
    assert value == {"category": "legal"}
    assert responses[0].tool_calls == ()


@pytest.mark.parametrize(
    ("code", "error", "advice"),
    [
        ("ThrottlingException", ModelThrottled, "throttled"),
        ("ServiceUnavailableException", ModelUnavailable, "unavailable"),
        ("ModelNotReadyException", ModelUnavailable, "unavailable"),
        ("ModelTimeoutException", ModelTimeout, "timed out"),
        ("AccessDeniedException", ModelError, "enable access to this model"),
        ("ValidationException", ModelError, "check the model id"),
        ("ResourceNotFoundException", ModelNotFound, "inference profile"),
    ],
)
async def test_botocore_errors_are_translated(
    stubbed: tuple[BedrockModel, Stubber], code: str, error: type[Exception], advice: str
) -> None:
    model, stubber = stubbed
    stubber.add_client_error("converse", service_error_code=code, service_message="from AWS")
    with pytest.raises(error, match=advice) as caught:
        await model.request(ModelRequest.of("Hi"))
    assert "from AWS" in str(caught.value)
    assert caught.value.__cause__ is not None


async def test_missing_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    # boto3's default session keeps the credentials it first resolved (the moto tests'
    # throwaway ones, when they ran first): start from a session that has none.
    import boto3

    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    model = infer_model(f"bedrock:{MODEL_ID}")
    with pytest.raises(ConfigurationError, match="AWS_PROFILE"):
        await model.request(ModelRequest.of("Hi"))


def test_missing_region(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    for var in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    with pytest.raises(ConfigurationError, match="AWS_REGION"):
        infer_model(f"bedrock:{MODEL_ID}")


# --- ConverseStream over a real HTTP exchange ---------------------------------------------


def _frame(headers: dict[str, str], payload: dict[str, Any]) -> bytes:
    """One message of the AWS event-stream binary format."""
    encoded = b""
    for name, value in headers.items():
        n, v = name.encode(), value.encode()
        encoded += bytes([len(n)]) + n + bytes([7]) + struct.pack(">H", len(v)) + v
    body = json.dumps(payload).encode()
    prelude = struct.pack(">II", 16 + len(encoded) + len(body), len(encoded))
    message = prelude + struct.pack(">I", zlib.crc32(prelude)) + encoded + body
    return message + struct.pack(">I", zlib.crc32(message))


def event(kind: str, payload: dict[str, Any]) -> bytes:
    return _frame(
        {":event-type": kind, ":content-type": "application/json", ":message-type": "event"},
        payload,
    )


def stream_model(provider: FakeProvider) -> BedrockModel:
    return BedrockModel(MODEL_ID, client=client(provider.url))


async def test_converse_stream_text_and_tool_use(provider: FakeProvider) -> None:
    body = b"".join(
        [
            event("messageStart", {"role": "assistant"}),
            event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "One "}}),
            event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "moment."}}),
            event("contentBlockStop", {"contentBlockIndex": 0}),
            event(
                "contentBlockStart",
                {
                    "contentBlockIndex": 1,
                    "start": {"toolUse": {"toolUseId": "t9", "name": "get_weather"}},
                },
            ),
            event(
                "contentBlockDelta",
                {"contentBlockIndex": 1, "delta": {"toolUse": {"input": '{"city":'}}},
            ),
            event(
                "contentBlockDelta",
                {"contentBlockIndex": 1, "delta": {"toolUse": {"input": ' "Bergen"}'}}},
            ),
            event("contentBlockStop", {"contentBlockIndex": 1}),
            event("messageStop", {"stopReason": "tool_use"}),
            event(
                "metadata",
                {
                    "usage": {"inputTokens": 14, "outputTokens": 9, "totalTokens": 23},
                    "metrics": {"latencyMs": 80},
                },
            ),
        ]
    )
    provider.raw(body, headers={"Content-Type": "application/vnd.amazon.eventstream"})
    model = stream_model(provider)
    chunks = [c async for c in model.stream(ModelRequest.of("Bergen?", tools=[WEATHER]))]

    assert [c.delta for c in chunks if c.delta] == ["One ", "moment."]
    final = chunks[-1].response
    assert final is not None
    assert final.text == "One moment."
    assert final.tool_calls == (ToolCall("t9", "get_weather", {"city": "Bergen"}),)
    assert (final.usage.input_tokens, final.usage.output_tokens) == (14, 9)
    assert provider.requests[0].path == f"/model/{MODEL_ID}/converse-stream".replace(":", "%3A")


async def test_converse_stream_throttled(provider: FakeProvider) -> None:
    provider.raw(
        b'{"message": "Too many requests"}',
        status=429,
        headers={"Content-Type": "application/json", "x-amzn-ErrorType": "ThrottlingException"},
    )
    model = stream_model(provider)
    with pytest.raises(ModelThrottled, match="Too many requests"):
        async for _ in model.stream(ModelRequest.of("Hi")):
            pass
