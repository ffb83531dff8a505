"""OpenAI-compatible chat completions over httpx: OpenAI, vLLM, Ollama, LM Studio, llama.cpp server.

Tools map to ``tools`` of type ``function``; an output schema maps to ``response_format``
``json_schema``; streaming reads the server-sent ``chat.completion.chunk`` events, asking for
the usage in the last one (``stream_options.include_usage``).
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from typing import Any

from ..errors import ConfigurationError, MissingDependency, ModelResponseError

try:
    import httpx
except ImportError as exc:  # pragma: no cover - exercised by hiding httpx in the tests
    raise MissingDependency("the 'openai' model provider", "openai") from exc

from ._base import Model
from ._http import error_for_status, map_transport_error, sse
from ._json import parse_json
from ._redact import scrub, without_secrets
from ._types import FinishReason, Message, ModelRequest, ModelResponse, StreamChunk, ToolCall, Usage

__all__ = ["OpenAIModel"]

OPENAI_URL = "https://api.openai.com/v1"

_FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
}


class OpenAIModel(Model):
    """A model behind an OpenAI-compatible ``/chat/completions`` endpoint.

    ``OpenAIModel("gpt-4o-mini")`` uses ``OPENAI_API_KEY``;
    ``OpenAIModel("llama3.2", base_url="http://localhost:11434/v1")`` talks to Ollama, which
    needs no key. ``base_url`` defaults to ``OPENAI_BASE_URL`` or the OpenAI API.
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float = 120.0,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        self.model = model
        self.name = f"openai:{model}"
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or OPENAI_URL).rstrip("/")
        self.api_key = api_key or os.environ.get("OPENAI_API_KEY")
        if not self.api_key and self.base_url == OPENAI_URL:
            raise ConfigurationError(
                f"{self.name} needs an API key: set OPENAI_API_KEY (or pass api_key=...), or "
                "point OPENAI_BASE_URL at an OpenAI-compatible server that needs none"
            )
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        self._owns_client = http_client is None
        self._client = http_client or httpx.AsyncClient(timeout=timeout)
        self._headers = headers

    # --- request body ------------------------------------------------------------------

    def _body(self, req: ModelRequest, *, stream: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [_message(m) for m in req.messages],
        }
        if req.tools:
            body["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": t.name,
                        "description": t.description,
                        "parameters": t.parameters,
                    },
                }
                for t in req.tools
            ]
        if req.output_schema is not None:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": req.output_schema},
            }
        if req.temperature is not None:
            body["temperature"] = req.temperature
        if req.max_tokens is not None:
            body["max_tokens"] = req.max_tokens
        if req.stop:
            body["stop"] = list(req.stop)
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return body

    # --- calls ---------------------------------------------------------------------------

    async def request(self, req: ModelRequest) -> ModelResponse:
        try:
            response = await self._request(req)
        except Exception as exc:  # errors are stored: no key may leave in one
            scrub(exc, (self.api_key,))
            raise
        return without_secrets(response, (self.api_key,))

    async def stream(self, req: ModelRequest) -> AsyncIterator[StreamChunk]:
        try:
            async for chunk in self._stream(req):
                if chunk.response is not None:
                    chunk = StreamChunk(
                        chunk.delta, without_secrets(chunk.response, (self.api_key,))
                    )
                yield chunk
        except Exception as exc:
            scrub(exc, (self.api_key,))
            raise

    async def _request(self, req: ModelRequest) -> ModelResponse:
        url = f"{self.base_url}/chat/completions"
        try:
            reply = await self._client.post(
                url, json=self._body(req, stream=False), headers=self._headers
            )
        except httpx.HTTPError as exc:
            raise map_transport_error(self.name, exc, secrets=(self.api_key,)) from exc
        if reply.status_code >= 400:
            raise error_for_status(
                self.name,
                reply.status_code,
                reply.text,
                reply.headers,
                key_env="OPENAI_API_KEY",
                secrets=(self.api_key,),
            )
        data = parse_json(reply.text, f"the reply of {self.name}")
        try:
            choice = data["choices"][0]
            message = choice["message"]
        except (KeyError, IndexError, TypeError) as exc:
            raise ModelResponseError(
                f"{self.name} replied without a choice: {data!r:.300}"
            ) from exc
        calls = tuple(
            ToolCall(
                id=c.get("id") or f"call_{i}",
                name=c["function"]["name"],
                arguments=self._arguments(c["function"].get("arguments")),
            )
            for i, c in enumerate(message.get("tool_calls") or ())
        )
        return ModelResponse(
            text=message.get("content") or "",
            tool_calls=calls,
            usage=_usage(data.get("usage")),
            model=self.name,
            finish_reason=_FINISH.get(choice.get("finish_reason") or "", "unknown"),
            raw=data,
        )

    async def _stream(self, req: ModelRequest) -> AsyncIterator[StreamChunk]:
        url = f"{self.base_url}/chat/completions"
        text: list[str] = []
        calls: dict[int, dict[str, str]] = {}
        finish: FinishReason = "unknown"
        usage = Usage(requests=1)
        try:
            async with self._client.stream(
                "POST", url, json=self._body(req, stream=True), headers=self._headers
            ) as reply:
                if reply.status_code >= 400:
                    body = (await reply.aread()).decode(errors="replace")
                    raise error_for_status(
                        self.name,
                        reply.status_code,
                        body,
                        reply.headers,
                        key_env="OPENAI_API_KEY",
                        secrets=(self.api_key,),
                    )
                async for event in sse(reply):
                    if event.data.strip() == "[DONE]":
                        break
                    data = parse_json(event.data, f"a stream event of {self.name}")
                    if data.get("usage"):
                        usage = _usage(data["usage"])
                    for choice in data.get("choices") or ():
                        delta = choice.get("delta") or {}
                        if delta.get("content"):
                            text.append(delta["content"])
                            yield StreamChunk(delta=delta["content"])
                        for part in delta.get("tool_calls") or ():
                            slot = calls.setdefault(
                                part.get("index", 0), {"id": "", "name": "", "arguments": ""}
                            )
                            function = part.get("function") or {}
                            slot["id"] = part.get("id") or slot["id"]
                            slot["name"] = function.get("name") or slot["name"]
                            slot["arguments"] += function.get("arguments") or ""
                        if choice.get("finish_reason"):
                            finish = _FINISH.get(choice["finish_reason"], "unknown")
        except httpx.HTTPError as exc:
            raise map_transport_error(self.name, exc, secrets=(self.api_key,)) from exc
        tool_calls = tuple(
            ToolCall(
                id=slot["id"] or f"call_{i}",
                name=slot["name"],
                arguments=self._arguments(slot["arguments"]),
            )
            for i, slot in sorted(calls.items())
        )
        response = ModelResponse(
            text="".join(text),
            tool_calls=tool_calls,
            usage=usage,
            model=self.name,
            finish_reason=finish,
        )
        yield StreamChunk(response=response)

    def _arguments(self, raw: Any) -> dict[str, Any]:
        if isinstance(raw, dict):
            return raw
        if not raw:
            return {}
        value = parse_json(str(raw), f"the tool call arguments of {self.name}")
        if not isinstance(value, dict):
            raise ModelResponseError(f"{self.name} sent tool arguments that are not an object")
        return value

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()


def _message(m: Message) -> dict[str, Any]:
    if m.role == "tool":
        return {"role": "tool", "tool_call_id": m.tool_call_id, "content": m.content}
    out: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.tool_calls:
        out["content"] = m.content or None
        out["tool_calls"] = [
            {
                "id": c.id,
                "type": "function",
                "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
            }
            for c in m.tool_calls
        ]
    return out


def _usage(data: dict[str, Any] | None) -> Usage:
    if not data:
        return Usage(requests=1)
    prompt = int(data.get("prompt_tokens") or 0)
    cached = int((data.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
    return Usage(
        input_tokens=prompt - cached,
        output_tokens=int(data.get("completion_tokens") or 0),
        cached_tokens=cached,
        requests=1,
    )
