"""Durable model and tool calls: each one a journaled step, so replay never repeats one.

Usage and cost are summed into the run's state document (``metadata.usage``) from the
journaled responses, so the totals are the same after any number of replays and are
readable with ``cadenza runs show``. A :class:`Budget` limits the whole run: it is checked
before every call, caps the call's ``max_tokens`` to the tokens left, and stops the run
with :class:`BudgetExceeded` as soon as a reply goes over it (that reply is not used), so
a run never spends more than its budget plus one reply. Inside :func:`budget_scope` a
budget also applies to every model call of the agents and branches started there: a
supervisor's budget covers its role agents.

A deployment's budget for a workflow or tenant (costs.toml) is checked inside the model
step. One whose action is ``"pause"`` fails the step with the time its window ends; the
call then waits on a durable callback (``budget:workflow:NAME``) that times out then, or
that an operator succeeds sooner, and asks again as a new step, which checks the budget
again.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any, TypeVar

from pydantic import TypeAdapter

from cadenza.context import Context
from cadenza.errors import (
    BudgetExceeded,
    CallbackFailed,
    CallbackTimedOut,
    OperationFailed,
    StructuredOutputError,
    ToolError,
)
from cadenza.models import (
    Message,
    Model,
    ModelRequest,
    ModelResponse,
    ToolCall,
    cost,
    infer_model,
    output_schema_for,
)
from cadenza.models._budget import capped_request
from cadenza.models._structured import _validate  # one validation for every caller
from cadenza.operations import StepContext
from cadenza.retry import RetryPolicy
from cadenza.telemetry._costs import MIN_PAUSE_S, budget_callback
from cadenza.tools import Toolset
from cadenza.tools._tool import clip, tool_result_text

T = TypeVar("T")

#: Model calls retry throttling and outages with backoff; other errors fail the step.
MODEL_RETRY = RetryPolicy(
    max_attempts=4,
    initial_interval=timedelta(seconds=2),
    retryable_errors=("ModelThrottled", "ModelUnavailable", "ModelTimeout", "StoreError"),
)

_models: dict[str, Model] = {}


def register_model(name: str, model: Model) -> None:
    """Make ``name`` resolve to ``model`` in this process (a scripted model in tests, a
    model wrapped with cache and fallback in production)."""
    _models[name] = model


def resolve_model(model: str | Model) -> Model:
    """A model by ``provider:model`` name (created once per process), or the model given."""
    if isinstance(model, Model):
        return model
    if model not in _models:
        _models[model] = infer_model(model)
    return _models[model]


@dataclass(frozen=True)
class Budget:
    """The most a run may spend on models: tokens, dollars, or both."""

    max_tokens: int | None = None
    max_cost_usd: float | None = None


def usage_of(ctx: Context) -> dict[str, Any]:
    """The run's model usage so far: tokens, requests, cost, and the same per model."""
    metadata = ctx.state.to_dict().setdefault("metadata", {})
    usage: dict[str, Any] = metadata.setdefault(
        "usage",
        {
            "input_tokens": 0,
            "output_tokens": 0,
            "cached_tokens": 0,
            "requests": 0,
            "cost_usd": 0.0,
            "by_model": {},
        },
    )
    return usage


def _account(ctx: Context, response: ModelResponse, model_name: str) -> None:
    usage = usage_of(ctx)
    name = response.model or model_name
    spent = cost(name, response.usage)
    per_model = usage["by_model"].setdefault(
        name,
        {"input_tokens": 0, "output_tokens": 0, "cached_tokens": 0, "requests": 0, "cost_usd": 0.0},
    )
    for bucket in (usage, per_model):
        bucket["input_tokens"] += response.usage.input_tokens
        bucket["output_tokens"] += response.usage.output_tokens
        bucket["cached_tokens"] += response.usage.cached_tokens
        bucket["requests"] += 1
        bucket["cost_usd"] = round(bucket["cost_usd"] + spent, 8)


# The budgets of the scopes the current code runs in. Tasks copy their context when they
# are created, so the branches of ctx.map / ctx.parallel inherit the budgets in force.
_scoped: ContextVar[tuple[Budget, ...]] = ContextVar("cadenza_budgets", default=())


@contextmanager
def budget_scope(budget: Budget | None) -> Iterator[None]:
    """Apply ``budget`` to every model call made inside, by this code and by every agent,
    pattern and branch it starts::

        with budget_scope(Budget(max_tokens=20_000)):
            await supervisor.run(ctx, goal)   # the planner and every role agent
    """
    if budget is None:
        yield
        return
    token = _scoped.set((*_scoped.get(), budget))
    try:
        yield
    finally:
        _scoped.reset(token)


def budgets_in_force(budget: Budget | None = None) -> tuple[Budget, ...]:
    """``budget`` and the budgets of the scopes around the caller."""
    found = [b for b in (*_scoped.get(), budget) if b is not None]
    return tuple(b for i, b in enumerate(found) if all(b is not o for o in found[:i]))


def _spent_tokens(ctx: Context) -> int:
    usage = usage_of(ctx)
    return int(usage["input_tokens"] + usage["output_tokens"])


def check_budget(ctx: Context, budget: Budget | None) -> None:
    """Raise :class:`BudgetExceeded` if ``budget`` or a scope's budget is spent."""
    usage = usage_of(ctx)
    tokens = _spent_tokens(ctx)
    for limit in budgets_in_force(budget):
        if limit.max_tokens is not None and tokens >= limit.max_tokens:
            raise BudgetExceeded(
                f"run {ctx.run_id} has used {tokens} tokens, its budget is {limit.max_tokens};"
                " raise Budget.max_tokens or shorten the task"
            )
        if limit.max_cost_usd is not None and usage["cost_usd"] >= limit.max_cost_usd:
            raise BudgetExceeded(
                f"run {ctx.run_id} has spent ${usage['cost_usd']:.4f}, its budget is"
                f" ${limit.max_cost_usd:.4f}; raise Budget.max_cost_usd or use a cheaper model"
            )


def _check_reply(ctx: Context, budgets: tuple[Budget, ...], response: ModelResponse) -> None:
    """Stop at the reply that went over a budget: it is not used."""
    usage = usage_of(ctx)
    tokens = _spent_tokens(ctx)
    reply = response.usage.input_tokens + response.usage.output_tokens
    for limit in budgets:
        if limit.max_tokens is not None and tokens > limit.max_tokens:
            raise BudgetExceeded(
                f"run {ctx.run_id} has used {tokens} tokens, its budget is {limit.max_tokens}:"
                f" the last reply ({reply} tokens) went over it and is not used; raise"
                " Budget.max_tokens or shorten the task"
            )
        if limit.max_cost_usd is not None and usage["cost_usd"] > limit.max_cost_usd:
            raise BudgetExceeded(
                f"run {ctx.run_id} has spent ${usage['cost_usd']:.4f}, its budget is"
                f" ${limit.max_cost_usd:.4f}: the last reply went over it and is not used;"
                " raise Budget.max_cost_usd or use a cheaper model"
            )


#: How much of a prompt a model call keeps in its journal record, in characters of JSON: the
#: system prompt and as many of the latest messages as fit. An agent's prompt grows with
#: its conversation, so keeping every prompt whole would grow a run's storage with the
#: square of its turns; the earlier messages are in the earlier calls' records.
PROMPT_RECORD_CHARS = 16_000


def recorded_request(req: ModelRequest) -> dict[str, Any]:
    """What a model call's record keeps of its request, for the console and traces."""
    messages = [m.to_dict() for m in req.messages]
    system = [m for m in messages if m["role"] == "system"]
    rest = [m for m in messages if m["role"] != "system"]
    budget = PROMPT_RECORD_CHARS - len(json.dumps(system))
    kept: list[dict[str, Any]] = []
    for message in reversed(rest):
        size = len(json.dumps(message))
        if size > budget:
            if kept:
                break
            # The latest message alone is too long: keep its start.
            message = {**message, "content": clip(str(message.get("content", "")), budget)}
        kept.insert(0, message)
        budget -= size
    recorded: dict[str, Any] = {"messages": system + kept}
    if len(kept) < len(rest):
        recorded["omitted_messages"] = len(rest) - len(kept)
    if req.tools:
        recorded["tools"] = [tool.name for tool in req.tools]
    if req.output_schema is not None:
        recorded["output_schema"] = True
    return recorded


def _capped(ctx: Context, budgets: tuple[Budget, ...], req: ModelRequest) -> ModelRequest:
    """``req`` asking for no more output tokens than the budgets leave."""
    left = [b.max_tokens - _spent_tokens(ctx) for b in budgets if b.max_tokens is not None]
    return capped_request(req, min(left)) if left else req


async def call_model(
    ctx: Context,
    model: str | Model,
    request: str | ModelRequest,
    *,
    name: str | None = None,
    budget: Budget | None = None,
    retry: RetryPolicy | None = None,
) -> ModelResponse:
    """Ask ``model`` once, as a durable step. Streams to the engine's listeners if any."""
    chosen = resolve_model(model)
    budgets = budgets_in_force(budget)
    check_budget(ctx, budget)
    req = _capped(ctx, budgets, ModelRequest.of(request))
    runtime = ctx._runtime  # the deployment's spend guard and stream listeners

    async def ask_model(step: StepContext) -> dict[str, Any]:
        await runtime.check_spend(step.op_id)  # in the step: the decision is journaled
        send = runtime.model_stream()
        if send is None:
            return {**(await chosen.request(req)).to_dict(), "request": recorded_request(req)}
        final: ModelResponse | None = None
        async for chunk in chosen.stream(req):
            if chunk.delta:
                send(step.op_id, chunk.delta)
            if chunk.response is not None:
                final = chunk.response
        if final is None:
            from cadenza.errors import ModelResponseError

            raise ModelResponseError(f"{chosen.name} ended its stream without a reply")
        return {**final.to_dict(), "request": recorded_request(req)}

    while True:
        try:
            data = await ctx.step(
                ask_model, name=name or f"model:{chosen.name}", retry=retry or MODEL_RETRY
            )
            break
        except OperationFailed as exc:
            if exc.error_type != "BudgetExceeded" or exc.details.get("action") != "pause":
                raise
            await _pause_for_budget(ctx, exc)
    response = ModelResponse.from_dict(data)
    _account(ctx, response, chosen.name)
    _check_reply(ctx, budgets, response)
    return response


async def _pause_for_budget(ctx: Context, refused: OperationFailed) -> None:
    """Wait, holding no worker, until the spent budget's window ends or an operator
    succeeds the budget's callback; failing that callback stops the call as a budget
    whose action is "stop" would. The wait's length comes from the journaled refusal, so
    replay waits on the same callback."""
    pause = max(float(refused.details.get("pause_s") or 0.0), MIN_PAUSE_S)
    name = budget_callback(str(refused.details.get("scope")))
    callback = await ctx.create_callback(name=name, timeout=timedelta(seconds=pause))
    try:
        await callback.result()
    except CallbackTimedOut:
        return  # the window is over: ask again, which checks the budget again
    except CallbackFailed as exc:
        raise refused from exc


async def generate(
    ctx: Context,
    model: str | Model,
    request: str | ModelRequest,
    output_type: type[T] | Mapping[str, Any],
    *,
    name: str | None = None,
    max_repairs: int = 2,
    budget: Budget | None = None,
) -> T:
    """A validated value of ``output_type`` (a pydantic model, any type, or a JSON Schema).

    Each attempt is its own durable model call; a reply that fails validation is sent back
    with the errors, at most ``max_repairs`` times, then :class:`StructuredOutputError`
    carries the raw reply.
    """
    schema = output_schema_for(output_type)
    adapter = None if isinstance(output_type, Mapping) else TypeAdapter(output_type)
    req = replace(ModelRequest.of(request), output_schema=schema)
    label = name or "generate"
    errors: list[str] = []
    reply = ""
    for attempt in range(max_repairs + 1):
        response = await call_model(
            ctx,
            model,
            req,
            budget=budget,
            name=label if attempt == 0 else f"{label}:repair{attempt}",
        )
        reply = response.text
        value, errors = _validate(reply, schema, adapter)
        if not errors:
            return value  # type: ignore[no-any-return]
        feedback = (
            "Your reply did not match the required JSON schema:\n"
            + "\n".join(f"- {e}" for e in errors)
            + "\nReply again with only JSON that matches it."
        )
        req = replace(
            req, messages=(*req.messages, Message.assistant(reply), Message.user(feedback))
        )
    raise StructuredOutputError(
        f"no reply matching the schema after {max_repairs + 1} attempts; last errors:"
        f" {'; '.join(errors)}",
        raw_reply=reply,
        errors=errors,
    )


@dataclass(frozen=True)
class ToolOutcome:
    """What a tool call produced, as the journal keeps it and the model is told."""

    call_id: str
    name: str
    ok: bool
    output: str  # the text the model sees (a reference for large outputs)
    error_type: str | None = None
    refused: bool = False  # not run: unknown, not allowed, denied, rejected or over a limit

    def message(self) -> Message:
        return Message.tool(self.output, tool_call_id=self.call_id, name=self.name)


#: Tool outputs longer than this are stored as an artifact; the model sees a preview
#: and the reference.
LARGE_TOOL_OUTPUT = 4_000


async def call_tool(
    ctx: Context,
    tools: Toolset,
    call: ToolCall,
    *,
    name: str | None = None,
    retry: RetryPolicy | None = None,
) -> ToolOutcome:
    """Run one tool call as a durable step. Errors come back as a failed outcome for the
    model to read; an unknown or forbidden tool is refused without running anything."""

    async def run_tool(step: StepContext) -> dict[str, Any]:
        try:
            value = await tools.execute(call, idempotency_key=step.idempotency_key)
        except ToolError as exc:
            return {"ok": False, "output": str(exc), "error_type": type(exc).__name__}
        text = tool_result_text(value)
        if len(text) > LARGE_TOOL_OUTPUT and step.artifacts is not None:
            key = await step.artifacts.put(text.encode())  # in this run's scope
            text = (
                f"{text[: LARGE_TOOL_OUTPUT // 4]}\n… [{len(text)} characters in all,"
                f" stored as artifact {key}]"
            )
        return {"ok": True, "output": text}

    try:
        data = await ctx.step(run_tool, name=name or f"tool:{call.name}", retry=retry)
    except Exception as exc:  # the tool raised after its retries: tell the model
        return ToolOutcome(
            call.id,
            call.name,
            False,
            clip(f"the tool failed: {exc}", LARGE_TOOL_OUTPUT // 2),
            getattr(exc, "error_type", type(exc).__name__),
        )
    return ToolOutcome(
        call.id, call.name, bool(data["ok"]), str(data["output"]), data.get("error_type")
    )


def preview(value: Any, limit: int = 300) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[:limit] + "…"
