"""Metrics from the instrumentation hooks, through the OpenTelemetry metrics API.

Counters become rates in any backend (steps and runs per second); histograms give
latency percentiles. Every figure comes from live work only, so replays do not inflate
them. Tokens and cost are read from the recorded model reply and the price table.
"""

from __future__ import annotations

from typing import Any

from cadenza.engine._instrumentation import AttemptInfo, InvocationInfo, OperationInfo
from cadenza.models._pricing import cost
from cadenza.models._types import Usage
from cadenza.telemetry._genai import model_reply

__all__ = ["CadenzaMetrics"]

_TERMINAL = frozenset({"SUCCEEDED", "FAILED", "CANCELLED"})
_CALLBACKS = frozenset({"callback", "event_wait"})


class CadenzaMetrics:
    """The instruments, created once on ``meter_provider``."""

    def __init__(self, meter_provider: Any) -> None:
        meter = meter_provider.get_meter("cadenza")
        self.steps = meter.create_counter(
            "cadenza.steps.completed", unit="{step}", description="Steps that reached an outcome"
        )
        self.attempts = meter.create_counter(
            "cadenza.step.attempts", unit="{attempt}", description="Step attempts run"
        )
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

    def invocation_ended(self, info: InvocationInfo) -> None:
        self.activations.add(1, {"cadenza.workflow": info.workflow, "outcome": info.outcome})
        if info.outcome in _TERMINAL:
            self.runs.add(1, {"cadenza.workflow": info.workflow, "status": info.outcome})

    def attempt_ended(self, info: AttemptInfo) -> None:
        self.attempts.add(1, {"failed": info.error is not None})

    def operation_ended(self, info: OperationInfo) -> None:
        status = info.status or ""
        if info.end_time is not None:
            seconds = max((info.end_time - info.start_time).total_seconds(), 0.0)
            self.duration.record(seconds, {"cadenza.op.type": info.type, "status": status})
            if info.type in _CALLBACKS:
                self.callback_wait.record(seconds, {"cadenza.op.type": info.type})
        if info.type in ("step", "condition"):
            self.steps.add(1, {"status": status})
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
