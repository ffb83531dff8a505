"""What the reasoning patterns share: prompts, who answers them, and the operator's record.

A *prompt* is a ``str.format`` template over named values, or a function of those values
returning a prompt or a :class:`ModelRequest`. A *responder* is whoever answers a prompt:
a model (``"provider:model"`` or a :class:`Model`), an :class:`Agent`, or an async function
``(ctx, prompt) -> answer``. Every model call goes through :mod:`cadenza.agents`, so it is a
durable step that replay never repeats.
"""

from __future__ import annotations

import inspect
import json
import string
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any, TypeAlias

from pydantic import BaseModel
from pydantic_core import to_jsonable_python

from cadenza.agents import Agent, Budget, call_model
from cadenza.context import Context
from cadenza.errors import WorkflowDefinitionError
from cadenza.models import Message, Model, ModelRequest

Prompt: TypeAlias = str | Callable[[Mapping[str, Any]], str | ModelRequest]
Responder: TypeAlias = str | Model | Agent | Callable[[Context, str], Awaitable[Any]]


def template_fields(template: str) -> set[str]:
    """The top-level names a ``str.format`` template uses: ``{plan.steps[0]}`` -> plan."""
    names = set()
    for _, field_name, _, _ in string.Formatter().parse(template):
        if field_name is None:
            continue
        head = field_name.split(".", 1)[0].split("[", 1)[0]
        if not head or head.isdigit():
            raise WorkflowDefinitionError(
                f"prompt {template[:60]!r} uses a positional field {{{field_name}}}; name it"
            )
        names.add(head)
    return names


def check_prompt(prompt: Prompt, known: Iterable[str], where: str) -> None:
    """Fail at definition when ``prompt`` is not a prompt or names values it will not get."""
    if callable(prompt):
        return
    if not isinstance(prompt, str) or not prompt.strip():
        raise WorkflowDefinitionError(f"{where}: a prompt is a non-empty template or a function")
    try:
        unknown = sorted(template_fields(prompt) - set(known))
    except ValueError as exc:  # unbalanced braces
        raise WorkflowDefinitionError(
            f"{where}: the prompt is not a valid template: {exc}"
        ) from None
    if unknown:
        raise WorkflowDefinitionError(
            f"{where}: the prompt uses {', '.join('{' + n + '}' for n in unknown)}, which it"
            f" will not have; it can use {', '.join('{' + n + '}' for n in sorted(known))}"
        )


def check_responder(responder: object, where: str) -> None:
    if isinstance(responder, str):
        if ":" not in responder:
            raise WorkflowDefinitionError(
                f"{where}: {responder!r} is not a model name; use 'provider:model'"
            )
        return
    if isinstance(responder, Model | Agent):
        return
    if callable(responder) and _is_async(responder):
        return
    raise WorkflowDefinitionError(
        f"{where}: expected a model ('provider:model' or a Model), an Agent, or an async"
        f" function (ctx, prompt); got {responder!r}"
    )


def check_fraction(value: float, what: str) -> None:
    if not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise WorkflowDefinitionError(f"{what} must be between 0 and 1, not {value!r}")


def is_model(responder: object) -> bool:
    return isinstance(responder, str | Model)


def text_of(value: Any) -> str:
    """A value as a model reads it: text as is, anything else as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, BaseModel):
        return value.model_dump_json()
    return json.dumps(to_jsonable_python(value, fallback=str), ensure_ascii=False)


def jsonable(value: Any) -> Any:
    return to_jsonable_python(value, fallback=str)


def render(prompt: Prompt, values: Mapping[str, Any], *, system: str | None = None) -> ModelRequest:
    """The request ``prompt`` makes from ``values`` (templates see each value as text)."""
    made: str | ModelRequest
    if isinstance(prompt, str):
        made = prompt.format_map({k: text_of(v) for k, v in values.items()})
    else:
        made = prompt(values)
    request = ModelRequest.of(made)
    if system and not any(m.role == "system" for m in request.messages):
        request = replace(request, messages=(Message.system(system), *request.messages))
    return request


def prompt_text(request: ModelRequest) -> str:
    """A request as one text, for responders that take text (agents, functions)."""
    return "\n\n".join(m.content for m in request.messages if m.role in ("system", "user"))


async def respond(
    ctx: Context,
    responder: Responder,
    request: ModelRequest,
    *,
    name: str,
    budget: Budget | None = None,
) -> Any:
    """Have ``responder`` answer ``request``: text from a model or an agent, anything from
    a function."""
    if isinstance(responder, str | Model):
        response = await call_model(ctx, responder, request, name=name, budget=budget)
        return response.text
    if isinstance(responder, Agent):
        return (await responder.run(ctx, prompt_text(request), track_state=False)).answer
    return await responder(ctx, prompt_text(request))


def responder_name(responder: Responder) -> str:
    if isinstance(responder, str):
        return responder
    if isinstance(responder, Model):
        return responder.name
    if isinstance(responder, Agent):
        return f"agent:{responder.name}"
    return getattr(responder, "__name__", type(responder).__name__)


def record(ctx: Context, key: str, value: Any) -> None:
    """Keep what a pattern did in the run's state document, for an operator to read.

    Call it from the context the pattern runs in, never from a child context: a finished
    child is not re-run on replay, so what it wrote would be missing from the rebuilt
    document.
    """
    document = ctx.state.to_dict()
    results = document.setdefault("context", {}).setdefault("results", {})
    results[key] = jsonable(value)


def _is_async(fn: object) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - callable objects with async __call__
    )
