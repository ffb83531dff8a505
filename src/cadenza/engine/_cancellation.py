"""How a cancellation spreads, decided here and handed to the store as a plan.

Cancelling a run cancels its open descendants too. The engine reads the tree and lists a
:class:`Cancellation` for each run, parent before child; the store applies each according
to the run as it finds it then (ended: left alone; held by a live lease: flagged for its
worker; otherwise ended at once, its parent's INVOKE callback failed and the parent woken).
A run that a worker holds ends itself at its next checkpoint, and that checkpoint cancels
the children it still waits for (``Activation``), so runs started after the plan was read
are reached as well.
"""

from __future__ import annotations

from datetime import datetime

from cadenza.errors import ErrorInfo, RunStateError
from cadenza.history import HistoryEvent, HistoryEventType
from cadenza.ports.run_store import (
    CallbackResolution,
    CallbackStatus,
    Cancellation,
    RunRecord,
    RunStore,
    WakeUp,
)

# A generous bound on the open children of one run read per plan; list_runs needs one.
_CHILDREN_LIMIT = 100_000


def cancelled_error(run_id: str) -> ErrorInfo:
    return ErrorInfo(type="RunCancelled", message=f"run {run_id} was cancelled")


def cancellation(run_id: str, parent_run_id: str | None, now: datetime) -> Cancellation:
    """Cancel ``run_id``; when it has a parent, the parent's INVOKE callback (named after
    the child run) fails with the cancellation and the parent wakes, if it still waits."""
    error = cancelled_error(run_id)
    wake_up = None
    if parent_run_id is not None:
        failed = CallbackResolution(run_id, CallbackStatus.FAILED, error=error)
        wake_up = WakeUp(parent_run_id, failed)
    event = HistoryEvent(seq=0, type=HistoryEventType.EXECUTION_CANCELLED, timestamp=now)
    return Cancellation(run_id, error, event, wake_up)


async def plan(store: RunStore, run_id: str, now: datetime) -> list[Cancellation]:
    """The cancellations that cancelling ``run_id`` makes: the run, then its open
    descendants, each after its parent. RunNotFound or RunStateError as the store would."""
    root = await store.get_run(run_id)
    if root.status.terminal:
        raise RunStateError(
            f"run {run_id} already ended ({root.status}); there is nothing to cancel"
        )
    planned = [cancellation(root.run_id, root.parent_run_id, now)]
    seen = {root.run_id}
    frontier: list[RunRecord] = [root]
    while frontier:
        current = frontier.pop(0)
        children = await store.list_runs(parent_run_id=current.run_id, limit=_CHILDREN_LIMIT)
        # list_runs is newest first; cancel in the order the children were started.
        for child in sorted(children, key=lambda r: (r.created_at, r.run_id)):
            if child.status.terminal or child.run_id in seen:
                continue
            seen.add(child.run_id)
            planned.append(cancellation(child.run_id, child.parent_run_id, now))
            frontier.append(child)
    return planned
