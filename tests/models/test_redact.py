"""Credentials never leave a model adapter in an error: a proxy echoing the request (headers
included) in its error body must not put the API key into what cadenza stores."""

from __future__ import annotations

import json
from typing import Any

import boto3
import httpx
import pytest
from botocore.stub import Stubber

from cadenza.errors import ErrorInfo, ModelError, ModelUnavailable
from cadenza.models import ModelRequest
from cadenza.models._anthropic import AnthropicModel
from cadenza.models._bedrock import BedrockModel
from cadenza.models._openai import OpenAIModel
from cadenza.models._redact import REDACTED, redact

OPENAI_KEY = "sk-proj-PLANTEDkey0123456789abcdefXYZ"
ANTHROPIC_KEY = "sk-ant-api03-PLANTEDkey0123456789abcdef"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYPLANTEDKEY"  # 40 characters


@pytest.mark.parametrize(
    "text",
    [
        f"Authorization: Bearer {OPENAI_KEY}",
        f'{{"headers": {{"authorization": "Bearer {OPENAI_KEY}"}}}}',
        f"{{'Authorization': 'Bearer {OPENAI_KEY}'}}",
        f"x-api-key: {ANTHROPIC_KEY}",
        f'"api-key": "{ANTHROPIC_KEY}"',
        f"api_key={OPENAI_KEY}&model=gpt",
        f"token was {OPENAI_KEY}.",  # a key's shape alone
        f"bearer {'a1b2c3d4e5' * 3}",
        f"aws_secret_access_key = {AWS_SECRET}",
        f"SecretAccessKey: {AWS_SECRET}",
    ],
)
def test_credentials_of_every_shape_are_redacted(text: str) -> None:
    cleaned = redact(text)
    assert REDACTED in cleaned
    for secret in (OPENAI_KEY, ANTHROPIC_KEY, AWS_SECRET, "a1b2c3d4e5" * 3):
        assert secret not in cleaned


def test_configured_secrets_are_redacted_wherever_they_appear() -> None:
    plain = "my-gateway-key-42"
    assert redact(f"bad request: echo {plain}!", [plain]) == f"bad request: echo {REDACTED}!"
    # Ordinary words survive, and short "secrets" do not blank the text.
    assert redact("model gpt-4o-mini not found", ["gpt"]) == "model gpt-4o-mini not found"


def echoing_proxy(status: int, *, as_json: bool = True) -> httpx.AsyncClient:
    """A proxy that answers every request with an error quoting the request's headers."""

    def answer(request: httpx.Request) -> httpx.Response:
        headers = dict(request.headers)
        if as_json:
            body = json.dumps({"error": {"message": f"upstream refused request {headers}"}})
        else:
            body = "bad gateway; request was:\n" + "\n".join(
                f"{k}: {v}" for k, v in headers.items()
            )
        return httpx.Response(status, text=body)

    return httpx.AsyncClient(transport=httpx.MockTransport(answer))


def stored_text(error: BaseException) -> str:
    """Everything cadenza would store of an error: message, details and traceback."""
    try:
        raise error
    except BaseException as raised:
        return json.dumps(ErrorInfo.from_exception(raised).to_dict())


@pytest.mark.parametrize("status", [400, 401, 429, 500])
@pytest.mark.parametrize("as_json", [True, False], ids=["json", "text"])
async def test_openai_errors_quote_no_key(status: int, as_json: bool) -> None:
    model = OpenAIModel(
        "gpt-4o-mini",
        base_url="http://proxy.test/v1",
        api_key=OPENAI_KEY,
        http_client=echoing_proxy(status, as_json=as_json),
    )
    with pytest.raises(ModelError) as caught:
        await model.request(ModelRequest.of("hi"))
    assert "authorization" in caught.value.message.lower()  # the echo is still readable
    assert OPENAI_KEY not in stored_text(caught.value)
    with pytest.raises(ModelError) as streamed:
        async for _ in model.stream(ModelRequest.of("hi")):
            pass
    assert OPENAI_KEY not in stored_text(streamed.value)


@pytest.mark.parametrize("status", [401, 529])
async def test_anthropic_errors_quote_no_key(status: int) -> None:
    model = AnthropicModel("claude-haiku", api_key=ANTHROPIC_KEY, http_client=echoing_proxy(status))
    with pytest.raises(ModelError) as caught:
        await model.request(ModelRequest.of("hi"))
    assert REDACTED in caught.value.message
    assert ANTHROPIC_KEY not in stored_text(caught.value)
    with pytest.raises(ModelError) as streamed:
        async for _ in model.stream(ModelRequest.of("hi")):
            pass
    assert ANTHROPIC_KEY not in stored_text(streamed.value)


async def test_a_transport_error_quoting_the_key_loses_its_cause() -> None:
    def broken(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"proxy said: Authorization: Bearer {OPENAI_KEY}")

    model = OpenAIModel(
        "gpt-4o-mini",
        base_url="http://proxy.test/v1",
        api_key=OPENAI_KEY,
        http_client=httpx.AsyncClient(transport=httpx.MockTransport(broken)),
    )
    with pytest.raises(ModelUnavailable) as caught:
        await model.request(ModelRequest.of("hi"))
    assert OPENAI_KEY not in stored_text(caught.value)
    assert caught.value.__cause__ is None  # its text would have been printed in the traceback


def bedrock_client() -> Any:
    return boto3.client(
        "bedrock-runtime",
        region_name="us-east-1",
        aws_access_key_id="AKIAIOSFODNN7EXAMPLE",
        aws_secret_access_key=AWS_SECRET,
    )


@pytest.mark.parametrize("code", ["ValidationException", "AccessDeniedException", "Weird"])
async def test_bedrock_errors_quote_no_secret_key(code: str) -> None:
    client = bedrock_client()
    with Stubber(client) as stubber:
        stubber.add_client_error(
            "converse",
            service_error_code=code,
            service_message=f"signature used secret {AWS_SECRET} with key AKIAIOSFODNN7EXAMPLE",
            http_status_code=400,
        )
        model = BedrockModel("us.amazon.nova-lite-v1:0", client=client)
        with pytest.raises(ModelError) as caught:
            await model.request(ModelRequest.of("hi"))
    stored = stored_text(caught.value)
    assert AWS_SECRET not in stored and "AKIAIOSFODNN7EXAMPLE" not in stored
    assert REDACTED in caught.value.message


async def test_a_successful_reply_echoing_the_key_is_stored_without_it() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        echoed = request.headers["authorization"]
        message = {"role": "assistant", "content": f"your header was {echoed}"}
        return httpx.Response(
            200,
            json={
                "choices": [{"message": message, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 5},
                "echo": {"headers": dict(request.headers)},
            },
        )

    model = OpenAIModel(
        "gpt-4o-mini",
        base_url="http://proxy.test/v1",
        api_key=OPENAI_KEY,
        http_client=httpx.AsyncClient(transport=httpx.MockTransport(answer)),
    )
    reply = await model.request(ModelRequest.of("hi"))
    assert reply.text == f"your header was Bearer {REDACTED}"
    assert OPENAI_KEY not in json.dumps(reply.to_dict())
    assert reply.usage.output_tokens == 5
