"""OpenTelemetry traces (and metrics) from the instrumentation hooks.

One trace per conversation: the OTel trace id is the run's ``trace_id``, which child runs,
forks and rule-started runs inherit. Span ids are derived from what the journal names —
the run, the operation, the attempt — so an operation is one span however many
activations, workers or machines its run passes through, and other runs can point at it
without asking anyone: a child run's span hangs under its parent's ``invoke`` operation,
a rule-started run's under the ``emit`` that caused it.

Spans:

- ``run {workflow}``: the run, from its creation to its end (emitted when it ends);
- ``invoke_workflow {workflow}``: one activation, under the run;
- one span per operation (``step NAME``, ``wait NAME``, …; ``chat MODEL`` for a model
  call and ``execute_tool TOOL`` for a tool call, with the GenAI attributes), emitted when
  it ends with its recorded start, so a wait that spans days is one span;
- ``invoke_agent AGENT`` for an agent's run (``Agent.run``), over its model and tool
  calls;
- ``attempt N NAME`` for a step attempt that failed and for each attempt after the first.

While a step's function runs, its attempt's span (the step's, for attempt 1) is current,
so spans created inside (httpx, botocore) nest under it.

Sampling is decided once per trace: the tracer provider's sampler (``OTEL_TRACES_SAMPLER``)
is asked about the trace's root, and every span context of the trace carries the answer in
its trace flags, so every run of a trace, on every worker and in every activation, is
traced whole or not at all. A trace that is not sampled starts no span and builds no
attribute: while its steps run, the run's context is current, unsampled, so what they call
follows the decision; the metrics still count them.

Requires the ``otel`` extra; nothing here is imported unless it is used.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from contextlib import AbstractContextManager
from contextvars import ContextVar
from datetime import datetime
from functools import lru_cache
from typing import Any, NamedTuple

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
)
from opentelemetry.util.types import Attributes

from cadenza.engine._instrumentation import (
    AgentInfo,
    AgentScope,
    AttemptInfo,
    Instrumentation,
    InvocationInfo,
    OperationInfo,
)
from cadenza.telemetry._genai import genai_attributes

__all__ = ["OpenTelemetryInstrumentation", "span_id_of", "trace_id_of"]

_TERMINAL = frozenset({"SUCCEEDED", "FAILED", "CANCELLED"})
_SCOPE = "cadenza"
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_UNSAMPLED = TraceFlags(TraceFlags.DEFAULT)
_ROOT = otel_context.Context()  # a root span's context: the current span is not its parent
# Ids are asked for more than once (a step's span id when its attempt starts and when it
# ends; the run's span id as the parent of each of its operations): the last few thousand
# are kept, which also bounds what a long-lived worker holds.
_IDS = 4096


class _Forced(NamedTuple):
    """What the next span this module starts must take: its trace id, its span id (None:
    random) and its trace's sampling decision."""

    trace_id: int
    span_id: int | None
    sampling: SamplingResult


_FORCED: ContextVar[_Forced | None] = ContextVar("cadenza_otel_forced", default=None)


class _Verdict(NamedTuple):
    """A trace's sampling decision: the flags its span contexts carry, and the result its
    spans are started with (None: dropped, no span is started)."""

    flags: TraceFlags
    sampling: SamplingResult | None


# A tracer provider without the SDK's sampler decides for itself: cadenza starts every span.
_UNDECIDED = _Verdict(_SAMPLED, SamplingResult(Decision.RECORD_AND_SAMPLE))
_LOW_62 = (1 << 62) - 1


def _sampling_key(trace_id: int) -> int:
    """The trace id the sampler decides on. ``TraceIdRatioBased`` reads the low 64 bits of
    the id as a uniform random number; in a version-4 UUID (how cadenza makes trace ids)
    the top two of them are the fixed variant bits ``10``, which would sample no trace at a
    ratio of 0.5 or less. Those two bits are replaced by two random bits of the UUID's upper
    half. Any other id is decided on as it is, as other services decide on it."""
    if (trace_id >> 76) & 0xF != 4 or (trace_id >> 62) & 0x3 != 0b10:
        return trace_id
    low = ((trace_id & _LOW_62) << 2) | ((trace_id >> 64) & 0x3)
    return (trace_id >> 64) << 64 | low


def _hash64(*parts: str) -> int:
    value = int.from_bytes(hashlib.sha256("/".join(parts).encode()).digest()[:8], "big")
    return value or 1  # zero is the invalid span id


@lru_cache(maxsize=_IDS)
def trace_id_of(trace_id: str | None, run_id: str) -> int:
    """The OTel trace id of a run: its ``trace_id`` (32 hex digits), else a hash."""
    if trace_id and len(trace_id) == 32:
        try:
            return int(trace_id, 16) or 1
        except ValueError:
            pass
    digest = hashlib.sha256((trace_id or run_id).encode()).digest()[:16]
    return int.from_bytes(digest, "big") or 1


@lru_cache(maxsize=_IDS)
def span_id_of(run_id: str, op_id: str | None = None, attempt: int | None = None) -> int:
    """The span id of a run (no ``op_id``), an operation, or one attempt of a step."""
    if op_id is None:
        return _hash64("run", run_id)
    if attempt is None:
        return _hash64("op", run_id, op_id)
    return _hash64("attempt", run_id, op_id, str(attempt))


def agent_span_id(run_id: str, agent_id: str) -> int:
    """The span id of the agent whose first operation is ``agent_id``."""
    return _hash64("agent", run_id, agent_id)


def _parent_span(run_id: str, parent_op_id: str | None, agent: AgentScope | None) -> int:
    """An operation's parent: the agent it runs in directly, else its context, else the
    run."""
    owner = agent.enclosing(parent_op_id) if agent is not None else None
    if owner is not None:
        return agent_span_id(run_id, owner.agent_id)
    return span_id_of(run_id, parent_op_id) if parent_op_id else span_id_of(run_id)


def _ns(when: datetime | None) -> int | None:
    return None if when is None else int(when.timestamp() * 1_000_000_000)


@lru_cache(maxsize=256)
def _parent_context(trace_id: int, parent: int, flags: TraceFlags) -> otel_context.Context:
    """The context whose current span is span ``parent`` of trace ``trace_id``: the same
    for every operation of a run's body (a Context is immutable, so one serves them all)."""
    remote = SpanContext(trace_id, parent, True, flags)
    return trace.set_span_in_context(NonRecordingSpan(remote), _ROOT)


class _DeterministicIds:
    """Wraps the SDK tracer's id generator: takes forced ids when set, else defers."""

    def __init__(self, fallback: Any) -> None:
        self.fallback = fallback

    def generate_span_id(self) -> int:
        forced = _FORCED.get()
        if forced is not None and forced.span_id is not None:
            return forced.span_id
        return int(self.fallback.generate_span_id())

    def generate_trace_id(self) -> int:
        forced = _FORCED.get()
        return forced.trace_id if forced else int(self.fallback.generate_trace_id())

    def is_trace_id_random(self) -> bool:
        return False


class _DecidedSampler(Sampler):
    """Wraps the SDK tracer's sampler: a span cadenza starts takes its trace's decision,
    taken once, instead of being sampled again (which would cost a call per span and, for
    a root span or a sampler that ignores the parent, could decide otherwise)."""

    def __init__(self, delegate: Sampler) -> None:
        self.delegate = delegate

    def should_sample(
        self,
        parent_context: otel_context.Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        forced = _FORCED.get()
        if forced is None:
            return self.delegate.should_sample(
                parent_context, trace_id, name, kind, attributes, links, trace_state
            )
        decided = forced.sampling
        if decided.attributes:  # what the sampler adds to the spans of its trace
            attributes = {**decided.attributes, **(attributes or {})}
        return SamplingResult(decided.decision, attributes, decided.trace_state)

    def get_description(self) -> str:
        return self.delegate.get_description()


class OpenTelemetryInstrumentation(Instrumentation):
    """Spans (and, with a meter provider, metrics) for runs, activations, operations and
    step attempts. ``tracer_provider`` defaults to the global one, and its sampler decides,
    once per trace, which traces are recorded; ``capture_content`` (default:
    ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``) adds model replies and tool
    outputs to their spans."""

    def __init__(
        self,
        *,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: Any = None,
        capture_content: bool | None = None,
    ) -> None:
        provider = tracer_provider or trace.get_tracer_provider()
        self.tracer = provider.get_tracer(_SCOPE)
        generator = getattr(self.tracer, "id_generator", None)
        # Only this tracer's ids are chosen; other libraries' tracers keep random ids.
        self.deterministic = generator is not None
        if generator is not None:
            self.tracer.id_generator = _DeterministicIds(generator)  # type: ignore[attr-defined]
        # The provider's sampler (the SDK's reads OTEL_TRACES_SAMPLER and its argument) is
        # asked once per trace; this tracer's spans then take that decision.
        sampler = getattr(self.tracer, "sampler", None)
        if isinstance(sampler, _DecidedSampler):  # another instrumentation shares the tracer
            sampler = sampler.delegate
        self.sampler: Sampler | None = sampler if isinstance(sampler, Sampler) else None
        if self.sampler is not None and self.deterministic:
            self.tracer.sampler = _DecidedSampler(self.sampler)  # type: ignore[attr-defined]
        else:
            self.sampler = None  # a tracer that chooses its own ids samples for itself too
        self._verdicts: dict[int, _Verdict] = {}  # OTel trace id -> its decision
        if capture_content is None:
            flag = os.environ.get("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "")
            capture_content = flag.strip().lower() == "true"
        self.capture_content = capture_content
        self._activations: dict[tuple[str, int, int], Span] = {}
        self._attempts: dict[tuple[str, str, int], datetime] = {}  # attempt -> its start
        self.metrics = None
        if meter_provider is not None:
            from cadenza.telemetry._metrics import CadenzaMetrics

            self.metrics = CadenzaMetrics(meter_provider)

    # --- sampling -------------------------------------------------------------------------

    def _verdict(self, trace_id: int, name: str) -> _Verdict:
        """The sampling decision of trace ``trace_id``, asked of the sampler on first use."""
        verdict = self._verdicts.get(trace_id)
        if verdict is not None:
            return verdict
        if self.sampler is None:
            return _UNDECIDED
        # As for the trace's root span: the runs a run invokes, and those its events start,
        # hang under spans of the same trace, so a parent-based sampler follows this same
        # decision for them. A ratio decides on the trace id alone, hence the same way on
        # every worker and in every activation.
        result = self.sampler.should_sample(None, _sampling_key(trace_id), name)
        if result.decision is Decision.DROP:
            verdict = _Verdict(_UNSAMPLED, None)
        elif result.decision is Decision.RECORD_ONLY:  # spans for processors, not exported
            verdict = _Verdict(_UNSAMPLED, result)
        else:
            verdict = _Verdict(_SAMPLED, result)
        verdicts = self._verdicts
        if len(verdicts) >= _IDS:  # bounded: a decision asked again is the same decision
            self._verdicts = verdicts = {}
        verdicts[trace_id] = verdict
        return verdict

    # --- span plumbing --------------------------------------------------------------------

    def _start(
        self,
        name: str,
        *,
        trace_id: int,
        sampling: SamplingResult,
        flags: TraceFlags,
        span_id: int | None,
        parent: int | None,
        start: datetime | None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: dict[str, Any] | None = None,
    ) -> Span:
        ctx = _ROOT if parent is None else _parent_context(trace_id, parent, flags)
        token = _FORCED.set(_Forced(trace_id, span_id, sampling))
        try:
            return self.tracer.start_span(
                name, context=ctx, kind=kind, attributes=attributes, start_time=_ns(start)
            )
        finally:
            _FORCED.reset(token)

    @staticmethod
    def _end(span: Span, end: datetime | None, error: Any = None) -> None:
        if error is not None:
            span.set_status(Status(StatusCode.ERROR, f"{error.type}: {error.message}"[:500]))
            span.set_attribute("error.type", error.type)
        span.end(end_time=_ns(end))

    @staticmethod
    def _run_parent(info: InvocationInfo) -> int | None:
        if info.parent_run_id and info.parent_op_id:
            return span_id_of(info.parent_run_id, info.parent_op_id)
        if info.causation_id and "/" in info.causation_id:
            run_id, op_id = info.causation_id.split("/", 1)
            return span_id_of(run_id, op_id)
        return None

    # --- activations ----------------------------------------------------------------------

    def invocation_started(self, info: InvocationInfo) -> None:
        trace_id = trace_id_of(info.trace_id, info.run_id)
        flags, sampling = self._verdict(trace_id, f"run {info.workflow}")
        if sampling is None:
            return
        span = self._start(
            f"invoke_workflow {info.workflow}",
            trace_id=trace_id,
            sampling=sampling,
            flags=flags,
            span_id=None,
            parent=span_id_of(info.run_id),
            start=info.start_time,
            attributes={
                "gen_ai.operation.name": "invoke_workflow",
                "gen_ai.workflow.name": info.workflow,
                "cadenza.run_id": info.run_id,
                "cadenza.workflow.version": info.version,
                "cadenza.invocation": info.invocation,
                "cadenza.first_invocation": info.is_first_invocation,
                "cadenza.lease_epoch": info.lease_epoch,
                "cadenza.worker": info.worker or "",
            },
        )
        self._activations[(info.run_id, info.lease_epoch, info.invocation)] = span

    def invocation_ended(self, info: InvocationInfo) -> None:
        if self.metrics is not None:
            self.metrics.invocation_ended(info)
        span = self._activations.pop((info.run_id, info.lease_epoch, info.invocation), None)
        if span is not None:
            span.set_attribute("cadenza.replayed", info.replayed)
            span.set_attribute("cadenza.executed", info.executed)
            span.set_attribute("cadenza.outcome", info.outcome or "")
            failed = info.outcome in ("FAILED", "ABORTED")
            self._end(span, info.end_time, info.error if failed else None)
        if info.outcome not in _TERMINAL:
            return
        trace_id = trace_id_of(info.trace_id, info.run_id)
        flags, sampling = self._verdict(trace_id, f"run {info.workflow}")
        if sampling is None:
            return
        run = self._start(
            f"run {info.workflow}",
            trace_id=trace_id,
            sampling=sampling,
            flags=flags,
            span_id=span_id_of(info.run_id),
            parent=self._run_parent(info),
            start=info.created_at or info.start_time,
            attributes={
                "cadenza.run_id": info.run_id,
                "cadenza.workflow": info.workflow,
                "cadenza.workflow.version": info.version,
                "cadenza.status": info.outcome or "",
                "cadenza.tenant": info.tenant,
            },
        )
        self._end(run, info.end_time, info.error if info.outcome != "SUCCEEDED" else None)

    # --- operations -----------------------------------------------------------------------

    def operation_ended(self, info: OperationInfo) -> None:
        if self.metrics is not None:
            self.metrics.operation_ended(info)
        if info.type == "now":
            return  # reading the clock is not work worth a span
        trace_id = trace_id_of(info.trace_id, info.run_id)
        flags, sampling = self._verdict(trace_id, info.name)
        if sampling is None:
            return  # not sampled: nothing of the span is built
        parent = _parent_span(info.run_id, info.parent_op_id, info.agent)
        name, kind, attributes = genai_attributes(info, self.capture_content)
        # Few attributes: each costs the SDK validation time on every span. The name and
        # the status already say what the operation was and how it ended.
        attributes["cadenza.run_id"] = info.run_id
        attributes["cadenza.op_id"] = info.op_id
        if info.record.attempt > 1:
            attributes["cadenza.op.attempts"] = info.record.attempt
        span = self._start(
            name,
            trace_id=trace_id,
            sampling=sampling,
            flags=flags,
            span_id=self._op_span(info),
            parent=parent,
            start=info.start_time,
            kind=kind,
            attributes=attributes,
        )
        self._end(span, info.end_time, info.error)

    @staticmethod
    def _op_span(info: OperationInfo) -> int:
        if info.redrives:  # a retried run runs failed op ids again: new spans for them
            return _hash64("op", info.run_id, info.op_id, str(info.redrives))
        return span_id_of(info.run_id, info.op_id)

    def agent_ended(self, info: AgentInfo) -> None:
        scope = info.scope
        trace_id = trace_id_of(info.trace_id, info.run_id)
        flags, sampling = self._verdict(trace_id, f"invoke_agent {scope.name}")
        if sampling is None:
            return
        provider, _, model = (
            info.model.partition(":") if ":" in info.model else ("", "", info.model)
        )
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": scope.name,
            "gen_ai.request.model": model,
            "cadenza.run_id": info.run_id,
            "cadenza.op_id": scope.agent_id,
        }
        if provider:
            attributes["gen_ai.provider.name"] = provider
        span = self._start(
            f"invoke_agent {scope.name}",
            trace_id=trace_id,
            sampling=sampling,
            flags=flags,
            span_id=agent_span_id(info.run_id, scope.agent_id),
            parent=_parent_span(info.run_id, scope.parent_op_id, scope.outer),
            start=info.start_time,
            attributes=attributes,
        )
        self._end(span, info.end_time, info.error)

    # --- attempts -------------------------------------------------------------------------
    #
    # Attempt spans are emitted when the attempt ends, like operations, and only when they
    # say something the step's span does not: a failed attempt, or any attempt after the
    # first. While attempt 1 runs, the step's own span id is current (the step span is
    # emitted when the step ends), so what the function creates nests under the step and a
    # step that succeeds at once costs one span, not two.

    def _attempt_span(self, op: OperationInfo, attempt: int) -> int:
        if op.redrives:
            return _hash64("attempt", op.run_id, op.op_id, str(attempt), str(op.redrives))
        return span_id_of(op.run_id, op.op_id, attempt)

    def attempt_started(self, info: AttemptInfo) -> None:
        op = info.operation
        if self._verdict(trace_id_of(op.trace_id, op.run_id), op.name).sampling is not None:
            self._attempts[(op.run_id, op.op_id, info.attempt)] = info.start_time

    def attempt_ended(self, info: AttemptInfo) -> None:
        if self.metrics is not None:
            self.metrics.attempt_ended(info)
        op = info.operation
        started = self._attempts.pop((op.run_id, op.op_id, info.attempt), None)
        if started is None:  # not sampled, or the attempt started in a process that died
            return
        if info.attempt == 1 and info.error is None:
            return  # the step's span is this attempt
        trace_id = trace_id_of(op.trace_id, op.run_id)
        flags, sampling = self._verdict(trace_id, op.name)
        if sampling is None:
            return
        attributes: dict[str, Any] = {"cadenza.attempt": info.attempt}
        if info.error is not None:
            attributes["cadenza.retry_follows"] = info.retry_follows
        if info.next_attempt_at:
            attributes["cadenza.next_attempt_at"] = info.next_attempt_at
        span = self._start(
            f"attempt {info.attempt} {op.name}",
            trace_id=trace_id,
            sampling=sampling,
            flags=flags,
            span_id=self._attempt_span(op, info.attempt),
            parent=self._op_span(op),
            start=started,
            attributes=attributes,
        )
        self._end(span, info.end_time, info.error)

    def attempt_scope(self, info: AttemptInfo) -> AbstractContextManager[object]:
        op = info.operation
        trace_id = trace_id_of(op.trace_id, op.run_id)
        flags, sampling = self._verdict(trace_id, op.name)
        if sampling is None:
            # Not sampled, the trace is still current, unsampled: what the function calls
            # (httpx, a driver, another service) sees the trace and its decision, and
            # follows it. No span of the trace is recorded, so one context, the run's,
            # serves all its attempts (an attempt's own span id costs a hash per step).
            return _Current(_unsampled_run(trace_id, op.run_id))
        span_id = self._op_span(op) if info.attempt == 1 else self._attempt_span(op, info.attempt)
        return _Current(NonRecordingSpan(SpanContext(trace_id, span_id, False, flags)))


@lru_cache(maxsize=256)
def _unsampled_run(trace_id: int, run_id: str) -> Span:
    """The current span inside the steps of run ``run_id`` of a trace that is not sampled."""
    return NonRecordingSpan(SpanContext(trace_id, span_id_of(run_id), False, _UNSAMPLED))


# The context _Current last made current: (the context it was entered in, its span, the
# context made current). One slot, swapped whole, so threads that race only rebuild.
_LAST_CURRENT: list[tuple[otel_context.Context, Span, otel_context.Context] | None] = [None]


class _Current:
    """Makes ``span`` the current span while entered (attach/detach: no generator)."""

    __slots__ = ("span", "token")

    def __init__(self, span: Span) -> None:
        self.span = span
        self.token: object = None

    def __enter__(self) -> None:
        # Every step of a run that is not sampled makes the same span current over the same
        # context: a Context is immutable, so the one built for the last step serves again.
        current, span = otel_context.get_current(), self.span
        last = _LAST_CURRENT[0]
        if last is not None and last[0] is current and last[1] is span:
            context = last[2]
        else:
            context = trace.set_span_in_context(span, current)
            _LAST_CURRENT[0] = (current, span, context)
        self.token = otel_context.attach(context)

    def __exit__(self, *exc: object) -> None:
        otel_context.detach(self.token)  # type: ignore[arg-type]
