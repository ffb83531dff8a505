"""Spans read back from what the store keeps: a run's history and journal as a tree of
timed operations.

The history has a start and an end event for every operation (``StepStarted`` …
``StepSucceeded``; one start per attempt), each with its time, so an operation's span is
the first start to the last end, its retries the starts after the first, and a wait or a
callback a span like any other. Model calls are steps whose recorded result is a model
reply: their tokens and cost come from that reply and the price table. The terminal
waterfall (``cadenza runs trace``) and the console read runs this way.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from cadenza.history import HistoryEvent, HistoryEventType
from cadenza.journal import OpRecord, OpStatus, OpType, parent_of
from cadenza.models._pricing import cost
from cadenza.models._types import Usage
from cadenza.ports.run_store import RunRecord

__all__ = ["ModelCall", "OpSpan", "RunSpan", "model_call", "op_spans", "run_span"]

_ENDINGS = ("Succeeded", "Failed", "TimedOut", "Stopped")
_RUN_ENDINGS = {
    HistoryEventType.EXECUTION_SUCCEEDED,
    HistoryEventType.EXECUTION_FAILED,
    HistoryEventType.EXECUTION_CANCELLED,
}
# What each operation's events are called in history (cadenza.history), by prefix.
_KINDS = {
    "Step": "step",
    "Wait": "wait",
    "Callback": "callback",
    "Context": "context",
    "ChainedInvoke": "invoke",
    "EventWait": "event-wait",
    "Event": "emit",
}


@dataclass(frozen=True)
class ModelCall:
    """A model step's reply, as recorded: which model answered, tokens, cost."""

    model: str
    reply: str
    tool_calls: list[dict[str, Any]]
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    cost_usd: float
    cache_hit: bool
    # What the model was asked, as recorded (cadenza.agents._calls.recorded_request): the
    # system prompt and the latest messages; None for calls recorded without it.
    prompt: list[dict[str, Any]] | None = None
    omitted_messages: int = 0
    tools: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class OpSpan:
    """One operation of a run, from its first start to its end (``None`` while open)."""

    run_id: str
    op_id: str
    parent_id: str | None
    name: str
    kind: str
    start: datetime
    end: datetime | None
    status: str  # "running", or how it ended: succeeded, failed, timedout, stopped
    attempts: int = 1
    error: str | None = None
    model: ModelCall | None = None

    @property
    def retries(self) -> int:
        return max(self.attempts - 1, 0)

    def duration(self, now: datetime) -> timedelta:
        return (self.end or now) - self.start


@dataclass(frozen=True)
class RunSpan:
    """A run and its operations; ``activations`` counts the times a worker took it up."""

    run: RunRecord
    start: datetime
    end: datetime | None
    ops: list[OpSpan] = field(default_factory=list)
    activations: int = 0

    @property
    def cost_usd(self) -> float:
        return sum(op.model.cost_usd for op in self.ops if op.model is not None)

    def duration(self, now: datetime) -> timedelta:
        return (self.end or now) - self.start


def model_call(op: OpRecord) -> ModelCall | None:
    """The model reply ``op`` recorded, or None when ``op`` is not a model call."""
    if op.type != OpType.STEP or not op.result or op.result.startswith("@"):
        return None  # a claim-checked result is too large to be a model reply worth reading
    if '"finish_reason"' not in op.result:
        return None
    try:
        data = json.loads(op.result)
    except ValueError:
        return None
    if not isinstance(data, dict) or "usage" not in data or "text" not in data:
        return None
    usage = Usage.from_dict(data.get("usage") or {})
    model = str(data.get("model") or "")
    raw = data.get("request")
    request: dict[str, Any] = raw if isinstance(raw, dict) else {}
    return ModelCall(
        model=model,
        reply=str(data.get("text") or ""),
        tool_calls=list(data.get("tool_calls") or []),
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cached_tokens=usage.cached_tokens,
        cost_usd=cost(model, usage) if model else 0.0,
        cache_hit=bool(data.get("cache_hit")),
        prompt=list(request["messages"]) if isinstance(request.get("messages"), list) else None,
        omitted_messages=int(request.get("omitted_messages") or 0),
        tools=[str(name) for name in request.get("tools") or ()],
    )


def _kind_and_phase(event_type: str) -> tuple[str, str] | None:
    for prefix, kind in _KINDS.items():
        if event_type.startswith(prefix):
            phase = event_type[len(prefix) :]
            if phase == "Started" or phase in _ENDINGS or (kind == "emit" and phase == "Emitted"):
                return kind, phase
    return None


def op_spans(
    run_id: str, history: Iterable[HistoryEvent], journal: Sequence[OpRecord] = ()
) -> list[OpSpan]:
    """The operations of one run, in the order they started."""
    records = {op.op_id: op for op in journal}
    opened: dict[str, dict[str, Any]] = {}
    compacted = False
    for event in history:
        compacted = compacted or event.type == HistoryEventType.HISTORY_COMPACTED
        if event.op_id is None:
            continue
        kind_phase = _kind_and_phase(str(event.type))
        if kind_phase is None:
            continue
        kind, phase = kind_phase
        span = opened.get(event.op_id)
        if span is None:
            record = records.get(event.op_id)
            span = opened[event.op_id] = {
                "name": event.name or (record.name if record else event.op_id),
                "kind": kind,
                "start": event.timestamp,
                "end": None,
                "status": "running",
                "attempts": 0,
                "error": None,
                "parent": event.parent_id,
            }
        if phase == "Started":
            span["attempts"] += 1
            span["end"], span["status"] = None, "running"  # a retry reopens the span
        elif phase == "Failed" and event.details.get("next_attempt_at"):
            span["status"] = "retrying"  # backing off: the span stays open
        elif phase in _ENDINGS or phase == "Emitted":
            span["end"] = event.timestamp
            span["status"] = "succeeded" if phase == "Emitted" else phase.lower()
            error = event.details.get("error")
            if isinstance(error, dict):
                span["error"] = f"{error.get('type', 'Error')}: {error.get('message', '')}"
    if compacted:  # the events of finished steps and waits were folded: use their records
        _from_records(opened, journal)
    spans = []
    for op_id, span in opened.items():
        record = records.get(op_id)
        spans.append(
            OpSpan(
                run_id=run_id,
                op_id=op_id,
                parent_id=span["parent"] if span["parent"] is not None else parent_of(op_id),
                name=span["name"],
                kind=span["kind"],
                start=span["start"],
                end=span["end"],
                status=span["status"],
                attempts=max(span["attempts"], 1),
                error=span["error"],
                model=model_call(record) if record is not None else None,
            )
        )
    return spans


_COMPACTABLE = {OpType.STEP: "step", OpType.CONDITION: "step", OpType.WAIT: "wait"}


def _place(op_id: str) -> tuple[int, ...]:
    """Where an operation sits in its run: what orders operations that started together."""
    return tuple(int(part) if part.isdigit() else 0 for part in op_id.split("."))


def _from_records(opened: dict[str, dict[str, Any]], journal: Sequence[OpRecord]) -> None:
    """Spans for the succeeded steps and waits whose history a compaction folded, from
    their journal records (which keep start, end and attempts), in the order they started."""
    for record in journal:
        kind = _COMPACTABLE.get(record.type)
        if kind is None or record.op_id in opened or record.started_at is None:
            continue
        if record.status != OpStatus.SUCCEEDED:
            continue
        opened[record.op_id] = {
            "name": record.name,
            "kind": kind,
            "start": record.started_at,
            "end": record.ended_at or record.started_at,
            "status": "succeeded",
            "attempts": record.attempt,
            "error": None,
            "parent": record.parent_id,
        }
    ordered = sorted(opened.items(), key=lambda item: (item[1]["start"], _place(item[0])))
    opened.clear()
    opened.update(ordered)


def run_span(
    run: RunRecord, history: Sequence[HistoryEvent], journal: Sequence[OpRecord] = ()
) -> RunSpan:
    """``run`` with its operations; it ends with its terminal history event."""
    end = None
    if run.status.terminal:
        terminal = [event for event in history if event.type in _RUN_ENDINGS]
        end = terminal[-1].timestamp if terminal else run.updated_at
    activations = sum(1 for e in history if e.type == HistoryEventType.INVOCATION_COMPLETED)
    activations += sum(  # the ones a compaction folded (engine/_compaction.py)
        int(e.details.get("counts", {}).get(HistoryEventType.INVOCATION_COMPLETED.value, 0))
        for e in history
        if e.type == HistoryEventType.HISTORY_COMPACTED
    )
    return RunSpan(run, run.created_at, end, op_spans(run.run_id, history, journal), activations)
