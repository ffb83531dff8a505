"""OpenTelemetry spans from live work: names, GenAI attributes, parents across runs, and
the same spans however many times a run is replayed."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from cadenza import Context, RunStatus, workflow
from cadenza.agents import Agent, call_model, call_tool
from cadenza.models import ToolCall
from cadenza.telemetry import OpenTelemetryInstrumentation
from cadenza.testing import FakeClock, ScriptedModel, TestEnvironment
from cadenza.tools import Toolset, tool
from tests.engine.scope_workflows import SHIP_ORDERS, root
from tests.telemetry.otel_workflows import waiter


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    yield memory
    memory.clear()


def instrumentation(exporter: InMemorySpanExporter, **kw: Any) -> OpenTelemetryInstrumentation:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return OpenTelemetryInstrumentation(tracer_provider=provider, **kw)


def by_name(spans: tuple[ReadableSpan, ...] | list[ReadableSpan]) -> dict[str, ReadableSpan]:
    named: dict[str, ReadableSpan] = {}
    for span in spans:
        assert span.name not in named, f"two spans named {span.name}"
        named[span.name] = span
    return named


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


async def test_invoke_and_emit_rule_chain_is_one_trace(exporter: InMemorySpanExporter) -> None:
    async with TestEnvironment(instrumentation=instrumentation(exporter)) as env:
        await env.engine.store.put_rule(SHIP_ORDERS)
        run = await env.run(root, 4)
        assert run.status == RunStatus.SUCCEEDED
    spans = exporter.get_finished_spans()
    assert {span.context.trace_id for span in spans} == {int(run.trace_id or "", 16)}
    names = Counter(span.name for span in spans)
    assert names["run t-scope-root"] == 1
    assert names["run t-scope-child"] == 1
    assert names["run t-scope-shipper"] == 1
    assert names["step double"] == 1 and names["step ship"] == 1
    assert names["emit order.placed"] == 1
    ops = {s.name: s for s in spans if not s.name.startswith("invoke_workflow")}
    root_run = ops["run t-scope-root"]
    assert root_run.parent is None
    invoke = next(s for s in spans if s.name.startswith("invoke ") and "t-scope-child" in s.name)
    emit = ops["emit order.placed"]
    assert parent_of(invoke) == root_run.context.span_id
    assert parent_of(emit) == root_run.context.span_id
    # The child run hangs under the invoke; the rule's run under the emit that caused it.
    assert parent_of(ops["run t-scope-child"]) == invoke.context.span_id
    assert parent_of(ops["run t-scope-shipper"]) == emit.context.span_id
    assert parent_of(ops["step double"]) == ops["run t-scope-child"].context.span_id
    assert not any(s.name.startswith("attempt") for s in spans)  # first attempts succeeded
    activations = [s for s in spans if s.name == "invoke_workflow t-scope-root"]
    assert activations and all(parent_of(s) == root_run.context.span_id for s in activations)
    attributes = activations[0].attributes or {}
    assert attributes["gen_ai.operation.name"] == "invoke_workflow"
    assert attributes["cadenza.first_invocation"] is True
    assert attributes["cadenza.run_id"] == run.run_id


def _shape(spans: tuple[ReadableSpan, ...]) -> Counter[tuple[str, str | None]]:
    """Each span as (name, parent's name): comparable across runs with other ids."""
    names = {span.context.span_id: span.name for span in spans}
    return Counter(
        (span.name, names.get(parent_of(span) or 0))
        for span in spans
        if not span.name.startswith("invoke_workflow")
    )


async def test_replays_emit_each_operation_once(exporter: InMemorySpanExporter) -> None:
    clock = FakeClock()
    async with TestEnvironment(clock=clock, instrumentation=instrumentation(exporter)) as env:
        once = await env.run(waiter, 0.0)  # zero waits: one activation, nothing replayed
        assert once.status == RunStatus.SUCCEEDED
        straight = exporter.get_finished_spans()
        exporter.clear()
        run = await env.run(waiter, 60.0)
        for _ in range(5):
            assert run.status == RunStatus.SUSPENDED
            await env.advance(timedelta(seconds=60))
            run = await env.resume(run)
        assert run.status == RunStatus.SUCCEEDED
        replayed = exporter.get_finished_spans()
    activations = [s for s in replayed if s.name.startswith("invoke_workflow")]
    assert len(activations) == 6
    assert [(s.attributes or {})["cadenza.first_invocation"] for s in activations] == [
        True,
        *[False] * 5,
    ]
    assert sum(int((s.attributes or {})["cadenza.replayed"]) for s in activations) > 0
    assert _shape(replayed) == _shape(straight)
    assert len({s.context.span_id for s in replayed}) == len(replayed)
    # A wait is one span from its recorded start to its end, an activation later.
    pause = by_name([s for s in replayed if s.name.startswith("wait")])["wait pause0"]
    assert pause.end_time is not None and pause.start_time is not None
    assert pause.end_time - pause.start_time == 60 * 10**9


def fetch(url: str) -> str:
    current = trace.get_current_span()
    inner = trace.get_tracer("test-http").start_span("GET " + url)
    inner.end()
    return f"{current.get_span_context().span_id}"


@workflow(name="t-otel-nesting")
async def nesting(ctx: Context) -> str:
    return str(await ctx.step(fetch, "http://example.invalid/"))


async def test_spans_made_inside_a_step_nest_under_its_attempt(
    exporter: InMemorySpanExporter,
) -> None:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instr = OpenTelemetryInstrumentation(tracer_provider=provider)
    original = trace.get_tracer
    trace.get_tracer = lambda name, *a, **k: provider.get_tracer(name)  # type: ignore[assignment]
    try:
        async with TestEnvironment(instrumentation=instr) as env:
            run = await env.run(nesting)
            seen = await env.result(run)
    finally:
        trace.get_tracer = original  # type: ignore[assignment]
    spans = by_name(exporter.get_finished_spans())
    step = spans["step fetch"]  # attempt 1's span is the step's
    assert seen == str(step.context.span_id)  # current in the step's worker thread
    assert parent_of(spans["GET http://example.invalid/"]) == step.context.span_id
    assert spans["GET http://example.invalid/"].context.trace_id == step.context.trace_id


@tool
def lookup(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


@workflow(name="t-otel-genai")
async def genai(ctx: Context) -> str:
    model = ScriptedModel(["it is sunny"], name="scripted:weather-1")
    reply = await call_model(ctx, model, "weather in Lisbon?")
    outcome = await call_tool(ctx, Toolset([lookup]), ToolCall("c1", "lookup", {"city": "Lisbon"}))
    return reply.text + " / " + outcome.output


@pytest.mark.parametrize("capture", [False, True])
async def test_model_and_tool_calls_follow_the_genai_conventions(
    exporter: InMemorySpanExporter, capture: bool
) -> None:
    async with TestEnvironment(
        instrumentation=instrumentation(exporter, capture_content=capture)
    ) as env:
        run = await env.run(genai)
        assert run.status == RunStatus.SUCCEEDED
    spans = by_name(exporter.get_finished_spans())
    chat = spans["chat weather-1"]
    attrs = dict(chat.attributes or {})
    assert chat.kind == trace.SpanKind.CLIENT
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.provider.name"] == "scripted"
    assert attrs["gen_ai.request.model"] == "weather-1"
    assert attrs["gen_ai.usage.input_tokens"] == 3
    assert attrs["gen_ai.usage.output_tokens"] == 3
    assert tuple(attrs["gen_ai.response.finish_reasons"]) == ("stop",)
    assert ("gen_ai.output.messages" in attrs) is capture
    assert ("gen_ai.input.messages" in attrs) is capture
    if capture:
        assert "it is sunny" in str(attrs["gen_ai.output.messages"])
        [asked] = json.loads(str(attrs["gen_ai.input.messages"]))
        assert asked["role"] == "user" and asked["parts"][0]["content"]
    tool_span = dict(spans["execute_tool lookup"].attributes or {})
    assert tool_span["gen_ai.operation.name"] == "execute_tool"
    assert tool_span["gen_ai.tool.name"] == "lookup"
    assert ("gen_ai.tool.call.result" in tool_span) is capture


_calls: list[int] = []


def flaky() -> str:
    _calls.append(trace.get_current_span().get_span_context().span_id)
    if len(_calls) < 2:
        raise ValueError("first attempt fails")
    return "ok"


@workflow(name="t-otel-retry")
async def retried(ctx: Context) -> str:
    return str(await ctx.step(flaky))


async def test_a_retried_step_is_one_span_with_an_errored_attempt(
    exporter: InMemorySpanExporter,
) -> None:
    _calls.clear()
    clock = FakeClock()
    async with TestEnvironment(clock=clock, instrumentation=instrumentation(exporter)) as env:
        run = await env.run(retried)
        assert run.status == RunStatus.SUSPENDED  # backing off
        await env.advance(timedelta(seconds=5))
        run = await env.resume(run)
        assert run.status == RunStatus.SUCCEEDED
    spans = by_name([s for s in exporter.get_finished_spans() if "invoke_workflow" not in s.name])
    first, second = spans["attempt 1 flaky"], spans["attempt 2 flaky"]
    assert first.status.status_code == trace.StatusCode.ERROR
    assert (first.attributes or {})["error.type"] == "ValueError"
    assert (first.attributes or {})["cadenza.retry_follows"] is True
    assert second.status.status_code != trace.StatusCode.ERROR
    step = spans["step flaky"]
    assert parent_of(first) == parent_of(second) == step.context.span_id
    assert (step.attributes or {})["cadenza.op.attempts"] == 2
    # What each attempt's function saw as the current span: the step's for attempt 1,
    # attempt 2's own for the retry.
    assert _calls == [step.context.span_id, second.context.span_id]


@workflow(name="t-otel-agent")
async def agentic(ctx: Context) -> str:
    model = ScriptedModel(
        [ToolCall("c1", "lookup", {"city": "Porto"}), "It is sunny in Porto."],
        name="scripted:planner",
    )
    agent = Agent(name="weather", instructions="Answer about weather.", model=model, tools=[lookup])
    answer = await agent.run(ctx, "Weather in Porto?")
    await ctx.wait(timedelta(seconds=30), name="later")  # the agent is not reported again
    return answer.answer


async def test_an_agent_is_one_invoke_agent_span_over_its_calls(
    exporter: InMemorySpanExporter,
) -> None:
    async with TestEnvironment(clock=FakeClock(), instrumentation=instrumentation(exporter)) as env:
        run = await env.run(agentic)
        assert run.status == RunStatus.SUSPENDED
        await env.advance(timedelta(seconds=30))
        run = await env.resume(run)
        assert run.status == RunStatus.SUCCEEDED
    spans = exporter.get_finished_spans()
    agents = [s for s in spans if s.name == "invoke_agent weather"]
    assert len(agents) == 1
    agent = agents[0]
    attrs = dict(agent.attributes or {})
    assert attrs["gen_ai.operation.name"] == "invoke_agent"
    assert attrs["gen_ai.agent.name"] == "weather"
    assert attrs["gen_ai.provider.name"] == "scripted"
    run_span = next(s for s in spans if s.name == "run t-otel-agent")
    assert parent_of(agent) == run_span.context.span_id
    chats = [s for s in spans if s.name.startswith("chat ")]
    tools = [s for s in spans if s.name == "execute_tool lookup"]
    assert len(chats) == 2 and len(tools) == 1
    assert {parent_of(s) for s in (*chats, *tools)} == {agent.context.span_id}
    assert parent_of(next(s for s in spans if s.name == "wait later")) == run_span.context.span_id
