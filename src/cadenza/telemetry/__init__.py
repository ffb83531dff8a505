"""Observability: spans and traces read from the store, for the terminal and the console,
and live OpenTelemetry traces and metrics (``OpenTelemetryInstrumentation``, imported only
when used: it needs the ``otel`` extra)."""

from typing import Any

from cadenza.telemetry._costs import CostReport
from cadenza.telemetry._spans import ModelCall, OpSpan, RunSpan, model_call, op_spans, run_span
from cadenza.telemetry._trace import TraceNode, TraceTree, load_trace

__all__ = [
    "CostReport",
    "ModelCall",
    "OpSpan",
    "OpenTelemetryInstrumentation",
    "RunSpan",
    "TraceNode",
    "TraceTree",
    "load_trace",
    "model_call",
    "op_spans",
    "run_span",
]


def __getattr__(name: str) -> Any:
    # OpenTelemetry is optional: importing cadenza.telemetry must not import it.
    if name == "OpenTelemetryInstrumentation":
        from cadenza.telemetry._otel import OpenTelemetryInstrumentation

        return OpenTelemetryInstrumentation
    raise AttributeError(f"module 'cadenza.telemetry' has no attribute {name!r}")
