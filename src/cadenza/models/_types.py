"""The words every model adapter speaks: messages in, a response out.

These are plain frozen dataclasses. Responses are journaled, so :class:`ModelResponse` and
:class:`Usage` (and the request, which the cache hashes) round-trip through JSON with
``to_dict`` / ``from_dict``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, cast

from ..errors import ModelResponseError

__all__ = [
    "FinishReason",
    "Message",
    "ModelRequest",
    "ModelResponse",
    "Role",
    "StreamChunk",
    "ToolCall",
    "ToolSpec",
    "Usage",
]

Role = Literal["system", "user", "assistant", "tool"]
# Normalised across providers; an adapter maps its own vocabulary onto these.
FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "error", "unknown"]

_ROLES = ("system", "user", "assistant", "tool")


@dataclass(frozen=True)
class ToolCall:
    """The model asks for ``name`` to be called with ``arguments``; ``id`` pairs the result."""

    id: str
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Arguments come from a model: anything but an object (a string, null, a number, a
        # list of pairs) is a reply that cannot be used, whichever adapter passed it on.
        if isinstance(self.arguments, Mapping) and all(isinstance(k, str) for k in self.arguments):
            object.__setattr__(self, "arguments", dict(self.arguments))
            return
        got = "null" if self.arguments is None else type(self.arguments).__name__
        raise ModelResponseError(
            f"the tool call {str(self.name)[:100]!r} came with arguments that are not a JSON"
            f" object (got {got}); a tool call's arguments are an object of named parameters"
        )

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "arguments": self.arguments}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ToolCall:
        return cls(id=str(data["id"]), name=str(data["name"]), arguments=data.get("arguments", {}))


@dataclass(frozen=True)
class ToolSpec:
    """What a model is told about a tool: its name, what it does, its JSON Schema."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "parameters": self.parameters}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ToolSpec:
        return cls(
            name=str(data["name"]),
            description=str(data.get("description", "")),
            parameters=dict(data.get("parameters") or {"type": "object", "properties": {}}),
        )


@dataclass(frozen=True)
class Message:
    """One turn of a conversation.

    An assistant message may carry ``tool_calls``; a ``tool`` message carries the result of
    one of them in ``content``, with ``tool_call_id`` naming the call (and ``name`` the tool).
    """

    role: Role
    content: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        if self.role not in _ROLES:
            raise ValueError(f"message role must be one of {', '.join(_ROLES)}, not {self.role!r}")
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a tool message needs the tool_call_id of the call it answers")

    @classmethod
    def system(cls, content: str) -> Message:
        return cls("system", content)

    @classmethod
    def user(cls, content: str) -> Message:
        return cls("user", content)

    @classmethod
    def assistant(cls, content: str = "", tool_calls: Iterable[ToolCall] = ()) -> Message:
        return cls("assistant", content, tool_calls=tuple(tool_calls))

    @classmethod
    def tool(cls, content: str, *, tool_call_id: str, name: str | None = None) -> Message:
        return cls("tool", content, tool_call_id=tool_call_id, name=name)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            data["tool_calls"] = [c.to_dict() for c in self.tool_calls]
        if self.tool_call_id is not None:
            data["tool_call_id"] = self.tool_call_id
        if self.name is not None:
            data["name"] = self.name
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Message:
        return cls(
            role=cast(Role, data["role"]),
            content=str(data.get("content") or ""),
            tool_calls=tuple(ToolCall.from_dict(c) for c in data.get("tool_calls") or ()),
            tool_call_id=data.get("tool_call_id"),
            name=data.get("name"),
        )


@dataclass(frozen=True)
class ModelRequest:
    """Everything one model call needs. ``output_schema`` asks for JSON matching it."""

    messages: tuple[Message, ...]
    tools: tuple[ToolSpec, ...] = ()
    output_schema: dict[str, Any] | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Accept lists from callers; keep tuples so the request stays immutable.
        object.__setattr__(self, "messages", tuple(self.messages))
        object.__setattr__(self, "tools", tuple(self.tools))
        object.__setattr__(self, "stop", tuple(self.stop))

    @classmethod
    def of(
        cls,
        messages: str | Sequence[Message] | ModelRequest,
        *,
        system: str | None = None,
        **options: Any,
    ) -> ModelRequest:
        """A request from a prompt, a list of messages, or an existing request.

        ``ModelRequest.of("Name three colours", system="Be brief", max_tokens=50)``
        """
        if isinstance(messages, ModelRequest):
            if system:
                options["messages"] = (Message.system(system), *messages.messages)
            return replace(messages, **options) if options else messages
        msgs: list[Message] = [Message.system(system)] if system else []
        if isinstance(messages, str):
            msgs.append(Message.user(messages))
        else:
            msgs.extend(messages)
        return cls(messages=tuple(msgs), **options)

    @property
    def system_prompt(self) -> str:
        return "\n\n".join(m.content for m in self.messages if m.role == "system")

    @property
    def conversation(self) -> tuple[Message, ...]:
        """The messages without the system ones, which most APIs take separately."""
        return tuple(m for m in self.messages if m.role != "system")

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"messages": [m.to_dict() for m in self.messages]}
        if self.tools:
            data["tools"] = [t.to_dict() for t in self.tools]
        if self.output_schema is not None:
            data["output_schema"] = self.output_schema
        if self.temperature is not None:
            data["temperature"] = self.temperature
        if self.max_tokens is not None:
            data["max_tokens"] = self.max_tokens
        if self.stop:
            data["stop"] = list(self.stop)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelRequest:
        return cls(
            messages=tuple(Message.from_dict(m) for m in data["messages"]),
            tools=tuple(ToolSpec.from_dict(t) for t in data.get("tools") or ()),
            output_schema=data.get("output_schema"),
            temperature=data.get("temperature"),
            max_tokens=data.get("max_tokens"),
            stop=tuple(data.get("stop") or ()),
        )

    def canonical_json(self) -> str:
        """A stable text form of the request: equal requests give equal text."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), default=str)


@dataclass(frozen=True)
class Usage:
    """Tokens one or more calls used.

    ``input_tokens`` are the prompt tokens billed at the full input price; ``cached_tokens``
    are prompt tokens the provider served from its prompt cache (billed at the cached price,
    not included in ``input_tokens``); ``requests`` counts the calls summed into this.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    requests: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens + self.cached_tokens

    def __add__(self, other: Usage) -> Usage:
        if not isinstance(other, Usage):
            return NotImplemented
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cached_tokens=self.cached_tokens + other.cached_tokens,
            requests=self.requests + other.requests,
        )

    def to_dict(self) -> dict[str, int]:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cached_tokens": self.cached_tokens,
            "requests": self.requests,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Usage:
        return cls(
            input_tokens=int(data.get("input_tokens", 0)),
            output_tokens=int(data.get("output_tokens", 0)),
            cached_tokens=int(data.get("cached_tokens", 0)),
            requests=int(data.get("requests", 0)),
        )


@dataclass(frozen=True)
class ModelResponse:
    """What a model answered.

    ``model`` is the ``provider:model`` name of the model that actually answered (behind a
    fallback chain, the one that succeeded). ``cache_hit`` is true when a response cache
    answered; its ``usage`` is then zero, since nothing was spent. ``raw`` keeps the
    provider's reply (JSON-safe) for debugging.
    """

    text: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    usage: Usage = field(default_factory=Usage)
    model: str = ""
    finish_reason: FinishReason = "stop"
    raw: Any = None
    cache_hit: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "tool_calls", tuple(self.tool_calls))

    @property
    def message(self) -> Message:
        """The reply as an assistant message, to append to the conversation."""
        return Message.assistant(self.text, self.tool_calls)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "text": self.text,
            "tool_calls": [c.to_dict() for c in self.tool_calls],
            "usage": self.usage.to_dict(),
            "model": self.model,
            "finish_reason": self.finish_reason,
        }
        if self.raw is not None:
            data["raw"] = _json_safe(self.raw)
        if self.cache_hit:
            data["cache_hit"] = True
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelResponse:
        return cls(
            text=str(data.get("text") or ""),
            tool_calls=tuple(ToolCall.from_dict(c) for c in data.get("tool_calls") or ()),
            usage=Usage.from_dict(data.get("usage") or {}),
            model=str(data.get("model") or ""),
            finish_reason=cast(FinishReason, data.get("finish_reason") or "unknown"),
            raw=data.get("raw"),
            cache_hit=bool(data.get("cache_hit", False)),
        )


@dataclass(frozen=True)
class StreamChunk:
    """A piece of a streamed reply. The last chunk carries the complete ``response``."""

    delta: str = ""
    response: ModelResponse | None = None


def _json_safe(value: Any) -> Any:
    # Provider payloads can hold datetimes or bytes; the journal only takes JSON.
    return json.loads(json.dumps(value, default=str))
