"""Tools from typed Python functions.

The parameters' type hints become a pydantic model, whose JSON Schema is what the model is
shown and which validates the arguments the model sends back. The docstring gives the
description and the parameter descriptions. A first parameter annotated
:class:`ToolContext` (or named ``ctx``) receives the call's context — notably the
caller's idempotency key, to hand to external systems — and is not part of the schema.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, get_type_hints, overload

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from pydantic_core import PydanticSerializationError, to_json

from ..errors import ToolArgumentsInvalid
from ..models._json import schema_errors
from ..models._types import ToolSpec
from ._docstring import parse_docstring

__all__ = ["Tool", "ToolContext", "tool", "tool_result_text"]


@dataclass(frozen=True)
class ToolContext:
    """What a tool learns about the call: which tool, and the caller's idempotency key.

    In a durable run the key is stable across retries of the same step (``run_id/op_id``),
    so a tool that books, pays or sends can pass it on and have the effect happen once.
    """

    tool_name: str
    idempotency_key: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)


Handler = Callable[[dict[str, Any], ToolContext], Awaitable[Any]]


class Tool:
    """A named, described, schema-checked callable a model can ask for.

    Build one from a function with :func:`tool` / :meth:`Tool.from_function`, or directly
    from a handler and a JSON Schema (as MCP tools are).
    """

    def __init__(
        self,
        name: str,
        description: str,
        parameters: dict[str, Any],
        handler: Handler,
        *,
        validate: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        self.name = name
        self.description = description
        self.parameters = parameters
        self._handler = handler
        self._validate = validate or self._validate_with_schema
        self.fn: Callable[..., Any] | None = None  # the function, for tools made from one

    @property
    def spec(self) -> ToolSpec:
        """What a model is told about this tool."""
        return ToolSpec(self.name, self.description, self.parameters)

    def _validate_with_schema(self, arguments: dict[str, Any]) -> dict[str, Any]:
        errors = schema_errors(arguments, self.parameters)
        if errors:
            raise ToolArgumentsInvalid(self.name, _clipped(errors))
        return arguments

    def validate(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """The arguments as the tool will get them, or :class:`ToolArgumentsInvalid`."""
        if not isinstance(arguments, Mapping):
            raise ToolArgumentsInvalid(
                self.name, [f"arguments must be a JSON object, got {type(arguments).__name__}"]
            )
        return self._validate(dict(arguments))

    async def call(
        self,
        arguments: Mapping[str, Any],
        *,
        idempotency_key: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Any:
        """Validate ``arguments`` and run the tool; returns what the tool returns."""
        valid = self.validate(arguments)
        context = ToolContext(self.name, idempotency_key, dict(metadata or {}))
        return await self._handler(valid, context)

    @classmethod
    def from_function(
        cls,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
    ) -> Tool:
        """A tool calling ``fn``; sync functions run in a worker thread."""
        return _from_function(cls, fn, name=name, description=description)

    def __repr__(self) -> str:
        return f"Tool({self.name!r})"


@overload
def tool(fn: Callable[..., Any], /) -> Tool: ...


@overload
def tool(
    *, name: str | None = None, description: str | None = None
) -> Callable[[Callable[..., Any]], Tool]: ...


def tool(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Make a :class:`Tool` of a function, with or without options::

    @tool
    async def get_weather(city: str, days: int = 1) -> dict[str, Any]:
        \"\"\"Forecast for a city.

        Args:
            city: The city name, e.g. "Lisbon".
            days: How many days ahead.
        \"\"\"
    """
    if fn is not None:
        return Tool.from_function(fn, name=name, description=description)
    return lambda f: Tool.from_function(f, name=name, description=description)


def _takes_context(param: inspect.Parameter, hints: Mapping[str, Any]) -> bool:
    hint = hints.get(param.name)
    return hint is ToolContext or (hint is None and param.name == "ctx")


def _from_function(
    cls: type[Tool],
    fn: Callable[..., Any],
    *,
    name: str | None,
    description: str | None,
) -> Tool:
    tool_name = name or getattr(fn, "__name__", None)
    if not tool_name or tool_name == "<lambda>":
        raise TypeError("a tool needs a name: use a def, or pass name=...")
    summary, param_docs = parse_docstring(inspect.getdoc(fn))
    signature = inspect.signature(fn)
    hints = get_type_hints(fn, include_extras=True)
    params = list(signature.parameters.values())
    with_context = bool(params) and _takes_context(params[0], hints)
    if with_context:
        params = params[1:]
    fields: dict[str, Any] = {}
    for param in params:
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise TypeError(
                f"tool {tool_name!r}: *args and **kwargs cannot be described to a model; "
                "list the parameters"
            )
        if param.kind is param.POSITIONAL_ONLY:
            raise TypeError(f"tool {tool_name!r}: positional-only parameters are not supported")
        annotation = hints.get(param.name, Any)
        default = ... if param.default is param.empty else param.default
        doc = param_docs.get(param.name)
        fields[param.name] = (annotation, Field(default, description=doc) if doc else default)
    args_model: type[BaseModel] = create_model(
        f"{tool_name}_arguments",
        __config__=ConfigDict(extra="forbid"),
        **fields,
    )
    schema = _clean_schema(args_model.model_json_schema())
    is_async = inspect.iscoroutinefunction(fn)
    names = [p.name for p in params]

    def validate(arguments: dict[str, Any]) -> dict[str, Any]:
        # Strict, and as JSON: the model was shown a JSON Schema, and only what that
        # schema accepts is accepted ("5" is not an integer, true is not 1, "1e3" is not a
        # number), while JSON forms such as ISO dates and enum values still parse.
        try:
            text = to_json(arguments)
        except PydanticSerializationError as exc:
            raise ToolArgumentsInvalid(tool_name, [f"arguments: not JSON data ({exc})"]) from None
        try:
            model = args_model.model_validate_json(text, strict=True)
        except ValidationError as exc:
            raise ToolArgumentsInvalid(tool_name, _pydantic_errors(exc)) from None
        return {n: getattr(model, n) for n in names}

    async def handler(arguments: dict[str, Any], context: ToolContext) -> Any:
        call = (
            functools.partial(fn, context, **arguments)
            if with_context
            else functools.partial(fn, **arguments)
        )
        if is_async:
            return await call()
        result = await asyncio.to_thread(call)
        if inspect.isawaitable(result):
            return await result
        return result

    built = cls(tool_name, description or summary, schema, handler, validate=validate)
    built.fn = fn
    return built


def _clean_schema(schema: dict[str, Any]) -> dict[str, Any]:
    # Titles repeat the names; models read descriptions. Keep the schema small.
    schema.pop("title", None)
    for prop in schema.get("properties", {}).values():
        if isinstance(prop, dict):
            prop.pop("title", None)
    return schema


#: An argument quoted in an error is clipped to this many characters, and the errors to
#: ``MAX_ERRORS``: the message goes back to the model and into the journal.
QUOTE_LIMIT = 200
MAX_ERRORS = 10


def clip(text: str, limit: int) -> str:
    """``text``, or its first ``limit`` characters and a marker saying how long it was."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… [{len(text)} characters in all]"


def _clipped(errors: list[str]) -> list[str]:
    out = [clip(e, 2 * QUOTE_LIMIT) for e in errors[:MAX_ERRORS]]
    if len(errors) > MAX_ERRORS:
        out.append(f"… and {len(errors) - MAX_ERRORS} more problems")
    return out


def _pydantic_errors(exc: ValidationError) -> list[str]:
    out = []
    for err in exc.errors(include_url=False):
        where = clip(".".join(str(p) for p in err["loc"]) or "arguments", QUOTE_LIMIT)
        if err["type"] == "missing":
            out.append(f"{where}: this parameter is required")
        elif err["type"] == "extra_forbidden":
            out.append(f"{where}: there is no such parameter")
        else:
            quoted = clip(repr(err.get("input")), QUOTE_LIMIT)
            out.append(f"{where}: {err['msg']} (got {quoted})")
    return _clipped(out)


def tool_result_text(value: Any) -> str:
    """A tool's return value as the text a model reads: strings as they are, else JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, BaseModel):
        return value.model_dump_json()
    return json.dumps(value, default=str, ensure_ascii=False)
