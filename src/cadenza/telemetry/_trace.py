"""The runs of one trace as one tree: the run asked about, the runs it invoked, and the runs
that rules started from the events it (or they) emitted, each with its operations.

Every run of a conversation carries the trace id of the run that began it (child runs,
forks and rule-started runs inherit it), so the trace is one indexed query; the tree is
then drawn from ``parent_run_id`` (invocations) and the ``rule:NAME:EVENT`` idempotency key
of rule-started runs, whose event names the run that emitted it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from cadenza.ports.run_store import RunRecord
from cadenza.telemetry._spans import OpSpan, RunSpan, run_span

if TYPE_CHECKING:
    from cadenza.engine.engine import Engine

__all__ = ["TraceNode", "TraceTree", "load_trace"]

# A trace is a conversation, not a table scan: past this many runs it is cut, and says so.
MAX_RUNS = 500
_EVENT_SCAN = 2_000


@dataclass
class TraceNode:
    """A run in the tree; ``started_by`` says how it joined (invoked, rule NAME)."""

    span: RunSpan
    started_by: str | None = None
    children: list[TraceNode] = field(default_factory=list)
    parent_op: str | None = None  # the operation of the parent this run hangs under


@dataclass
class TraceTree:
    trace_id: str
    roots: list[TraceNode]
    truncated: bool

    @property
    def start(self) -> datetime:
        return min(node.span.start for node in self.nodes())

    def end(self, now: datetime) -> datetime:
        ends = [node.span.end or now for node in self.nodes()]
        ends += [op.end or now for node in self.nodes() for op in node.span.ops]
        return max(ends)

    def nodes(self) -> Iterator[TraceNode]:
        pending = list(self.roots)
        while pending:
            node = pending.pop(0)
            yield node
            pending[:0] = node.children

    @property
    def cost_usd(self) -> float:
        return sum(node.span.cost_usd for node in self.nodes())

    def ops(self) -> Iterator[OpSpan]:
        for node in self.nodes():
            yield from node.span.ops


async def load_trace(engine: Engine, run_id: str) -> TraceTree:
    """The trace ``run_id`` belongs to (RunNotFound when there is no such run)."""
    store = engine.store
    asked = await store.get_run(run_id)
    runs = [asked]
    if asked.trace_id:
        runs = await store.list_runs(trace_id=asked.trace_id, limit=MAX_RUNS + 1)
        if all(run.run_id != run_id for run in runs):
            runs.append(asked)
    truncated = len(runs) > MAX_RUNS
    runs = sorted(runs, key=lambda run: (run.created_at, run.run_id))[:MAX_RUNS]
    nodes: dict[str, TraceNode] = {}
    for run in runs:
        history = await store.history(run.run_id)
        journal = await store.load_journal(run.run_id)
        nodes[run.run_id] = TraceNode(run_span(run, history, journal))
    emitters = await _emitters(engine, runs)
    roots = []
    for run in runs:
        node = nodes[run.run_id]
        parent_id, node.parent_op, node.started_by = _link(run, emitters)
        parent = nodes.get(parent_id) if parent_id else None
        if parent is None or parent is node:
            roots.append(node)
        else:
            parent.children.append(node)
    return TraceTree(asked.trace_id or asked.run_id, roots, truncated)


def _link(
    run: RunRecord, emitters: dict[str, tuple[str, str | None]]
) -> tuple[str | None, str | None, str | None]:
    """(parent run, parent op, how it joined) of ``run`` in the tree."""
    if run.parent_run_id:
        return run.parent_run_id, run.parent_op_id, "invoked"
    if run.origin is not None:
        return run.origin.run_id, None, f"forked from op {run.origin.op_id}"
    key = run.idempotency_key or ""
    if key.startswith("rule:"):
        _, rule, event_id = key.split(":", 2) if key.count(":") >= 2 else (key, "?", "")
        emitter, op = emitters.get(event_id, (None, None))
        return emitter, op, f"rule {rule}"
    return None, None, None


async def _emitters(engine: Engine, runs: list[RunRecord]) -> dict[str, tuple[str, str | None]]:
    """For each event that started a run here: the run (and op) that emitted it."""
    wanted = {
        (run.idempotency_key or "").rsplit(":", 1)[-1]
        for run in runs
        if (run.idempotency_key or "").startswith("rule:")
    }
    if not wanted:
        return {}
    found: dict[str, tuple[str, str | None]] = {}
    for entry in await engine.store.list_events(limit=_EVENT_SCAN):
        event = entry.event
        if event.get("id") in wanted and event.get("run_id"):
            found[event["id"]] = (str(event["run_id"]), event.get("op_id"))
    return found
