"""The queue gauges: a worker samples the store's queues and the gauges report the latest
sample, read here with the SDK's in-memory reader; with no instrumentation nothing is
sampled at all."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider

from cadenza.engine.worker import Worker
from cadenza.history import HistoryEvent, HistoryEventType
from cadenza.ports.run_store import QueueStats, RunRecord, RunStatus
from cadenza.telemetry import OpenTelemetryInstrumentation
from cadenza.testing import FakeClock, InMemoryRunStore, TestEnvironment

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


class CountingStore(InMemoryRunStore):
    def __init__(self) -> None:
        super().__init__()
        self.samples = 0

    async def queue_stats(self, *, now: datetime) -> list[QueueStats]:
        self.samples += 1
        return await super().queue_stats(now=now)


def gauges(reader: InMemoryMetricReader) -> dict[str, dict[tuple[Any, ...], float]]:
    """Every gauge point by metric name, keyed by its attribute values."""
    data = reader.get_metrics_data()
    found: dict[str, dict[tuple[Any, ...], float]] = {}
    if data is None:
        return found
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name.startswith("cadenza.queue."):
                    points = found.setdefault(metric.name, {})
                    for p in metric.data.data_points:
                        points[tuple(sorted(p.attributes.items()))] = p.value
    return found


def depth(found: dict[str, dict[tuple[Any, ...], float]], queue: str, state: str) -> float:
    key = (("cadenza.queue", queue), ("state", state))
    return found["cadenza.queue.depth"][key]


def age(found: dict[str, dict[tuple[Any, ...], float]], queue: str) -> float:
    return found["cadenza.queue.oldest_age"][(("cadenza.queue", queue),)]


async def pending(store: InMemoryRunStore, run_id: str, created: datetime) -> None:
    run = RunRecord(run_id, "wf", "1", RunStatus.PENDING, "null", created, created)
    started = HistoryEvent(0, HistoryEventType.EXECUTION_STARTED, created)
    await store.create_run(run.evolve(queue="billing"), started)


async def until(check: Callable[[], bool]) -> None:
    for _ in range(500):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the worker did not sample the queues")


async def test_a_worker_samples_queue_depth_and_age_into_the_gauges(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CADENZA_QUEUE_METRICS_INTERVAL", "0.02")
    reader = InMemoryMetricReader()
    instr = OpenTelemetryInstrumentation(
        tracer_provider=TracerProvider(), meter_provider=MeterProvider(metric_readers=[reader])
    )
    store = CountingStore()
    clock = FakeClock(T0)
    assert gauges(reader).get("cadenza.queue.oldest_age", {}) == {}  # nothing sampled yet
    async with TestEnvironment(clock=clock, store=store, instrumentation=instr) as env:
        await pending(store, "r-old", T0)
        await pending(store, "r-new", T0 + timedelta(seconds=20))
        clock.advance(timedelta(seconds=45))
        stop = asyncio.Event()
        # The worker serves another queue: billing's runs stay where they are.
        task = asyncio.create_task(Worker(env.engine, queues=["elsewhere"]).run(stop=stop))
        try:
            await until(lambda: store.samples > 0)
            found = gauges(reader)
            assert depth(found, "billing", "runnable") == 2
            assert depth(found, "billing", "running") == 0
            assert depth(found, "billing", "waiting") == 0
            assert age(found, "billing") == 45.0
            assert depth(found, "default", "runnable") == 0 and age(found, "default") == 0.0

            # Claimed elsewhere: the next sample shows them running, none waiting to start.
            now = clock.now()
            await store.claim_runs(
                owner="w", now=now, lease_until=now + timedelta(minutes=1), limit=10
            )
            seen = store.samples
            await until(lambda: store.samples > seen)
            found = gauges(reader)
            assert depth(found, "billing", "runnable") == 0
            assert depth(found, "billing", "running") == 2
            assert age(found, "billing") == 0.0
        finally:
            stop.set()
            await task


async def test_without_instrumentation_nothing_is_sampled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CADENZA_QUEUE_METRICS_INTERVAL", "0.01")
    store = CountingStore()
    async with TestEnvironment(store=store) as env:
        stop = asyncio.Event()
        task = asyncio.create_task(Worker(env.engine, poll_interval=0.01).run(stop=stop))
        await asyncio.sleep(0.2)
        stop.set()
        await task
    assert store.samples == 0
