"""Retry and fork: which journal records an ended run keeps, decided from its journal and
history alone. The engine decides; the store applies the decision in one transaction.

**Retry** drops the outcome of the operations whose failure ended the run, and of the
enclosing operations that failed because of them — never a recorded success. Starting at
the top of the run, a failed operation caused the failure unless the workflow caught it
and went on to something that did not fail (a later operation of the same context, begun
after the failure, that succeeded or has not ended): that was the workflow's own
decision, and stays. Several
failures in a row (an agent that gave up after three failed model calls) all go, and so
do the events and clock readings that came after them (an ``AgentError`` event), so that
the retried run reports again should it fail again. Failed child contexts
(``run_in_child_context``, ``wait_for_callback``) are followed down the same way; of a
``map`` / ``parallel`` whose result holds failed items, the batch record and its failed
items go, its successful items stay. A failed ``invoke`` keeps its child run: the child is
retried too and the invocation waits for it again.

**Fork** copies the records of the operations that had reached their outcome before the
chosen operation started (by the order of the run's history). The chosen operation, the
operations nested in it, and the operations enclosing it (whose outcome depends on it)
are not copied: they run live in the fork, as does everything that ended after it began.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from cadenza.history import HistoryEvent, HistoryEventType
from cadenza.journal import OpRecord, OpStatus, OpType, parent_of


def position(op_id: str) -> tuple[int, ...]:
    """An op id as numbers, so that "10" sorts after "9" and "3.1.2" after "3"."""
    return tuple(int(part) for part in op_id.split("."))


@dataclass
class Timeline:
    """When each operation was first and last heard of, as history sequence numbers."""

    first: dict[str, int] = field(default_factory=dict)
    last: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, history: Iterable[HistoryEvent]) -> Timeline:
        timeline = cls()
        for event in history:
            if event.type == HistoryEventType.EXECUTION_REDRIVEN:
                # A dropped record starts over: only what happened to it since counts.
                for op_id in event.details.get("dropped", ()):
                    timeline.first.pop(op_id, None)
                    timeline.last.pop(op_id, None)
                continue
            if event.op_id is None or event.type == HistoryEventType.EXECUTION_FORKED:
                continue
            timeline.first.setdefault(event.op_id, event.seq)
            timeline.last[event.op_id] = event.seq
        return timeline


def failure_path(
    journal: Sequence[OpRecord], history: Iterable[HistoryEvent], failed_batches: set[str]
) -> list[OpRecord]:
    """The records whose failure ended the run, outermost first, and the reports of it.

    ``failed_batches`` names the map / parallel records whose result holds failed items
    (the caller decodes results, which may live in the artifact store).
    """
    timeline = Timeline.of(history)
    children: dict[str | None, list[OpRecord]] = {}
    for rec in journal:
        children.setdefault(rec.parent_id or None, []).append(rec)
    for siblings in children.values():
        siblings.sort(key=lambda r: position(r.op_id))

    def failed(rec: OpRecord) -> bool:
        return rec.status == OpStatus.FAILED or rec.op_id in failed_batches

    def after(rec: OpRecord, other: OpRecord) -> bool:
        """Whether ``other`` comes after ``rec`` ended: later in place and begun later."""
        ended = timeline.last.get(rec.op_id, -1)
        begun = timeline.first.get(other.op_id, ended + 1)  # now() leaves no history
        return position(other.op_id) > position(rec.op_id) and begun > ended

    def handled(rec: OpRecord, siblings: list[OpRecord]) -> bool:
        # The workflow caught the failure and went on to something that did not fail (or
        # has not ended): its own decision, which a retry keeps. Another failure right
        # after is not going on; reporting (an event, the time) decides nothing.
        return any(after(rec, s) and s.type not in _REPORTS and not failed(s) for s in siblings)

    path: list[OpRecord] = []

    def descend(context_id: str | None, batch: bool) -> None:
        siblings = children.get(context_id, [])
        causes = [
            rec
            for rec in siblings
            if failed(rec) and (batch or rec.type not in _REPORTS) and not handled(rec, siblings)
        ]
        for rec in causes:
            path.append(rec)
            if rec.type == OpType.CONTEXT:
                descend(rec.op_id, batch=False)
            elif rec.type in (OpType.MAP, OpType.PARALLEL):
                descend(rec.op_id, batch=True)
        # What reported the failure (an AgentError event, say) goes with it, so that the
        # retried run reports again if it fails again.
        path.extend(
            s for s in siblings if s.type in _REPORTS and any(after(cause, s) for cause in causes)
        )

    descend(None, batch=False)
    return path


_REPORTS = (OpType.EMIT, OpType.NOW)


def fork_journal(
    journal: Sequence[OpRecord], history: Iterable[HistoryEvent], from_op: str
) -> list[OpRecord]:
    """The records a fork going live at ``from_op`` starts from."""
    timeline = Timeline.of(history)
    lineage = {from_op}
    ancestor = parent_of(from_op)
    while ancestor is not None:
        lineage.add(ancestor)
        ancestor = parent_of(ancestor)
    began = timeline.first.get(from_op)
    target = position(from_op)

    def before(rec: OpRecord) -> bool:
        if began is not None and rec.op_id in timeline.last:
            return timeline.last[rec.op_id] < began
        return position(rec.op_id) < target  # an operation without history (now())

    copied = {
        rec.op_id: rec
        for rec in journal
        if rec.status.terminal
        and rec.op_id not in lineage
        and not rec.op_id.startswith(from_op + ".")
        and before(rec)
    }
    # A finished context replays in full from the journal: everything in it comes along.
    finished = [op_id for op_id, rec in copied.items() if _groups(rec)]
    for rec in journal:
        if any(rec.op_id.startswith(op_id + ".") for op_id in finished):
            copied.setdefault(rec.op_id, rec)
    return sorted(copied.values(), key=lambda r: position(r.op_id))


def _groups(rec: OpRecord) -> bool:
    return rec.type in (OpType.CONTEXT, OpType.MAP, OpType.PARALLEL)
