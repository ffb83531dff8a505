"""Amazon Bedrock through the Converse and ConverseStream APIs (boto3 ``bedrock-runtime``).

boto3 is blocking, so calls run in a worker thread. Tools map to ``toolConfig``; structured
output is a tool whose ``inputSchema`` is the output schema with ``toolChoice`` forcing it
(the usual way with Converse; it works for every model that supports tool choice). botocore
errors become cadenza errors at this boundary, most specific first.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

from ..errors import (
    ConfigurationError,
    MissingDependency,
    ModelError,
    ModelNotFound,
    ModelResponseError,
    ModelThrottled,
    ModelTimeout,
    ModelUnavailable,
)

try:
    import boto3
    import botocore.exceptions as bexc
    from botocore.config import Config
except ImportError as exc:  # pragma: no cover - exercised by hiding boto3 in the tests
    raise MissingDependency("the 'bedrock' model provider", "aws") from exc

from ._base import Model
from ._json import (
    OUTPUT_TOOL,
    OUTPUT_TOOL_DESCRIPTION,
    output_tool_schema,
    output_tool_text,
    parse_json,
)
from ._redact import scrub
from ._threads import iterate_in_thread
from ._types import FinishReason, Message, ModelRequest, ModelResponse, StreamChunk, ToolCall, Usage

__all__ = ["BedrockModel"]

# One attempt per call: retries, backoff and fallback are decided by cadenza's retry policy
# and wrappers, which see the translated error. Long generations need a long read timeout.
_CONFIG = Config(retries={"mode": "standard", "total_max_attempts": 1}, read_timeout=300)

_FINISH: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "tool_use": "tool_calls",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
    "malformed_model_output": "error",
    "malformed_tool_use": "error",
}


class BedrockModel(Model):
    """A model on Amazon Bedrock, named by its model id or inference profile id.

    ``BedrockModel("us.amazon.nova-lite-v1:0", region="us-east-1")``. Credentials and region
    come from the usual AWS chain (``AWS_PROFILE``, ``AWS_REGION``, instance role, ...), or
    pass a ready ``client``. The client makes one attempt per call: retrying is left to the
    step's retry policy and to :class:`FallbackModel`.
    """

    def __init__(self, model_id: str, *, region: str | None = None, client: Any = None) -> None:
        self.name = f"bedrock:{model_id}"
        if client is None:
            try:
                # botocore reads AWS_DEFAULT_REGION; AWS_REGION is what AWS runtimes set.
                region = region or os.environ.get("AWS_REGION")
                client = boto3.client("bedrock-runtime", region_name=region, config=_CONFIG)
            except bexc.NoRegionError as exc:
                raise ConfigurationError(
                    f"{self.name} needs an AWS region: set AWS_REGION (or pass region=...)"
                ) from exc
        self.client = client

    # --- request -------------------------------------------------------------------------

    def _params(self, req: ModelRequest) -> tuple[dict[str, Any], bool]:
        params: dict[str, Any] = {"modelId": self.model_id, "messages": _messages(req)}
        if req.system_prompt:
            params["system"] = [{"text": req.system_prompt}]
        inference: dict[str, Any] = {}
        if req.max_tokens is not None:
            inference["maxTokens"] = req.max_tokens
        if req.temperature is not None:
            inference["temperature"] = req.temperature
        if req.stop:
            inference["stopSequences"] = list(req.stop)
        if inference:
            params["inferenceConfig"] = inference
        tools = [_tool(t.name, t.description, t.parameters) for t in req.tools]
        wrapped = False
        config: dict[str, Any] = {}
        if req.output_schema is not None:
            schema, wrapped = output_tool_schema(req.output_schema)
            tools.append(_tool(OUTPUT_TOOL, OUTPUT_TOOL_DESCRIPTION, schema))
            config["toolChoice"] = {"any": {}} if req.tools else {"tool": {"name": OUTPUT_TOOL}}
        if tools:
            params["toolConfig"] = {"tools": tools, **config}
        return params, wrapped

    # --- calls ---------------------------------------------------------------------------

    async def request(self, req: ModelRequest) -> ModelResponse:
        params, wrapped = self._params(req)
        try:
            data = await asyncio.to_thread(lambda: self.client.converse(**params))
        except Exception as exc:
            error = self._stored_error(exc)
            raise error from error.__cause__  # None when the cause quotes a credential
        data.pop("ResponseMetadata", None)
        try:
            blocks = data["output"]["message"]["content"]
        except (KeyError, TypeError) as exc:
            raise ModelResponseError(f"{self.name} replied without a message") from exc
        return self._response(blocks, data.get("stopReason"), data.get("usage"), wrapped, data)

    def _response(
        self,
        blocks: list[dict[str, Any]],
        stop_reason: str | None,
        usage: dict[str, Any] | None,
        wrapped: bool,
        raw: Any,
    ) -> ModelResponse:
        text: list[str] = []
        calls: list[ToolCall] = []
        finish = _FINISH.get(stop_reason or "", "unknown")
        for block in blocks:
            if "text" in block:
                text.append(block["text"])
            elif "toolUse" in block:
                use = block["toolUse"]
                if use["name"] == OUTPUT_TOOL:
                    text = [output_tool_text(use.get("input"), wrapped)]
                    finish = "stop"
                else:
                    # ToolCall refuses input that is not an object: a reply the model is told of.
                    calls.append(ToolCall(use["toolUseId"], use["name"], use.get("input", {})))
        return ModelResponse(
            text="".join(text),
            tool_calls=tuple(calls),
            usage=_usage(usage),
            model=self.name,
            finish_reason=finish,
            raw=raw,
        )

    async def stream(self, req: ModelRequest) -> AsyncIterator[StreamChunk]:
        params, wrapped = self._params(req)

        def events() -> Iterator[dict[str, Any]]:
            yield from self.client.converse_stream(**params)["stream"]

        blocks: dict[int, dict[str, Any]] = {}
        tool_input: dict[int, str] = {}
        stop_reason: str | None = None
        usage: dict[str, Any] | None = None
        try:
            async for event in iterate_in_thread(events):
                if "contentBlockStart" in event:
                    start = event["contentBlockStart"]
                    use = (start.get("start") or {}).get("toolUse")
                    if use:
                        blocks[start["contentBlockIndex"]] = {"toolUse": dict(use)}
                elif "contentBlockDelta" in event:
                    delta_event = event["contentBlockDelta"]
                    index = delta_event["contentBlockIndex"]
                    delta = delta_event["delta"]
                    if "text" in delta:
                        block = blocks.setdefault(index, {"text": ""})
                        block["text"] = block.get("text", "") + delta["text"]
                        yield StreamChunk(delta=delta["text"])
                    elif "toolUse" in delta:
                        tool_input[index] = tool_input.get(index, "") + delta["toolUse"]["input"]
                elif "messageStop" in event:
                    stop_reason = event["messageStop"].get("stopReason")
                elif "metadata" in event:
                    usage = event["metadata"].get("usage")
        except Exception as exc:
            error = self._stored_error(exc)
            raise error from error.__cause__  # None when the cause quotes a credential
        for index, text in tool_input.items():
            blocks[index]["toolUse"]["input"] = parse_json(
                text or "{}", f"the tool input streamed by {self.name}"
            )
        ordered = [blocks[i] for i in sorted(blocks)]
        raw = {"stopReason": stop_reason, "usage": usage}
        yield StreamChunk(response=self._response(ordered, stop_reason, usage, wrapped, raw))

    # --- errors --------------------------------------------------------------------------

    def _stored_error(self, exc: Exception) -> BaseException:
        """The error to raise for ``exc``: translated, and with no credential in its text
        or in a cause a stored traceback would print (errors go to the journal)."""
        error = self._translate(exc)
        if error is not exc:
            error.__cause__ = exc
        return scrub(error, self._secrets())

    def _secrets(self) -> tuple[str | None, ...]:
        try:
            frozen = self.client._request_signer._credentials.get_frozen_credentials()
        except Exception:  # a stub client, or no credentials resolved yet
            return ()
        return (frozen.secret_key, frozen.token)

    def _translate(self, exc: Exception) -> Exception:
        if isinstance(exc, bexc.NoCredentialsError | bexc.PartialCredentialsError):
            return ConfigurationError(
                f"no AWS credentials for {self.name}: set AWS_PROFILE, or AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, or run where an IAM role is available"
            )
        if isinstance(exc, bexc.ReadTimeoutError | bexc.ConnectTimeoutError):
            return ModelTimeout(f"{self.name} did not answer in time ({type(exc).__name__})")
        if isinstance(exc, bexc.EndpointConnectionError):
            return ModelUnavailable(f"cannot reach Bedrock for {self.name}: {exc}")
        if not isinstance(exc, bexc.ClientError):
            return exc
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        message = str(error.get("Message", "")) or str(exc)
        if code in (
            "ThrottlingException",
            "TooManyRequestsException",
            "ServiceQuotaExceededException",
        ):
            return ModelThrottled(f"{self.name} is throttled ({code}: {message})")
        if code in (
            "ServiceUnavailableException",
            "ModelNotReadyException",
            "InternalServerException",
            "ModelStreamErrorException",
        ):
            return ModelUnavailable(f"{self.name} is unavailable ({code}: {message})")
        if code == "ModelTimeoutException":
            return ModelTimeout(f"{self.name} timed out ({code}: {message})")
        if code == "AccessDeniedException":
            return ModelError(
                f"access to {self.name} was denied ({message}); enable access to this model in "
                "the Bedrock console for this region and allow bedrock:InvokeModel (and "
                "bedrock:InvokeModelWithResponseStream) in the IAM policy"
            )
        if code == "ResourceNotFoundException":
            return ModelNotFound(
                f"{self.name} was not found ({message}); check the model id and region, or use "
                "an inference profile id such as 'us.<model id>'"
            )
        if code == "ValidationException":
            return ModelError(
                f"Bedrock rejected the request to {self.name} ({message}); check the model id "
                "and that the model supports the features used (tools, system prompt)"
            )
        if code == "ModelErrorException":
            return ModelResponseError(f"{self.name} failed to produce a reply ({message})")
        return ModelError(f"{self.name}: {code}: {message}")


def _tool(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = {"name": name, "inputSchema": {"json": schema}}
    if description:
        spec["description"] = description
    return {"toolSpec": spec}


def _messages(req: ModelRequest) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for m in req.conversation:
        role = "assistant" if m.role == "assistant" else "user"
        blocks = _blocks(m)
        if not blocks:
            continue
        if out and out[-1]["role"] == role:  # Converse wants alternating roles
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})
    return out


def _blocks(m: Message) -> list[dict[str, Any]]:
    if m.role == "tool":
        return [{"toolResult": {"toolUseId": m.tool_call_id, "content": [{"text": m.content}]}}]
    blocks: list[dict[str, Any]] = [{"text": m.content}] if m.content else []
    blocks.extend(
        {"toolUse": {"toolUseId": c.id, "name": c.name, "input": c.arguments}} for c in m.tool_calls
    )
    return blocks


def _usage(data: dict[str, Any] | None) -> Usage:
    data = data or {}
    return Usage(
        input_tokens=int(data.get("inputTokens") or 0)
        + int(data.get("cacheWriteInputTokens") or 0),
        output_tokens=int(data.get("outputTokens") or 0),
        cached_tokens=int(data.get("cacheReadInputTokens") or 0),
        requests=1,
    )
