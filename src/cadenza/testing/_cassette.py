"""Cassettes: record a test's model and tool calls once, replay them offline ever after.

A cassette sits at the ports, not on the wire: it records :class:`ModelRequest` /
:class:`ModelResponse` pairs and tool arguments / results, so it works the same for every
provider, and never holds a credential (those live in HTTP headers it never sees).

::

    cassette = Cassette("tests/cassettes/triage.json")          # mode="once"
    model = cassette.model(infer_model("bedrock:amazon.nova-lite-v1:0"))
    tools = cassette.toolset(Toolset([lookup_order]))

The first run (no file yet) calls the real model and tools and writes the file when the
cassette is closed (``with cassette:`` / ``cassette.save()``). Every later run answers from
the file; a request the file does not hold raises :class:`CassetteMismatch`, naming the
nearest recorded request and what differs, and the real model is not called.
"""

from __future__ import annotations

import builtins
import difflib
import json
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from pydantic_core import PydanticSerializationError, to_jsonable_python

from cadenza import errors
from cadenza.errors import ConfigurationError
from cadenza.models._base import Model, WrapperModel
from cadenza.models._cache import request_key
from cadenza.models._types import ModelRequest, ModelResponse, StreamChunk
from cadenza.tools import Tool, Toolset

__all__ = ["Cassette", "CassetteMismatch", "CassetteMode"]

CassetteMode = Literal["once", "record", "replay"]
_FORMAT = 1


class CassetteMismatch(ConfigurationError):
    """A replayed test asked for a call its cassette did not record: the code changed the
    request, or the cassette is stale. Re-record it with ``mode="record"``."""


class Cassette:
    """Recorded model and tool calls in one JSON file.

    ``mode``: ``"once"`` replays when the file exists and records when it does not;
    ``"record"`` always calls for real and rewrites the file; ``"replay"`` never calls for
    real and fails when the file is missing. Identical requests are answered in the order
    they were recorded, so a retried call gets its second recorded reply.
    """

    def __init__(self, path: str | Path, *, mode: CassetteMode = "once") -> None:
        if mode not in ("once", "record", "replay"):
            raise ConfigurationError(
                f"unknown cassette mode {mode!r}; use 'once', 'record' or 'replay'"
            )
        self.path = Path(path)
        if mode == "replay" and not self.path.exists():
            raise ConfigurationError(
                f"cassette {self.path} does not exist; record it first with mode='record'"
                " (or mode='once', which records when the file is missing)"
            )
        self.recording = mode == "record" or (mode == "once" and not self.path.exists())
        self._recorded: list[dict[str, Any]] = []
        self._queues: dict[str, deque[dict[str, Any]]] = defaultdict(deque)
        self._entries: list[dict[str, Any]] = []
        if not self.recording:
            self._entries = _read(self.path)
            for entry in self._entries:
                self._queues[entry["key"]].append(entry)

    # --- wrapping ------------------------------------------------------------------------

    def model(self, model: Model) -> Model:
        """``model``, answered from this cassette (or recorded into it)."""
        return _CassetteModel(model, self)

    def tool(self, tool: Tool) -> Tool:
        """``tool``, answered from this cassette (or recorded into it)."""
        return Tool(
            tool.name,
            tool.description,
            tool.parameters,
            lambda arguments, context: self._call_tool(tool, arguments, context),
            validate=tool.validate,
        )

    def toolset(self, tools: Toolset) -> Toolset:
        """Every tool ``tools`` allows, answered from this cassette."""
        return Toolset([self.tool(tools.get(name)) for name in tools.allowed])

    # --- recording and replaying ---------------------------------------------------------

    async def _request(self, model: Model, req: ModelRequest) -> ModelResponse:
        key = "model:" + request_key(model.name, req)
        if not self.recording:
            entry = self._take(key, "model", {"model": model.name, "request": req.to_dict()})
            return ModelResponse.from_dict(entry["response"])
        response = await model.request(req)
        self._recorded.append(
            {
                "key": key,
                "kind": "model",
                "call": {"model": model.name, "request": req.to_dict()},
                "response": response.to_dict(),
            }
        )
        return response

    async def _call_tool(self, tool: Tool, arguments: dict[str, Any], context: Any) -> Any:
        call = {"tool": tool.name, "arguments": arguments}
        key = "tool:" + json.dumps(call, sort_keys=True, default=str)
        if not self.recording:
            entry = self._take(key, "tool", call)
            if "error" in entry:
                raise _recorded_error(entry["error"]["type"], entry["error"]["message"])
            return entry["result"]
        try:
            result = await tool.call(
                arguments, idempotency_key=context.idempotency_key, metadata=context.metadata
            )
        except Exception as exc:
            error = {"type": type(exc).__name__, "message": str(exc)}
            self._recorded.append({"key": key, "kind": "tool", "call": call, "error": error})
            raise
        self._recorded.append(
            {"key": key, "kind": "tool", "call": call, "result": _jsonable(result, tool.name)}
        )
        return result

    def _take(self, key: str, kind: str, call: dict[str, Any]) -> dict[str, Any]:
        queue = self._queues.get(key)
        if queue:
            return queue.popleft()
        raise CassetteMismatch(self._mismatch(kind, call))

    def _mismatch(self, kind: str, call: dict[str, Any]) -> str:
        asked = json.dumps(call, indent=1, sort_keys=True, default=str).splitlines()
        same_kind = [entry for entry in self._entries if entry["kind"] == kind]
        what = "model request" if kind == "model" else f"call of tool {call['tool']!r}"
        head = f"cassette {self.path} holds no {what} like this one"
        if not same_kind:
            return f"{head}, nor any {kind} call; re-record it with mode='record'"
        recorded = [
            json.dumps(entry["call"], indent=1, sort_keys=True).splitlines() for entry in same_kind
        ]
        nearest = max(
            recorded, key=lambda lines: difflib.SequenceMatcher(None, lines, asked).ratio()
        )
        diff = "\n".join(
            difflib.unified_diff(nearest, asked, "recorded", "asked now", n=1, lineterm="")
        )
        used = sum(1 for entry in same_kind if entry["call"] == call)
        if used:
            head += f" left (it recorded {used} such call(s), all answered already)"
        return f"{head}; the nearest recorded one differs:\n{diff}\nre-record it with mode='record'"

    # --- the file ------------------------------------------------------------------------

    def save(self) -> None:
        """Write what was recorded (nothing happens when replaying)."""
        if not self.recording:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        document = {"cadenza_cassette": _FORMAT, "calls": self._recorded}
        self.path.write_text(json.dumps(document, indent=1, sort_keys=True) + "\n", "utf-8")

    def __enter__(self) -> Cassette:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # A test that failed while recording keeps no half cassette to be replayed later.
        if exc_type is None:
            self.save()


class _CassetteModel(WrapperModel):
    def __init__(self, wrapped: Model, cassette: Cassette) -> None:
        super().__init__(wrapped)
        self.cassette = cassette

    async def request(self, req: ModelRequest) -> ModelResponse:
        return await self.cassette._request(self.wrapped, req)

    async def stream(self, req: ModelRequest) -> AsyncIterator[StreamChunk]:
        response = await self.request(req)
        yield StreamChunk(delta=response.text, response=response)


def _read(path: Path) -> list[dict[str, Any]]:
    try:
        document = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigurationError(
            f"cassette {path} cannot be read ({exc}); delete it to record it again"
        ) from exc
    if not isinstance(document, Mapping) or document.get("cadenza_cassette") != _FORMAT:
        raise ConfigurationError(
            f"{path} is not a cadenza cassette (format {_FORMAT}); delete it to record it again"
        )
    calls = document.get("calls")
    if not isinstance(calls, list):
        raise ConfigurationError(f"cassette {path} has no list of calls; delete it to re-record")
    return calls


def _recorded_error(type_name: str, message: str) -> Exception:
    """The error a tool raised when it was recorded: the same class when it is a built-in
    or a cadenza error, else an exception class of the same name, so the journal records
    the same error type on replay as it did live."""
    known = getattr(builtins, type_name, None) or getattr(errors, type_name, None)
    if isinstance(known, type) and issubclass(known, Exception):
        try:
            error: Exception = known(message)
            return error
        except TypeError:  # an error class that needs more than a message
            pass
    named: type[Exception] = type(type_name, (Exception,), {})
    return named(message)


def _jsonable(value: Any, tool: str) -> Any:
    try:
        return to_jsonable_python(value)
    except PydanticSerializationError as exc:
        raise ConfigurationError(
            f"tool {tool!r} returned {type(value).__name__}, which a cassette cannot record"
            " as JSON; return JSON-compatible values from tools you record"
        ) from exc
