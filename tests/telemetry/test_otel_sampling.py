"""Sampling from the standard OTEL_TRACES_SAMPLER variables: decided once per trace, the
same on every worker and in every activation, so a trace is exported whole or not at all;
a trace that is not sampled starts no span, and the metrics still count its work."""

from __future__ import annotations

import random
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext

from cadenza import Context, RunStatus, workflow
from cadenza.telemetry import OpenTelemetryInstrumentation
from cadenza.telemetry._otel import _Current, trace_id_of
from cadenza.testing import FakeClock, TestEnvironment
from tests.engine.scope_workflows import SHIP_ORDERS, root
from tests.telemetry.otel_workflows import waiter
from tests.telemetry.test_otel_metrics import points

TRACE_RUNS = {"run t-scope-root", "run t-scope-child", "run t-scope-shipper"}


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    yield memory
    memory.clear()


def sampler_env(monkeypatch: pytest.MonkeyPatch, sampler: str, arg: str | None = None) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", sampler)
    if arg is None:
        monkeypatch.delenv("OTEL_TRACES_SAMPLER_ARG", raising=False)
    else:
        monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", arg)


def instrumentation(exporter: InMemorySpanExporter, **kw: Any) -> OpenTelemetryInstrumentation:
    """A worker's instrumentation: its provider's sampler comes from OTEL_TRACES_SAMPLER."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return OpenTelemetryInstrumentation(tracer_provider=provider, **kw)


def trace_ids(count: int, seed: int) -> list[str]:
    """Trace ids made as the engine makes them (version-4 UUIDs), from a fixed seed."""
    rng = random.Random(seed)
    return [uuid.UUID(int=rng.getrandbits(128), version=4).hex for _ in range(count)]


def by_trace(spans: tuple[ReadableSpan, ...]) -> dict[str, list[ReadableSpan]]:
    found: dict[str, list[ReadableSpan]] = defaultdict(list)
    for span in spans:
        found[f"{span.context.trace_id:032x}"].append(span)
    return found


def shape(spans: list[ReadableSpan] | tuple[ReadableSpan, ...]) -> Counter[tuple[str, str]]:
    """Each span as (name, parent's name), activations left out: comparable across runs."""
    names = {span.context.span_id: span.name for span in spans}
    return Counter(
        (span.name, names.get(span.parent.span_id, "-") if span.parent else "-")
        for span in spans
        if not span.name.startswith("invoke_workflow")
    )


async def test_ratio_zero_starts_no_span_and_still_counts(
    monkeypatch: pytest.MonkeyPatch, exporter: InMemorySpanExporter
) -> None:
    sampler_env(monkeypatch, "parentbased_traceidratio", "0")
    reader = InMemoryMetricReader()
    instr = instrumentation(exporter, meter_provider=MeterProvider(metric_readers=[reader]))
    started: list[str] = []
    start_span = instr.tracer.start_span

    def counting(name: str, *args: Any, **kw: Any) -> Any:
        started.append(name)
        return start_span(name, *args, **kw)

    monkeypatch.setattr(instr.tracer, "start_span", counting)
    async with TestEnvironment(clock=FakeClock(), instrumentation=instr) as env:
        await env.engine.store.put_rule(SHIP_ORDERS)
        for _ in range(3):
            assert (await env.run(root, 2)).status == RunStatus.SUCCEEDED
        assert (await env.run(waiter, 0.0)).status == RunStatus.SUCCEEDED
    assert exporter.get_finished_spans() == ()
    assert started == []  # decided before any span is started: no SDK span at all
    found = points(reader)
    # Three child steps, three shipper steps, six steps of the waiter.
    assert sum(p.value for p in found["cadenza.steps.completed"]) == 12
    runs = {p.attributes["cadenza.workflow"]: p.value for p in found["cadenza.runs.completed"]}
    assert runs == {"t-scope-root": 3, "t-scope-child": 3, "t-scope-shipper": 3, "t-otel-waiter": 1}
    durations = sum(p.count for p in found["cadenza.operation.duration"])
    assert durations >= 12


def test_a_ratio_holds_for_the_trace_ids_the_engine_makes(monkeypatch: pytest.MonkeyPatch) -> None:
    # A version-4 UUID fixes the top bits of what a ratio sampler reads: decided on as it
    # is, no trace would be sampled at 0.1.
    sampler_env(monkeypatch, "parentbased_traceidratio", "0.1")
    instr = OpenTelemetryInstrumentation(tracer_provider=TracerProvider())
    ids = trace_ids(4000, seed=11)
    kept = [instr._verdict(trace_id_of(t, "r-1"), "run x").sampling is not None for t in ids]
    assert 320 <= sum(kept) <= 480
    again = OpenTelemetryInstrumentation(tracer_provider=TracerProvider())
    assert kept == [
        again._verdict(trace_id_of(t, "r-2"), "run y").sampling is not None for t in ids
    ]


@pytest.mark.parametrize(
    ("sampler", "arg"),
    [("traceidratio", "1.0"), ("parentbased_traceidratio", "1"), ("always_on", None)],
)
async def test_ratio_one_traces_every_run_as_the_default_does(
    monkeypatch: pytest.MonkeyPatch, exporter: InMemorySpanExporter, sampler: str, arg: str | None
) -> None:
    monkeypatch.delenv("OTEL_TRACES_SAMPLER", raising=False)
    async with TestEnvironment(instrumentation=instrumentation(exporter)) as env:
        await env.engine.store.put_rule(SHIP_ORDERS)
        assert (await env.run(root, 2)).status == RunStatus.SUCCEEDED
    default = shape(exporter.get_finished_spans())
    exporter.clear()
    sampler_env(monkeypatch, sampler, arg)
    async with TestEnvironment(instrumentation=instrumentation(exporter)) as env:
        await env.engine.store.put_rule(SHIP_ORDERS)
        for trace_id in trace_ids(8, seed=1):
            assert (await env.run(root, 2, trace_id=trace_id)).status == RunStatus.SUCCEEDED
    traces = by_trace(exporter.get_finished_spans())
    assert len(traces) == 8
    assert all(shape(spans) == default for spans in traces.values())
    assert {name for name, _ in default} >= TRACE_RUNS | {"step double", "emit order.placed"}


@pytest.mark.parametrize("sampler", ["parentbased_traceidratio", "traceidratio"])
async def test_half_the_traces_are_kept_whole_with_their_child_and_rule_runs(
    monkeypatch: pytest.MonkeyPatch, exporter: InMemorySpanExporter, sampler: str
) -> None:
    sampler_env(monkeypatch, "always_on")
    async with TestEnvironment(instrumentation=instrumentation(exporter)) as env:
        await env.engine.store.put_rule(SHIP_ORDERS)
        assert (await env.run(root, 2)).status == RunStatus.SUCCEEDED
    whole = shape(exporter.get_finished_spans())
    exporter.clear()
    sampler_env(monkeypatch, sampler, "0.5")
    ids = trace_ids(40, seed=7)
    kept: list[set[str]] = []
    for _ in range(2):  # two workers, each deciding for itself
        async with TestEnvironment(instrumentation=instrumentation(exporter)) as env:
            await env.engine.store.put_rule(SHIP_ORDERS)
            for trace_id in ids:
                assert (await env.run(root, 2, trace_id=trace_id)).status == RunStatus.SUCCEEDED
        traces = by_trace(exporter.get_finished_spans())
        exporter.clear()
        # A trace is all there (the root, its invoked child, the run its emit started,
        # every operation) or not there at all.
        assert all(shape(spans) == whole for spans in traces.values())
        assert set(traces) <= set(ids)
        kept.append(set(traces))
    assert kept[0] == kept[1]
    assert 10 <= len(kept[0]) <= 30, "a ratio of 0.5 keeps about half of the traces"


async def test_each_activation_on_a_new_worker_takes_the_same_decision(
    monkeypatch: pytest.MonkeyPatch, exporter: InMemorySpanExporter, tmp_path: Path
) -> None:
    sampler_env(monkeypatch, "always_on")
    async with TestEnvironment(clock=FakeClock(), instrumentation=instrumentation(exporter)) as env:
        assert (await env.run(waiter, 0.0)).status == RunStatus.SUCCEEDED
    straight = shape(exporter.get_finished_spans())
    exporter.clear()
    sampler_env(monkeypatch, "parentbased_traceidratio", "0.5")
    clock, store = FakeClock(), f"sqlite:///{tmp_path / 'shared.db'}"
    runs = []
    for trace_id in trace_ids(8, seed=3):
        async with TestEnvironment(
            clock=clock, store=store, instrumentation=instrumentation(exporter)
        ) as env:
            runs.append(await env.run(waiter, 60.0, trace_id=trace_id))
    for _ in range(5):  # every activation on a worker of its own, that knows nothing yet
        clock.advance(timedelta(seconds=60))
        for i, run in enumerate(runs):
            async with TestEnvironment(
                clock=clock, store=store, instrumentation=instrumentation(exporter)
            ) as env:
                runs[i] = await env.resume(run)
    assert all(run.status == RunStatus.SUCCEEDED for run in runs)
    traces = by_trace(exporter.get_finished_spans())
    assert all(shape(spans) == straight for spans in traces.values())
    for spans in traces.values():
        activations = [s for s in spans if s.name.startswith("invoke_workflow")]
        assert len(activations) == 6
    assert 0 < len(traces) < len(runs)


@workflow(name="t-otel-sampling-probe")
async def probe(ctx: Context) -> list[Any]:
    return list(await ctx.step(look_around))


def look_around() -> tuple[bool, bool, str]:
    """What a library sees inside a step: the current span's flags, and whether a span it
    starts is recorded."""
    current: SpanContext = trace.get_current_span().get_span_context()
    with trace.get_tracer("some.library").start_as_current_span("GET /thing") as span:
        nested = span.is_recording()
    return current.trace_flags.sampled, nested, f"{current.trace_id:032x}"


@pytest.mark.parametrize(("ratio", "sampled"), [("0", False), ("1", True)])
async def test_what_a_step_calls_follows_the_decision(
    monkeypatch: pytest.MonkeyPatch, exporter: InMemorySpanExporter, ratio: str, sampled: bool
) -> None:
    sampler_env(monkeypatch, "parentbased_traceidratio", ratio)
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: provider)
    instr = OpenTelemetryInstrumentation(tracer_provider=provider)
    async with TestEnvironment(instrumentation=instr) as env:
        run = await env.run(probe)
        assert run.status == RunStatus.SUCCEEDED
        flag, nested, trace_id = await env.result(run)
    # The step's context carries the run's trace and its decision, so a library's span
    # under it, and a service it calls (traceparent), follow the run.
    assert trace_id == run.trace_id
    assert (flag, nested) == (sampled, sampled)
    names = {span.name for span in exporter.get_finished_spans()}
    assert ("GET /thing" in names) is sampled and ("step look_around" in names) is sampled


def test_the_span_made_current_keeps_what_the_outer_context_holds() -> None:
    # The context made current is reused from step to step only over the same outer one.
    span = NonRecordingSpan(SpanContext(7, 9, False))
    for value in ("first", "second", "first"):
        token = otel_context.attach(otel_context.set_value("caller", value))
        try:
            with _Current(span):
                assert otel_context.get_value("caller") == value
                assert trace.get_current_span() is span
            assert trace.get_current_span() is not span
        finally:
            otel_context.detach(token)
