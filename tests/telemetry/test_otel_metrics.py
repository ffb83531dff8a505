"""Metrics from live work, read with the SDK's in-memory reader."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider

from cadenza import Context, RunStatus, workflow
from cadenza.agents import call_model
from cadenza.models._pricing import _PRICES, Price
from cadenza.telemetry import OpenTelemetryInstrumentation
from cadenza.testing import FakeClock, ScriptedModel, TestEnvironment
from tests.telemetry.otel_workflows import waiter


def points(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    data = reader.get_metrics_data()
    found: dict[str, list[Any]] = {}
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                found.setdefault(metric.name, []).extend(metric.data.data_points)
    return found


@workflow(name="t-otel-metrics-model")
async def asks(ctx: Context) -> str:
    model = ScriptedModel(["one two three four"], name="scripted:metered")
    return (await call_model(ctx, model, "count to four")).text


async def test_counts_latency_tokens_and_cost_once_across_replays(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(_PRICES, "scripted:metered", Price(1_000_000.0, 2_000_000.0))
    reader = InMemoryMetricReader()
    instr = OpenTelemetryInstrumentation(
        tracer_provider=TracerProvider(), meter_provider=MeterProvider(metric_readers=[reader])
    )
    async with TestEnvironment(clock=FakeClock(), instrumentation=instr) as env:
        run = await env.run(waiter, 10.0)
        while run.status == RunStatus.SUSPENDED:
            await env.advance(timedelta(seconds=10))
            run = await env.resume(run)
        model_run = await env.run(asks)
        assert model_run.status == RunStatus.SUCCEEDED
    found = points(reader)
    steps = sum(p.value for p in found["cadenza.steps.completed"])
    assert steps == 7  # six steps of the waiter, one model call: replays add nothing
    runs = {p.attributes["cadenza.workflow"]: p.value for p in found["cadenza.runs.completed"]}
    assert runs == {"t-otel-waiter": 1, "t-otel-metrics-model": 1}
    activations = sum(p.value for p in found["cadenza.activations"])
    assert activations == 7
    waits = [
        p for p in found["cadenza.operation.duration"] if p.attributes["cadenza.op.type"] == "wait"
    ]
    assert waits[0].count == 5 and waits[0].sum == pytest.approx(50.0)
    tokens = {p.attributes["gen_ai.token.type"]: p.sum for p in found["gen_ai.client.token.usage"]}
    assert tokens == {"input": 3, "output": 4}
    (spent,) = found["cadenza.model.cost"]
    assert spent.attributes["gen_ai.request.model"] == "metered"
    assert spent.value == pytest.approx(3 * 1.0 + 4 * 2.0)


@workflow(name="t-otel-metrics-callback")
async def approval(ctx: Context) -> str:
    callback = await ctx.create_callback(name="approve")
    return str(await callback.result())


async def test_callback_wait_time() -> None:
    reader = InMemoryMetricReader()
    instr = OpenTelemetryInstrumentation(
        tracer_provider=TracerProvider(), meter_provider=MeterProvider(metric_readers=[reader])
    )
    async with TestEnvironment(clock=FakeClock(), instrumentation=instr) as env:
        run = await env.run(approval)
        await env.advance(timedelta(seconds=42))
        await env.succeed(await env.token(run), "yes")
        run = await env.resume(run)
        assert run.status == RunStatus.SUCCEEDED
    (waited,) = points(reader)["cadenza.callback.wait.duration"]
    assert waited.count == 1 and waited.sum == pytest.approx(42.0)


async def test_instrumentations_sharing_a_meter_provider_count_together() -> None:
    # Step and attempt counts are kept in process and reported when the reader collects;
    # a second instrumentation on the same provider must add to them, not vanish.
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader])
    first, second = (
        OpenTelemetryInstrumentation(tracer_provider=TracerProvider(), meter_provider=meters)
        for _ in range(2)
    )
    for instr in (first, second):
        async with TestEnvironment(clock=FakeClock(), instrumentation=instr) as env:
            assert (await env.run(waiter, 0.0)).status == RunStatus.SUCCEEDED
    found = points(reader)
    assert sum(p.value for p in found["cadenza.steps.completed"]) == 12
    attempts = {p.attributes["failed"]: p.value for p in found["cadenza.step.attempts"]}
    assert attempts == {False: 12}
    assert {p.attributes["status"] for p in found["cadenza.steps.completed"]} == {"SUCCEEDED"}
