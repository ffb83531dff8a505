"""Metrics from the instrumentation hooks, through the OpenTelemetry metrics API.

Counters become rates in any backend (steps and runs per second); histograms give
latency percentiles. Every figure comes from live work only, so replays do not inflate
them. Tokens and cost are read from the recorded model reply and the price table.

The queue gauges (depth, age of the oldest runnable run) describe the store, not this
process's work. Gauge callbacks are synchronous and the store is async, so a worker
samples ``RunStore.queue_stats`` every ``queue_sample_interval`` (``queues_sampled``)
and the callbacks report the latest sample.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any
from weakref import WeakKeyDictionary

from opentelemetry.metrics import CallbackOptions, Observation

from cadenza.engine._instrumentation import AttemptInfo, InvocationInfo, OperationInfo
from cadenza.models._pricing import cost
from cadenza.models._types import Usage
from cadenza.ports.run_store import QueueStats
from cadenza.telemetry._genai import model_reply

__all__ = ["CadenzaMetrics"]

_TERMINAL = frozenset({"SUCCEEDED", "FAILED", "CANCELLED"})
_CALLBACKS = frozenset({"callback", "event_wait"})
#: Seconds between two samples of the queues, unless CADENZA_QUEUE_METRICS_INTERVAL says.
QUEUE_SAMPLE_SECONDS = 15.0


def _sample_interval() -> timedelta:
    raw = os.environ.get("CADENZA_QUEUE_METRICS_INTERVAL", "").strip()
    try:
        seconds = float(raw) if raw else QUEUE_SAMPLE_SECONDS
    except ValueError:
        seconds = QUEUE_SAMPLE_SECONDS
    return timedelta(seconds=seconds if seconds > 0 else QUEUE_SAMPLE_SECONDS)


class _Tally:
    """A counter kept here and reported, when a reader collects, by an observable counter:
    what the SDK exports is the same sum, but a step pays a dict increment instead of an
    SDK ``Counter.add`` (a measurement object, the attribute hash, the exemplar filter,
    several microseconds), twice per step."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.counts: dict[str | bool, int] = {}
        self.lock = threading.Lock()  # engines on several threads may share one provider

    def add(self, value: str | bool) -> None:
        with self.lock:
            self.counts[value] = self.counts.get(value, 0) + 1

    def observe(self, options: CallbackOptions) -> Iterable[Observation]:
        with self.lock:
            counts = list(self.counts.items())
        return [Observation(count, {self.key: value}) for value, count in counts]


# An observable counter registered twice on one provider keeps only its first callback:
# instrumentations that share a meter provider share its tallies.
_TALLIES: WeakKeyDictionary[Any, tuple[_Tally, _Tally]] = WeakKeyDictionary()


def _tallies(meter_provider: Any, meter: Any) -> tuple[_Tally, _Tally]:
    try:
        found = _TALLIES.get(meter_provider)
    except TypeError:  # a provider that cannot be weakly referenced is not shared
        found = None
    if found is not None:
        return found
    steps, attempts = _Tally("status"), _Tally("failed")
    meter.create_observable_counter(
        "cadenza.steps.completed",
        callbacks=[steps.observe],
        unit="{step}",
        description="Steps that reached an outcome",
    )
    meter.create_observable_counter(
        "cadenza.step.attempts",
        callbacks=[attempts.observe],
        unit="{attempt}",
        description="Step attempts run",
    )
    try:
        _TALLIES[meter_provider] = (steps, attempts)
    except TypeError:
        pass
    return steps, attempts


@lru_cache(maxsize=64)
def _duration_labels(op_type: str, status: str) -> dict[str, str]:
    """The attributes of an operation's duration, built once per (type, status) rather
    than per operation (the SDK copies what it is given, so one dict serves them all)."""
    return {"cadenza.op.type": op_type, "status": status}


@lru_cache(maxsize=16)
def _type_labels(op_type: str) -> dict[str, str]:
    return {"cadenza.op.type": op_type}


class CadenzaMetrics:
    """The instruments, created once on ``meter_provider``."""

    def __init__(self, meter_provider: Any) -> None:
        meter = meter_provider.get_meter("cadenza")
        self.steps, self.attempts = _tallies(meter_provider, meter)
        self.runs = meter.create_counter(
            "cadenza.runs.completed", unit="{run}", description="Runs that ended, by status"
        )
        self.activations = meter.create_counter(
            "cadenza.activations", unit="{activation}", description="Activations, by outcome"
        )
        self.duration = meter.create_histogram(
            "cadenza.operation.duration",
            unit="s",
            description="Durable operations, from their recorded start to their end",
        )
        self.callback_wait = meter.create_histogram(
            "cadenza.callback.wait.duration",
            unit="s",
            description="How long callbacks and event waits waited for their answer",
        )
        self.tokens = meter.create_histogram(
            "gen_ai.client.token.usage", unit="{token}", description="Tokens per model call"
        )
        self.cost = meter.create_counter(
            "cadenza.model.cost", unit="USD", description="What model calls cost (price table)"
        )
        self.queue_sample_interval = _sample_interval()
        # The latest sample and when it was taken; queues seen once keep reporting (zero
        # when drained) so that a series ends at 0, not at its last value.
        self._sample: dict[str, QueueStats] = {}
        self._sampled_at: datetime | None = None
        self._sample_lock = threading.Lock()  # the reader's thread reads what the loop wrote
        meter.create_observable_gauge(
            "cadenza.queue.depth",
            callbacks=[self._observe_depth],
            unit="{run}",
            description="Runs per queue: runnable now, running under a live lease, waiting"
            " for a wake time",
        )
        meter.create_observable_gauge(
            "cadenza.queue.oldest_age",
            callbacks=[self._observe_age],
            unit="s",
            description="How long the oldest runnable run of the queue has waited to be"
            " claimed (0 when none waits)",
        )

    def queues_sampled(self, stats: Sequence[QueueStats], now: datetime) -> None:
        with self._sample_lock:
            sample = {name: QueueStats(name) for name in self._sample}
            sample.update((s.queue, s) for s in stats)
            self._sample, self._sampled_at = sample, now

    def _observe_depth(self, options: CallbackOptions) -> Iterable[Observation]:
        with self._sample_lock:
            sample = list(self._sample.values())
        for stats in sample:
            for state, value in (
                ("runnable", stats.runnable),
                ("running", stats.running),
                ("waiting", stats.waiting),
            ):
                yield Observation(value, {"cadenza.queue": stats.queue, "state": state})

    def _observe_age(self, options: CallbackOptions) -> Iterable[Observation]:
        with self._sample_lock:
            sample, now = list(self._sample.values()), self._sampled_at
        if now is None:
            return
        for stats in sample:
            age = stats.oldest_age(now).total_seconds()
            yield Observation(age, {"cadenza.queue": stats.queue})

    def invocation_ended(self, info: InvocationInfo) -> None:
        self.activations.add(1, {"cadenza.workflow": info.workflow, "outcome": info.outcome})
        if info.outcome in _TERMINAL:
            self.runs.add(1, {"cadenza.workflow": info.workflow, "status": info.outcome})

    def attempt_ended(self, info: AttemptInfo) -> None:
        self.attempts.add(info.error is not None)

    def operation_ended(self, info: OperationInfo) -> None:
        status = info.status or ""
        if info.end_time is not None:
            seconds = max((info.end_time - info.start_time).total_seconds(), 0.0)
            self.duration.record(seconds, _duration_labels(info.type, status))
            if info.type in _CALLBACKS:
                self.callback_wait.record(seconds, _type_labels(info.type))
        if info.type in ("step", "condition"):
            self.steps.add(status)
        reply = model_reply(info.record)
        if reply is None:
            return
        model = str(reply.get("model") or info.name.removeprefix("model:"))
        usage = Usage.from_dict(reply.get("usage") or {})
        provider, _, name = model.partition(":") if ":" in model else ("", "", model)
        labels = {"gen_ai.operation.name": "chat", "gen_ai.request.model": name}
        if provider:
            labels["gen_ai.provider.name"] = provider
        self.tokens.record(usage.input_tokens, {**labels, "gen_ai.token.type": "input"})
        self.tokens.record(usage.output_tokens, {**labels, "gen_ai.token.type": "output"})
        self.cost.add(cost(model, usage), {"gen_ai.request.model": name})
