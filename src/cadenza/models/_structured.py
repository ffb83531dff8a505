"""Structured output: a typed value from a model, validated, with a bounded repair loop.

The request carries the JSON Schema (adapters turn it into grammar-constrained decoding,
``response_format`` or a forced tool). The reply is parsed leniently (code fences and
leading prose are tolerated) and validated; when it fails, the model is shown its reply and
the errors and asked again, at most ``max_repairs`` times. Then
:class:`~cadenza.errors.StructuredOutputError` carries the last raw reply and the errors.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, TypeVar, overload

from pydantic import TypeAdapter, ValidationError

from ..errors import StructuredOutputError
from ._base import Model
from ._json import extract_json, schema_errors
from ._types import Message, ModelRequest, ModelResponse

__all__ = ["generate_structured", "output_schema_for"]

T = TypeVar("T")

_REPAIR = (
    "Your reply did not match the required JSON schema:\n{errors}\n"
    "Reply again with only a JSON value that matches this schema:\n{schema}"
)


def output_schema_for(output_type: type[Any] | Mapping[str, Any]) -> dict[str, Any]:
    """The JSON Schema for a pydantic model, a type pydantic understands, or a schema dict."""
    if isinstance(output_type, Mapping):
        return dict(output_type)
    return TypeAdapter(output_type).json_schema()


@overload
async def generate_structured(
    model: Model,
    request: str | Sequence[Message] | ModelRequest,
    output_type: type[T],
    *,
    max_repairs: int = 2,
) -> tuple[T, list[ModelResponse]]: ...


@overload
async def generate_structured(
    model: Model,
    request: str | Sequence[Message] | ModelRequest,
    output_type: Mapping[str, Any],
    *,
    max_repairs: int = 2,
) -> tuple[Any, list[ModelResponse]]: ...


async def generate_structured(
    model: Model,
    request: str | Sequence[Message] | ModelRequest,
    output_type: type[Any] | Mapping[str, Any],
    *,
    max_repairs: int = 2,
) -> tuple[Any, list[ModelResponse]]:
    """Ask ``model`` for a value of ``output_type`` and return it with every response.

    ``output_type`` is a pydantic model (or any type pydantic can validate), returned as an
    instance; or a JSON Schema dict, returned as the parsed JSON. The responses list holds
    one response per attempt, for usage and cost accounting::

        ticket, responses = await generate_structured(model, "Classify: ...", Ticket)
    """
    if max_repairs < 0:
        raise ValueError("max_repairs must be 0 or more")
    schema = output_schema_for(output_type)
    adapter: TypeAdapter[Any] | None = (
        None if isinstance(output_type, Mapping) else TypeAdapter(output_type)
    )
    req = replace(ModelRequest.of(request), output_schema=schema)
    responses: list[ModelResponse] = []
    errors: list[str] = []
    for _attempt in range(max_repairs + 1):
        response = await model.request(req)
        responses.append(response)
        value, errors = _validate(response.text, schema, adapter)
        if not errors:
            return value, responses
        repair = _REPAIR.format(
            errors="\n".join(f"- {e}" for e in errors), schema=json.dumps(schema)
        )
        req = replace(
            req,
            messages=(*req.messages, Message.assistant(response.text), Message.user(repair)),
        )
    raw = responses[-1].text
    raise StructuredOutputError(
        f"{model.name} gave no reply matching the schema after {len(responses)} attempts "
        f"({max_repairs} repairs); last errors: {'; '.join(errors)}",
        raw_reply=raw,
        errors=errors,
    )


def _validate(
    text: str, schema: Mapping[str, Any], adapter: TypeAdapter[Any] | None
) -> tuple[Any, list[str]]:
    try:
        data = extract_json(text)
    except ValueError as exc:
        return None, [str(exc)]
    if adapter is None:
        return data, schema_errors(data, schema)
    try:
        return adapter.validate_python(data), []
    except ValidationError as exc:
        return None, [
            f"$.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" if err["loc"] else err["msg"]
            for err in exc.errors()
        ]
