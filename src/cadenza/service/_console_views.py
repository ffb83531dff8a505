"""What the console pages show, read from the store: plain data for the templates.

Each function reads what one page needs and nothing more, so the pages stay fast on a
large store: the run list reads a page of runs (and the waits of the suspended ones), a
run's page its journal, history, callbacks and children once each. Payloads are shown as
previews; a long one is cut, not loaded into the page whole.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from cadenza.events.patterns import compile_pattern
from cadenza.history import HistoryEvent
from cadenza.journal import OpRecord, OpType
from cadenza.ports.run_store import (
    DEFAULT_TENANT,
    CallbackKind,
    CallbackStatus,
    RunRecord,
    RunStatus,
)
from cadenza.telemetry import ModelCall, model_call
from cadenza.telemetry._costs import CostReport, cost_report, usage_of

if TYPE_CHECKING:
    from cadenza.engine.engine import Engine, PendingCallback

__all__ = [
    "ApprovalRow",
    "OpRow",
    "RunPage",
    "RunRow",
    "approvals",
    "costs",
    "events",
    "op_detail",
    "run_page",
    "run_rows",
    "state_after",
]

#: Characters of a payload a page shows before cutting it.
PREVIEW = 4_000


def _ran_for(run: RunRecord, now: datetime) -> timedelta:
    end = run.updated_at if run.status.terminal else now
    return max(end - run.created_at, timedelta(0))


@dataclass(frozen=True)
class RunRow:
    run: RunRecord
    duration: timedelta
    cost: float
    waiting_for: list[str]


async def run_rows(
    engine: Engine,
    *,
    tenant: str,
    status: RunStatus | None,
    workflow: str | None,
    text: str | None,
    limit: int = 50,
) -> list[RunRow]:
    runs = await engine.store.list_runs(
        status=status, workflow=workflow or None, text=text or None, tenant=tenant, limit=limit
    )
    now = engine.clock.now()
    rows = []
    for run in runs:
        waiting: list[str] = []
        if run.status == RunStatus.SUSPENDED:
            waiting = await _waiting_for(engine, run, now)
        rows.append(
            RunRow(run, _ran_for(run, now), float(usage_of(run).get("cost_usd") or 0), waiting)
        )
    return rows


async def _waiting_for(engine: Engine, run: RunRecord, now: datetime) -> list[str]:
    """What a suspended run waits on, in words: callbacks, events, child runs, a timer."""
    callbacks = [c for c in await engine.store.load_callbacks(run.run_id)]
    pending = [c for c in callbacks if c.status == CallbackStatus.PENDING]
    if not pending:
        if run.wake_at is not None:
            return [f"timer ({(run.wake_at - now).total_seconds():.0f} s)"]
        return []
    names = {op.op_id: op.name for op in await engine.store.load_journal(run.run_id)}
    words = {
        CallbackKind.CALLBACK: "callback",
        CallbackKind.EVENT: "event",
        CallbackKind.INVOKE: "child run",
    }
    return [f"{words[c.kind]} {names.get(c.op_id, c.op_id)}" for c in pending]


# --- one run ------------------------------------------------------------------------------


@dataclass
class OpRow:
    """One operation: its bar on the timeline, and (for its detail) its output, model
    call and history events, which the run's page loads only when a row is opened."""

    op: OpRecord
    depth: int
    offset_pct: float
    width_pct: float
    duration: timedelta | None
    retries: int
    is_model: bool = False
    result_preview: str | None = None
    model_call: ModelCall | None = None
    events: list[HistoryEvent] = field(default_factory=list)

    @property
    def waits(self) -> bool:
        return self.op.type in (OpType.WAIT, OpType.CALLBACK, OpType.EVENT_WAIT, OpType.INVOKE)


@dataclass
class RunPage:
    run: RunRecord
    ops: list[OpRow]
    span: timedelta
    children: list[RunRecord]
    rule_runs: list[RunRecord]
    pending: list[PendingCallback]
    input_preview: str
    result_preview: str | None
    usage: dict[str, Any]
    fork_points: list[OpRecord]


def preview(text: str | None, limit: int = PREVIEW) -> str | None:
    """JSON text indented for reading, cut at ``limit`` characters."""
    if text is None:
        return None
    if text.startswith("@artifact"):
        return text  # a claim-checked value: the reference, not a fetch per operation
    try:
        shown = json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except ValueError:
        shown = text
    return shown if len(shown) <= limit else shown[:limit] + f"\n… ({len(shown) - limit} more)"


async def run_page(engine: Engine, run: RunRecord, *, tenant: str) -> RunPage:
    now = engine.clock.now()
    journal = await engine.store.load_journal(run.run_id)
    start = run.created_at
    end = run.updated_at if run.status.terminal else now
    for op in journal:
        for t in (op.started_at, op.ended_at):
            if t is not None and t > end:
                end = t
    span = max(end - start, timedelta(milliseconds=1))
    rows = []
    total = span.total_seconds()
    for op in sorted(journal, key=_op_order):
        began = op.started_at or start
        ended = op.ended_at or (end if not op.status.terminal else began)
        rows.append(
            OpRow(
                op=op,
                depth=op.op_id.count("."),
                offset_pct=100 * max((began - start).total_seconds(), 0) / total,
                width_pct=max(100 * (ended - began).total_seconds() / total, 0.3),
                duration=(ended - began) if op.started_at else None,
                # a step's attempt counts its tries, so the retries are the tries after the first
                retries=max(op.attempt - 1, 0) if op.type == OpType.STEP else 0,
                is_model=model_call(op) is not None,
            )
        )
    children = await engine.store.list_runs(parent_run_id=run.run_id, tenant=tenant, limit=200)
    rule_runs = await _rule_runs(engine, run, tenant)
    pending = await engine.pending_callbacks(run) if not run.status.terminal else []
    fork_points = [
        op for op in sorted(journal, key=_op_order) if op.parent_id is None and op.started_at
    ]
    return RunPage(
        run=run,
        ops=rows,
        span=span,
        children=children,
        rule_runs=rule_runs,
        pending=pending,
        input_preview=preview(run.input) or "",
        result_preview=preview(run.result),
        usage=usage_of(run),
        fork_points=fork_points,
    )


async def op_detail(engine: Engine, run: RunRecord, op_id: str) -> OpRow | None:
    """One operation with everything its row shows when opened; None if there is none."""
    journal = {op.op_id: op for op in await engine.store.load_journal(run.run_id)}
    op = journal.get(op_id)
    if op is None:
        return None
    history = await engine.store.history(run.run_id)
    began, ended = op.started_at, op.ended_at
    call = model_call(op)
    return OpRow(
        op=op,
        depth=op.op_id.count("."),
        offset_pct=0,
        width_pct=0,
        duration=(ended - began) if began and ended else None,
        retries=max(op.attempt - 1, 0),
        is_model=call is not None,
        result_preview=preview(op.result),
        model_call=call,
        events=[e for e in history if e.op_id == op_id],
    )


async def state_after(engine: Engine, run: RunRecord, op_id: str) -> dict[str, Any] | str:
    """The agent state document as it stood right after top-level operation ``op_id``,
    rebuilt by replaying the journal up to there against the workflow's code (nothing is
    executed or written); a sentence saying why not when it cannot be rebuilt here."""
    from cadenza.engine._rewind import fork_journal
    from cadenza.engine.activation import Activation

    definition = engine.resolve(run)
    if definition is None:
        return (
            f"the code of workflow {run.workflow} v{run.version} is not loaded in this"
            " process, so past states cannot be rebuilt here; run the service with the"
            " workflow's module importable"
        )
    journal, callbacks = await engine.store.load_activation(run.run_id)
    top = sorted((op for op in journal if op.parent_id is None), key=_op_order)
    if op_id not in {op.op_id for op in top}:
        return f"run {run.run_id} has no top-level operation {op_id}"
    later = [op for op in top if _op_order(op) > _op_order_of(op_id)]
    if later:
        history = await engine.store.history(run.run_id)
        journal = fork_journal(journal, history, later[0].op_id)
    replay = Activation(engine, run, definition, journal, callbacks, check_only=True)
    await replay.execute()
    if replay.divergence is not None:
        return (
            f"the workflow's code no longer replays this run (at operation"
            f" {replay.divergence[0]}); see 'cadenza replay-check'"
        )
    return replay.state.to_dict()


def _op_order_of(op_id: str) -> tuple[int, ...]:
    return tuple(int(p) if p.isdigit() else 0 for p in op_id.split("."))


def _op_order(op: OpRecord) -> tuple[int, ...]:
    """Depth first, in the order the workflow asked for them: "2" < "2.1" < "2.10" < "3"."""
    return _op_order_of(op.op_id)


async def _rule_runs(engine: Engine, run: RunRecord, tenant: str) -> list[RunRecord]:
    """Runs that rules started from the events this run emitted (same trace, rule key)."""
    if run.trace_id is None:
        return []
    recent = await engine.store.list_runs(tenant=tenant, limit=500)
    return [
        r
        for r in recent
        if r.trace_id == run.trace_id
        and r.run_id != run.run_id
        and (r.idempotency_key or "").startswith("rule:")
    ]


# --- approvals, events, costs -------------------------------------------------------------


@dataclass(frozen=True)
class ApprovalRow:
    run: RunRecord
    wait: PendingCallback


async def approvals(engine: Engine, *, tenant: str, limit: int = 200) -> list[ApprovalRow]:
    """Callbacks that wait for a person, across the tenant's suspended runs, oldest first."""
    runs = await engine.store.list_runs(status=RunStatus.SUSPENDED, tenant=tenant, limit=limit)
    by_id = {r.run_id: r for r in runs}
    seen: set[tuple[str, str]] = set()
    rows = []
    for run in runs:
        for wait in await engine.pending_callbacks(run):
            key = (wait.run_id, wait.op_id)
            if wait.kind != CallbackKind.CALLBACK or wait.token is None or key in seen:
                continue
            seen.add(key)
            rows.append(ApprovalRow(by_id.get(wait.run_id, run), wait))
    rows.sort(key=lambda row: row.run.created_at)
    return rows


@dataclass(frozen=True)
class EventRow:
    seq: int
    event: dict[str, Any]
    published_at: datetime
    delivered_at: datetime | None
    matched: list[str]
    started: list[RunRecord]


async def events(
    engine: Engine, *, tenant: str, limit: int = 100
) -> tuple[list[EventRow], list[Any]]:
    """Recent events, with the rules each matched and the runs those rules started."""
    entries = await engine.store.list_events(limit=limit)
    rules = [r for r in await engine.store.list_rules() if r.tenant == tenant]
    compiled = []
    for rule in rules:
        try:
            compiled.append((rule, compile_pattern(rule.pattern)))
        except Exception:  # a rule stored before a stricter compiler: shown, never matched
            continue
    started: dict[str, RunRecord] = {}
    for run in await engine.store.list_runs(tenant=tenant, limit=500):
        if (run.idempotency_key or "").startswith("rule:"):
            started[run.idempotency_key or ""] = run
    rows = []
    for entry in entries:
        event = entry.event
        if event.get("tenant", DEFAULT_TENANT) != tenant:  # absent: the default tenant
            continue
        matched = [
            rule.name for rule, pattern in compiled if rule.enabled and pattern.matches(event)
        ]
        runs = [
            started[key] for name in matched if (key := f"rule:{name}:{event.get('id')}") in started
        ]
        rows.append(
            EventRow(entry.seq, event, entry.published_at, entry.delivered_at, matched, runs)
        )
    return rows, rules


async def costs(engine: Engine, *, tenant: str, limit: int = 2000) -> CostReport:
    """Model spend of the tenant's latest ``limit`` runs, as ``cadenza costs`` rolls it up."""
    return await cost_report(engine.store, tenant=tenant, limit=limit)
