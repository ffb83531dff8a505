"""Choreography: workflows that react to events, with no coordinator, and one conversation id.

    support = Choreography()

    @support.reacts_to({"detail-type": ["ticket_created"]})
    @workflow(name="triage")
    async def triage(ctx: Context, ticket: dict[str, Any]) -> None:
        await correlated_emit(ctx, "ticket_triaged", {"ticket": ticket["id"]})

    await support.install(engine)                  # one start_workflow rule per reaction
    trace(engine, ticket["correlation_id"])        # every run and event of the conversation

Each reaction is an ordinary rule ("on events matching X, start workflow Y"), so the
relay does the delivery and deduplicates it per event. The correlation id travels in
``detail["correlation_id"]``: :func:`correlated_emit` copies the id of the run's own
conversation (from the event or input that started it, else the run's trace id, which the
relay also hands on) into what the run emits, so every hop carries it.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from cadenza.context import Context
from cadenza.engine.engine import Engine
from cadenza.errors import CadenzaError, WorkflowDefinitionError
from cadenza.events.relay import validate_rule
from cadenza.ports.run_store import Rule, RunRecord, RunStore
from cadenza.workflow import WorkflowDefinition

__all__ = [
    "CORRELATION_KEY",
    "Choreography",
    "Reaction",
    "TraceEntry",
    "correlated_emit",
    "correlation_id",
    "trace",
]

CORRELATION_KEY = "correlation_id"


async def correlation_id(ctx: Context) -> str:
    """The conversation this run belongs to.

    The ``correlation_id`` of the input (or of the event's detail) that started the run;
    failing that, the run's trace id, which the relay hands from an event to the runs it
    starts.
    """
    metadata = ctx.state.to_dict().setdefault("metadata", {})
    known = metadata.get("correlationId")
    if isinstance(known, str) and known:
        return known
    # The run's input and trace id never change, so reading them is safe on every replay.
    found: Any = None
    try:
        data = await ctx.input_data()
    except CadenzaError:
        data = None
    if isinstance(data, dict):
        found = data.get(CORRELATION_KEY)
        if found is None and isinstance(data.get("detail"), dict):
            found = data["detail"].get(CORRELATION_KEY)
    value = str(found) if found else (ctx.trace_id or ctx.run_id)
    metadata["correlationId"] = value
    return value


async def correlated_emit(
    ctx: Context,
    detail_type: str,
    detail: dict[str, Any],
    *,
    source: str | None = None,
    correlation: str | None = None,
) -> str:
    """``ctx.emit`` with the run's correlation id in ``detail["correlation_id"]``.

    A ``correlation_id`` already in ``detail`` (or given as ``correlation``) wins.
    """
    value = correlation or detail.get(CORRELATION_KEY) or await correlation_id(ctx)
    return await ctx.emit(detail_type, {**detail, CORRELATION_KEY: value}, source=source)


@dataclass(frozen=True)
class Reaction:
    """On events matching ``pattern``, start ``workflow`` with the event's detail (or the
    whole event, with ``input="event"``)."""

    pattern: dict[str, Any]
    workflow: WorkflowDefinition | str
    name: str | None = None
    input: Literal["detail", "event"] = "detail"

    def __post_init__(self) -> None:
        validate_rule(self.rule())  # a malformed pattern fails here, not at the first event

    @property
    def workflow_name(self) -> str:
        return self.workflow if isinstance(self.workflow, str) else self.workflow.name

    def rule(self) -> Rule:
        params: dict[str, Any] = {"workflow": self.workflow_name, "input": self.input}
        if isinstance(self.workflow, WorkflowDefinition) and self.workflow.module:
            params["module"] = self.workflow.module  # so any worker can import it
        return Rule(self.name or self._default_name(), self.pattern, "start_workflow", params)

    def _default_name(self) -> str:
        kinds = self.pattern.get("detail-type")
        on = "+".join(str(k) for k in kinds) if isinstance(kinds, list) else "event"
        return f"react:{self.workflow_name}:{on}"


class Choreography:
    """A set of reactions, installed as rules in a store."""

    def __init__(self, reactions: Iterable[Reaction] = ()) -> None:
        self.reactions: list[Reaction] = []
        for reaction in reactions:
            self._add(reaction)

    def _add(self, reaction: Reaction) -> Reaction:
        names = {r.rule().name for r in self.reactions}
        if reaction.rule().name in names:
            raise WorkflowDefinitionError(
                f"two reactions share the rule name {reaction.rule().name!r}; give one name=…"
            )
        self.reactions.append(reaction)
        return reaction

    def on(
        self,
        pattern: dict[str, Any],
        workflow: WorkflowDefinition | str,
        *,
        name: str | None = None,
        input: Literal["detail", "event"] = "detail",
    ) -> Reaction:
        """Add "on events matching ``pattern``, start ``workflow``"."""
        return self._add(Reaction(pattern, workflow, name, input))

    def reacts_to(
        self,
        pattern: dict[str, Any],
        *,
        name: str | None = None,
        input: Literal["detail", "event"] = "detail",
    ) -> Callable[[WorkflowDefinition], WorkflowDefinition]:
        """Decorate a workflow (above ``@workflow``) to start it on matching events."""

        def decorate(definition: WorkflowDefinition) -> WorkflowDefinition:
            if not isinstance(definition, WorkflowDefinition):
                raise WorkflowDefinitionError(
                    "reacts_to decorates a workflow: put it above @workflow(...)"
                )
            self.on(pattern, definition, name=name, input=input)
            return definition

        return decorate

    def rules(self) -> list[Rule]:
        return [r.rule() for r in self.reactions]

    async def install(self, target: Engine | RunStore) -> list[Rule]:
        """Put every reaction's rule (replacing rules of the same name)."""
        store = target.store if isinstance(target, Engine) else target
        rules = self.rules()
        for rule in rules:
            await store.put_rule(rule)
        return rules

    async def uninstall(self, target: Engine | RunStore) -> None:
        store = target.store if isinstance(target, Engine) else target
        for rule in self.rules():
            await store.delete_rule(rule.name)


@dataclass(frozen=True)
class TraceEntry:
    """One hop of a conversation: a run, or an event."""

    kind: Literal["run", "event"]
    id: str  # run id or event id
    name: str  # workflow name or detail-type
    at: datetime
    run_id: str | None  # the run itself, or the run that emitted the event
    caused_by: str | None = None  # a run: the event (or parent run) that started it
    status: str | None = None  # runs only
    detail: dict[str, Any] | None = None  # events only


async def trace(
    target: Engine | RunStore, correlation: str, *, limit: int = 1000
) -> list[TraceEntry]:
    """The runs and events of one conversation, causes before effects, then by time.

    Looks through the latest ``limit`` events and runs: a diagnostic for an operator or a
    test, not a query for hot paths.
    """
    store = target.store if isinstance(target, Engine) else target
    entries: dict[str, TraceEntry] = {}
    order: dict[str, tuple[datetime, int, int]] = {}
    event_ids: set[str] = set()
    for entry in await store.list_events(limit=limit):
        event = entry.event
        raw = event.get("detail")
        detail: dict[str, Any] = raw if isinstance(raw, dict) else {}
        if detail.get(CORRELATION_KEY) != correlation and event.get("trace_id") != correlation:
            continue
        key = f"event:{event['id']}"
        event_ids.add(event["id"])
        entries[key] = TraceEntry(
            "event",
            event["id"],
            event.get("detail-type", ""),
            entry.published_at,
            event.get("run_id"),
            detail=detail,
        )
        order[key] = (entry.published_at, 1, entry.seq)
    runs = await store.list_runs(limit=limit)
    for index, run in enumerate(reversed(runs)):
        cause = _started_by(run)
        if not (
            run.trace_id == correlation or cause in event_ids or _input_key(run) == correlation
        ):
            continue
        key = f"run:{run.run_id}"
        caused_by = cause if cause in event_ids else run.parent_run_id
        entries[key] = TraceEntry(
            "run",
            run.run_id,
            run.workflow,
            run.created_at,
            run.run_id,
            caused_by,
            status=str(run.status),
        )
        order[key] = (run.created_at, 0, index)
    return _causal_order(entries, order)


def _causal_order(
    entries: dict[str, TraceEntry], order: dict[str, tuple[datetime, int, int]]
) -> list[TraceEntry]:
    """Kahn's algorithm: an entry comes after its cause; ties go by time, runs first."""
    causes: dict[str, str] = {}
    for key, entry in entries.items():
        if entry.kind == "event" and entry.run_id and f"run:{entry.run_id}" in entries:
            causes[key] = f"run:{entry.run_id}"
        elif entry.kind == "run" and entry.caused_by:
            for cause in (f"event:{entry.caused_by}", f"run:{entry.caused_by}"):
                if cause in entries:
                    causes[key] = cause
    effects: dict[str, list[str]] = {}
    for key, cause in causes.items():
        effects.setdefault(cause, []).append(key)
    ready = [(order[k], k) for k in entries if k not in causes]
    heapq.heapify(ready)
    result: list[TraceEntry] = []
    while ready:
        _, key = heapq.heappop(ready)
        result.append(entries[key])
        for effect in effects.get(key, ()):
            heapq.heappush(ready, (order[effect], effect))
    return result


def _started_by(run: RunRecord) -> str | None:
    """The id of the event whose rule started ``run`` (idempotency key rule:NAME:EVENT)."""
    key = run.idempotency_key or ""
    if not key.startswith("rule:"):
        return None
    return key.rsplit(":", 1)[-1]


def _input_key(run: RunRecord) -> Any:
    try:
        data = json.loads(run.input)
    except (TypeError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    detail = data.get("detail")
    if isinstance(detail, dict) and CORRELATION_KEY in detail:
        return detail[CORRELATION_KEY]
    return data.get(CORRELATION_KEY)
