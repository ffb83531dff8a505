"""What an operation is called in a trace, with the OpenTelemetry GenAI semantic
conventions for model and tool calls.

A model call is a step whose recorded result is a model reply (``chat MODEL``); a tool
call is a step whose recorded result is a tool outcome (``execute_tool TOOL``). Both are
read from the journal record, so a span says exactly what replay will return. Message
content is added only when asked for (``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from opentelemetry.trace import SpanKind

from cadenza.journal import OpRecord

if TYPE_CHECKING:
    from cadenza.engine._instrumentation import OperationInfo

__all__ = ["genai_attributes", "model_reply", "tool_outcome"]


def _result(record: OpRecord) -> dict[str, Any] | None:
    text = record.result
    if not text or text.startswith("@"):  # a claim-checked value: not a reply worth reading
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def model_reply(record: OpRecord) -> dict[str, Any] | None:
    """The model reply ``record`` holds, or None when it is not a model call."""
    if record.type != "step" or not record.result or '"finish_reason"' not in record.result:
        return None
    data = _result(record)
    if data is None or "usage" not in data or "text" not in data:
        return None
    return data


def tool_outcome(record: OpRecord) -> dict[str, Any] | None:
    """The tool outcome ``record`` holds (``{"ok": …, "output": …}``), or None."""
    if record.type != "step" or not record.result or '"ok"' not in record.result:
        return None
    data = _result(record)
    if data is None or set(data) - {"ok", "output", "error_type"} or "output" not in data:
        return None
    return data


def genai_attributes(
    info: OperationInfo, capture_content: bool
) -> tuple[str, SpanKind, dict[str, Any]]:
    """(span name, kind, attributes) of the operation ``info`` describes."""
    record = info.record
    reply = model_reply(record)
    if reply is not None or (info.type == "step" and info.name.startswith("model:")):
        return _chat(info, reply or {}, capture_content)
    outcome = tool_outcome(record)
    if outcome is not None or (info.type == "step" and info.name.startswith("tool:")):
        return _tool(info, outcome or {}, capture_content)
    return f"{info.type} {info.name}", SpanKind.INTERNAL, {}


def _chat(
    info: OperationInfo, reply: dict[str, Any], capture: bool
) -> tuple[str, SpanKind, dict[str, Any]]:
    # Steps of call_model are named model:PROVIDER:MODEL; the reply names what answered.
    asked = info.name.removeprefix("model:") if info.name.startswith("model:") else ""
    answered = str(reply.get("model") or "")
    full = asked or answered or info.name
    provider, _, model = full.partition(":") if ":" in full else ("", "", full)
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": model,
    }
    if provider:
        attributes["gen_ai.provider.name"] = provider
    if answered:
        attributes["gen_ai.response.model"] = answered.partition(":")[2] or answered
    usage = reply.get("usage") or {}
    if isinstance(usage, dict):
        for key in ("input_tokens", "output_tokens"):
            if isinstance(usage.get(key), int):
                attributes[f"gen_ai.usage.{key}"] = usage[key]
    if reply.get("finish_reason"):
        attributes["gen_ai.response.finish_reasons"] = [str(reply["finish_reason"])]
    if capture and reply:
        message = {
            "role": "assistant",
            "parts": [{"type": "text", "content": str(reply.get("text") or "")}]
            + [
                {"type": "tool_call", "name": c.get("name"), "arguments": c.get("arguments")}
                for c in reply.get("tool_calls") or []
                if isinstance(c, dict)
            ],
            "finish_reason": str(reply.get("finish_reason") or ""),
        }
        attributes["gen_ai.output.messages"] = json.dumps([message], default=str)
        asked_for = reply.get("request")
        if isinstance(asked_for, dict) and isinstance(asked_for.get("messages"), list):
            _input_messages(attributes, asked_for["messages"])
    return f"chat {model}", SpanKind.CLIENT, attributes


def _input_messages(attributes: dict[str, Any], messages: list[Any]) -> None:
    """The prompt the call recorded, as GenAI input messages and system instructions."""
    system = [m for m in messages if isinstance(m, dict) and m.get("role") == "system"]
    rest = [m for m in messages if isinstance(m, dict) and m.get("role") != "system"]
    if system:
        parts = [{"type": "text", "content": str(m.get("content") or "")} for m in system]
        attributes["gen_ai.system_instructions"] = json.dumps(parts, default=str)
    attributes["gen_ai.input.messages"] = json.dumps(
        [
            {
                "role": m.get("role"),
                "parts": [{"type": "text", "content": str(m.get("content") or "")}],
            }
            for m in rest
        ],
        default=str,
    )


def _tool(
    info: OperationInfo, outcome: dict[str, Any], capture: bool
) -> tuple[str, SpanKind, dict[str, Any]]:
    tool = info.name.removeprefix("tool:") if info.name.startswith("tool:") else info.name
    # An agent names its tool steps AGENT:TOOL.
    tool = tool.rsplit(":", 1)[-1] if ":" in tool else tool
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": tool,
        "gen_ai.tool.type": "function",
    }
    if outcome.get("ok") is False and outcome.get("error_type"):
        attributes["error.type"] = str(outcome["error_type"])
    if capture and "output" in outcome:
        attributes["gen_ai.tool.call.result"] = str(outcome["output"])
    return f"execute_tool {tool}", SpanKind.INTERNAL, attributes
