"""A model that answers from a script, for tests and examples that must not call a real model.

Replies are taken, in this order, from the first matching *rule* (a substring or regex of
the message the model is answering), then from the *queue*, then from the *default*; when
none applies the model raises :class:`ScriptExhausted`. A reply is a string, a dict (sent as
JSON text), a :class:`ToolCall` or list of them, a :class:`ModelResponse`, an exception (or
exception class) to raise, or a callable that takes the request and returns any of these.
Every request is recorded in ``requests``. Usage is deterministic: one token per
whitespace-separated word.

::

    model = ScriptedModel(["first reply", ToolCall("c1", "search", {"q": "cadenza"})])
    model.on("weather", "sunny")
    model.fail(ModelThrottled("slow down"))   # queued: the next call raises it
"""

from __future__ import annotations

import asyncio
import inspect
import json
import re
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any, TypeAlias

from ..errors import ModelError
from ..models._base import Model
from ..models._types import ModelRequest, ModelResponse, StreamChunk, ToolCall, Usage

__all__ = ["Reply", "ScriptExhausted", "ScriptedModel"]

Reply: TypeAlias = (
    str
    | dict[str, Any]
    | list[Any]
    | ToolCall
    | ModelResponse
    | BaseException
    | type[BaseException]
    | Callable[[ModelRequest], Any]
)


class ScriptExhausted(ModelError):
    """The scripted model was asked for more replies than it was given."""


@dataclass
class _Rule:
    pattern: re.Pattern[str]
    reply: Reply
    times: int | None  # None: forever


def _words(text: str) -> int:
    return len(text.split())


class ScriptedModel(Model):
    """A deterministic :class:`~cadenza.models.Model` driven by a script.

    ``delay`` (seconds) makes every call take that long, for timeout and concurrency tests;
    ``stream`` yields the reply word by word.
    """

    def __init__(
        self,
        replies: Iterable[Reply] = (),
        *,
        name: str = "scripted:model",
        default: Reply | None = None,
        delay: float = 0.0,
    ) -> None:
        self.name = name if name.startswith("scripted:") else f"scripted:{name}"
        self._queue: deque[Reply] = deque(replies)
        self._rules: list[_Rule] = []
        self.default = default
        self.delay = delay
        self.requests: list[ModelRequest] = []

    @classmethod
    def echo(cls, *, name: str = "scripted:echo") -> ScriptedModel:
        """A model that answers every request with the message it is answering."""
        return cls(name=name, default=lambda req: _prompt(req))

    # --- writing the script ---------------------------------------------------------------

    def reply(self, *replies: Reply) -> ScriptedModel:
        """Queue replies, answered in order."""
        self._queue.extend(replies)
        return self

    def fail(self, error: BaseException | type[BaseException], *, times: int = 1) -> ScriptedModel:
        """Queue ``times`` calls that raise ``error``."""
        self._queue.extend([error] * times)
        return self

    def on(
        self, pattern: str | re.Pattern[str], reply: Reply, *, times: int | None = None
    ) -> ScriptedModel:
        """Answer ``reply`` whenever the message being answered matches ``pattern``.

        A string matches as a case-insensitive substring; a compiled regex is searched.
        ``times`` limits how often the rule fires.
        """
        compiled = (
            pattern
            if isinstance(pattern, re.Pattern)
            else re.compile(re.escape(pattern), re.IGNORECASE)
        )
        self._rules.append(_Rule(compiled, reply, times))
        return self

    @property
    def remaining(self) -> int:
        """How many queued replies are left."""
        return len(self._queue)

    @property
    def last_request(self) -> ModelRequest:
        if not self.requests:
            raise AssertionError(f"{self.name} has not been called")
        return self.requests[-1]

    # --- answering ------------------------------------------------------------------------

    def _next(self, req: ModelRequest) -> Reply:
        prompt = _prompt(req)
        for rule in self._rules:
            if rule.times != 0 and rule.pattern.search(prompt):
                if rule.times is not None:
                    rule.times -= 1
                return rule.reply
        if self._queue:
            return self._queue.popleft()
        if self.default is not None:
            return self.default
        raise ScriptExhausted(
            f"{self.name} has no reply left for request {len(self.requests)} "
            f"(answering {prompt[:80]!r}); queue more with .reply(...) or add a rule with "
            ".on(...)"
        )

    async def _resolve(self, reply: Any, req: ModelRequest) -> ModelResponse:
        if isinstance(reply, BaseException):
            raise reply
        if isinstance(reply, type) and issubclass(reply, BaseException):
            raise reply(f"{self.name} was scripted to raise {reply.__name__}")
        if callable(reply) and not isinstance(reply, ToolCall | ModelResponse):
            produced = reply(req)
            if inspect.isawaitable(produced):
                produced = await produced
            return await self._resolve(produced, req)
        usage = Usage(input_tokens=sum(_words(m.content) for m in req.messages), requests=1)
        if isinstance(reply, ModelResponse):
            return replace(reply, model=reply.model or self.name)
        if isinstance(reply, ToolCall) or (
            isinstance(reply, list) and reply and all(isinstance(c, ToolCall) for c in reply)
        ):
            calls = (reply,) if isinstance(reply, ToolCall) else tuple(reply)
            out = sum(1 + len(c.arguments) for c in calls)
            return ModelResponse(
                tool_calls=calls,
                usage=replace(usage, output_tokens=out),
                model=self.name,
                finish_reason="tool_calls",
            )
        text = reply if isinstance(reply, str) else json.dumps(reply)
        return ModelResponse(
            text=text, usage=replace(usage, output_tokens=_words(text)), model=self.name
        )

    async def request(self, req: ModelRequest) -> ModelResponse:
        self.requests.append(req)
        if self.delay:
            await asyncio.sleep(self.delay)
        return await self._resolve(self._next(req), req)

    async def stream(self, req: ModelRequest) -> AsyncIterator[StreamChunk]:
        response = await self.request(req)
        for piece in re.findall(r"\S+\s*|\s+", response.text):
            yield StreamChunk(delta=piece)
        yield StreamChunk(response=response)


def _prompt(req: ModelRequest) -> str:
    """The message the model is answering: the last user or tool message."""
    for message in reversed(req.messages):
        if message.role in ("user", "tool"):
            return message.content
    return ""
