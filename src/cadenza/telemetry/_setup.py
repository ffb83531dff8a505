"""Turn OpenTelemetry on from the standard ``OTEL_*`` environment variables.

``open_engine()`` asks :func:`from_environment` for an instrumentation: none unless an
OTLP endpoint or a traces exporter is configured, so a deployment without them imports
nothing of OpenTelemetry and pays nothing. The providers are created once per process;
the tracer provider reads ``OTEL_TRACES_SAMPLER`` and ``OTEL_TRACES_SAMPLER_ARG`` itself.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cadenza.telemetry._otel import OpenTelemetryInstrumentation

__all__ = ["from_environment", "otel_configured"]

log = logging.getLogger("cadenza.telemetry")
_instance: OpenTelemetryInstrumentation | None = None


def otel_configured() -> bool:
    """Whether the environment asks for traces to be exported."""
    env = os.environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter == "none":
        return False
    return bool(
        exporter
        or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def from_environment() -> OpenTelemetryInstrumentation | None:
    """The process's OpenTelemetry instrumentation when the environment configures one."""
    global _instance
    if not otel_configured():
        return None
    if _instance is not None:
        return _instance
    try:
        from opentelemetry import metrics, trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
    except ImportError:
        log.warning(
            "OTEL_* variables ask for traces, but OpenTelemetry is not installed: install"
            " cadenza[otel] (pip install 'cadenza[otel]'); tracing stays off"
        )
        return None
    from cadenza.telemetry._otel import OpenTelemetryInstrumentation

    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "cadenza")})
    provider = TracerProvider(resource=resource)
    exporter = os.environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() or "otlp"
    if exporter == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    # Spans of auto-instrumented libraries (httpx, botocore) go where cadenza's go, unless
    # the application installed its own provider first.
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        trace.set_tracer_provider(provider)
    meter_provider = None
    if os.environ.get("OTEL_METRICS_EXPORTER", "otlp").strip().lower() == "otlp":
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

        reader = PeriodicExportingMetricReader(OTLPMetricExporter())
        meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
        if isinstance(metrics.get_meter_provider(), metrics._internal._ProxyMeterProvider):
            metrics.set_meter_provider(meter_provider)
    _instance = OpenTelemetryInstrumentation(
        tracer_provider=provider, meter_provider=meter_provider
    )
    return _instance
