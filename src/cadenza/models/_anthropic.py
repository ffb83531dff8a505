"""Anthropic Messages API (``/v1/messages``) over httpx.

The system prompt goes in ``system``; tool results travel as ``tool_result`` blocks in a
user turn (consecutive ones merged, as the API requires alternating roles). Structured
output uses a tool whose input schema is the output schema, which the model is made to
call. Usage counts ``cache_read_input_tokens`` as cached tokens and cache writes as input.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

from ..errors import ConfigurationError, MissingDependency, ModelError, ModelResponseError

try:
    import httpx
except ImportError as exc:  # pragma: no cover - exercised by hiding httpx in the tests
    raise MissingDependency("the 'anthropic' model provider", "anthropic") from exc

from ._base import Model
from ._http import error_for_status, map_transport_error, sse
from ._json import (
    OUTPUT_TOOL,
    OUTPUT_TOOL_DESCRIPTION,
    output_tool_schema,
    output_tool_text,
    parse_json,
)
from ._redact import scrub, without_secrets
from ._types import FinishReason, Message, ModelRequest, ModelResponse, StreamChunk, ToolCall, Usage

__all__ = ["AnthropicModel"]

ANTHROPIC_URL = "https://api.anthropic.com"
API_VERSION = "2023-06-01"

_FINISH: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
    "pause_turn": "stop",
}


class AnthropicModel(Model):
    """A Claude model through the Anthropic API. The key comes from ``ANTHROPIC_API_KEY``.

    ``max_tokens`` is required by the API; ``default_max_tokens`` is used when the request
    sets none.
    """

    def __init__(
        self,
        model: str,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        default_max_tokens: int = 1024,
        timeout: float = 120.0,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        self.model = model
        self.name = f"anthropic:{model}"
        key = api_key or os.environ.get("ANTHROPIC_API_KEY")
        if not key:
            raise ConfigurationError(
                f"{self.name} needs an API key: set ANTHROPIC_API_KEY (or pass api_key=...)"
            )
        self.base_url = (base_url or os.environ.get("ANTHROPIC_BASE_URL") or ANTHROPIC_URL).rstrip(
            "/"
        )
        self.default_max_tokens = default_max_tokens
        self._headers = {"x-api-key": key, "anthropic-version": API_VERSION}
        self._secrets = (key,)
        self._owns_client = http_client is None
        self._client = http_client or httpx.AsyncClient(timeout=timeout)

    def _body(self, req: ModelRequest, *, stream: bool) -> tuple[dict[str, Any], bool]:
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": req.max_tokens or self.default_max_tokens,
            "messages": _messages(req.conversation),
        }
        if req.system_prompt:
            body["system"] = req.system_prompt
        tools = [
            {"name": t.name, "description": t.description, "input_schema": t.parameters}
            for t in req.tools
        ]
        wrapped = False
        if req.output_schema is not None:
            schema, wrapped = output_tool_schema(req.output_schema)
            tools.append(
                {
                    "name": OUTPUT_TOOL,
                    "description": OUTPUT_TOOL_DESCRIPTION,
                    "input_schema": schema,
                }
            )
            # With other tools the model may still call them; it must end with the answer.
            body["tool_choice"] = (
                {"type": "any"} if req.tools else {"type": "tool", "name": OUTPUT_TOOL}
            )
        if tools:
            body["tools"] = tools
        if req.temperature is not None:
            body["temperature"] = req.temperature
        if req.stop:
            body["stop_sequences"] = list(req.stop)
        if stream:
            body["stream"] = True
        return body, wrapped

    def _check(self, status: int, body: str, headers: httpx.Headers) -> None:
        if status >= 400:
            raise error_for_status(
                self.name, status, body, headers, key_env="ANTHROPIC_API_KEY", secrets=self._secrets
            )

    async def request(self, req: ModelRequest) -> ModelResponse:
        try:
            response = await self._request(req)
        except Exception as exc:  # errors are stored: no key may leave in one
            scrub(exc, self._secrets)
            raise
        return without_secrets(response, self._secrets)

    async def stream(self, req: ModelRequest) -> AsyncIterator[StreamChunk]:
        try:
            async for chunk in self._stream(req):
                if chunk.response is not None:
                    chunk = StreamChunk(chunk.delta, without_secrets(chunk.response, self._secrets))
                yield chunk
        except Exception as exc:
            scrub(exc, self._secrets)
            raise

    async def _request(self, req: ModelRequest) -> ModelResponse:
        body, wrapped = self._body(req, stream=False)
        try:
            reply = await self._client.post(
                f"{self.base_url}/v1/messages", json=body, headers=self._headers
            )
        except httpx.HTTPError as exc:
            raise map_transport_error(self.name, exc, secrets=self._secrets) from exc
        self._check(reply.status_code, reply.text, reply.headers)
        data = parse_json(reply.text, f"the reply of {self.name}")
        if not isinstance(data, dict) or not isinstance(data.get("content"), list):
            raise ModelResponseError(f"{self.name} replied without content: {data!r:.300}")
        return self._response(data["content"], data, wrapped)

    def _response(
        self, blocks: list[dict[str, Any]], data: dict[str, Any], wrapped: bool
    ) -> ModelResponse:
        text: list[str] = []
        calls: list[ToolCall] = []
        finish = _FINISH.get(data.get("stop_reason") or "", "unknown")
        for block in blocks:
            if block.get("type") == "text":
                text.append(block.get("text", ""))
            elif block.get("type") == "tool_use":
                if block.get("name") == OUTPUT_TOOL:
                    text = [output_tool_text(block.get("input"), wrapped)]
                    finish = "stop"
                else:
                    # ToolCall refuses input that is not an object: a reply the model is told of.
                    calls.append(ToolCall(block["id"], block["name"], block.get("input", {})))
        return ModelResponse(
            text="".join(text),
            tool_calls=tuple(calls),
            usage=_usage(data.get("usage")),
            model=self.name,
            finish_reason=finish,
            raw=data,
        )

    async def _stream(self, req: ModelRequest) -> AsyncIterator[StreamChunk]:
        body, wrapped = self._body(req, stream=True)
        blocks: dict[int, dict[str, Any]] = {}
        partial_json: dict[int, str] = {}
        message: dict[str, Any] = {}
        usage: dict[str, Any] = {}
        try:
            async with self._client.stream(
                "POST", f"{self.base_url}/v1/messages", json=body, headers=self._headers
            ) as reply:
                if reply.status_code >= 400:
                    raw = (await reply.aread()).decode(errors="replace")
                    self._check(reply.status_code, raw, reply.headers)
                async for event in sse(reply):
                    data = parse_json(event.data, f"a stream event of {self.name}")
                    kind = data.get("type", event.event)
                    if kind == "message_start":
                        message = dict(data.get("message") or {})
                        usage.update(message.get("usage") or {})
                    elif kind == "content_block_start":
                        blocks[data["index"]] = dict(data["content_block"])
                    elif kind == "content_block_delta":
                        delta = data.get("delta") or {}
                        block = blocks.setdefault(data["index"], {"type": "text", "text": ""})
                        if delta.get("type") == "text_delta":
                            block["text"] = block.get("text", "") + delta.get("text", "")
                            yield StreamChunk(delta=delta.get("text", ""))
                        elif delta.get("type") == "input_json_delta":
                            partial_json[data["index"]] = partial_json.get(
                                data["index"], ""
                            ) + delta.get("partial_json", "")
                    elif kind == "message_delta":
                        message.update(data.get("delta") or {})
                        usage.update(data.get("usage") or {})
                    elif kind == "error":
                        error = data.get("error") or {}
                        status = 529 if error.get("type") == "overloaded_error" else 500
                        raise error_for_status(
                            self.name,
                            status,
                            str(error.get("message")),
                            httpx.Headers(),
                            key_env="ANTHROPIC_API_KEY",
                            secrets=self._secrets,
                        )
        except httpx.HTTPError as exc:
            raise map_transport_error(self.name, exc, secrets=self._secrets) from exc
        for index, text in partial_json.items():
            value = parse_json(text or "{}", f"the tool input streamed by {self.name}")
            blocks[index]["input"] = value
        message["usage"] = usage
        yield StreamChunk(
            response=self._response([blocks[i] for i in sorted(blocks)], message, wrapped)
        )

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()


def _messages(conversation: tuple[Message, ...]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for m in conversation:
        role = "assistant" if m.role == "assistant" else "user"
        blocks: list[dict[str, Any]] = []
        if m.role == "tool":
            blocks.append(
                {"type": "tool_result", "tool_use_id": m.tool_call_id, "content": m.content}
            )
        else:
            if m.content:
                blocks.append({"type": "text", "text": m.content})
            blocks.extend(
                {"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments}
                for c in m.tool_calls
            )
        if not blocks:
            continue
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})
    if not out:
        raise ModelError("a request to Anthropic needs at least one user message")
    return out


def _usage(data: dict[str, Any] | None) -> Usage:
    data = data or {}
    return Usage(
        input_tokens=int(data.get("input_tokens") or 0)
        + int(data.get("cache_creation_input_tokens") or 0),
        output_tokens=int(data.get("output_tokens") or 0),
        cached_tokens=int(data.get("cache_read_input_tokens") or 0),
        requests=1,
    )
