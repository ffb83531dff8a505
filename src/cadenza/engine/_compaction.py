"""History compaction: keep the history of a long-lived run within a bound.

An agent that loops with waits for weeks writes a few history events per activation, and
the history only grows. Every ``CHECK_EVERY`` claims of a run, once an activation has
suspended it, the engine reads the history; past ``history_bound`` events it folds the
older noise into one ``HistoryCompacted`` event that keeps the counts by type:

- the events of steps and waits that *succeeded* (starts, retried attempts, the success),
  all of an operation's events or none, so no operation is left half-shown;
- ``InvocationCompleted`` events without an error (one per activation).

Everything an operator or the engine needs stays: the start, the last ``KEEP_LAST``
events (the lost-attempt check reads the last ``InvocationCompleted``), every failure,
timeout and lost lease, callbacks, child contexts, invocations, events, the audit trail,
redrives and forks. Readers rebuild the spans of compacted operations from their journal
records, which keep their start and end times (``telemetry._spans``), and count the
activations the summary holds.

The journal is not compacted: it holds one record per operation, and replay needs every
one of them to rebuild the run. A run that must not grow at all has to end and hand its
state to a fresh run (continue-as-new).
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import TYPE_CHECKING, Any

from cadenza.errors import CadenzaError
from cadenza.history import HistoryEvent
from cadenza.history import HistoryEventType as H
from cadenza.ports.run_store import HistoryCompaction, RunRecord

if TYPE_CHECKING:
    from cadenza.engine.engine import Engine

log = logging.getLogger("cadenza.engine")

#: Look at a run's history every this many claims (reading it costs one query).
CHECK_EVERY = 20
#: The most recent events, always kept as they are.
KEEP_LAST = 200
#: Fold less than this and the summary is not worth its write.
_MIN_FOLD = 20

_OPERATION_EVENTS = {H.STEP_STARTED, H.STEP_SUCCEEDED, H.STEP_FAILED, H.WAIT_STARTED}
_SUCCESSES = {H.STEP_SUCCEEDED, H.WAIT_SUCCEEDED}


def plan(
    run_id: str, epoch: int, history: list[HistoryEvent], bound: int
) -> HistoryCompaction | None:
    """The compaction of ``history`` once it is longer than ``bound``, or None."""
    if len(history) <= bound:
        return None
    keep_last = min(KEEP_LAST, bound)
    older = history[: len(history) - keep_last]
    older_seqs = {e.seq for e in older}
    # An operation folds only when every event it has is old and it ended in a success.
    by_op: dict[str, list[HistoryEvent]] = {}
    for event in history:
        if event.op_id is not None and (
            event.type in _OPERATION_EVENTS or event.type in _SUCCESSES
        ):
            by_op.setdefault(event.op_id, []).append(event)
    foldable: set[int] = set()
    operations = 0
    for events in by_op.values():
        last = events[-1]
        finished = last.type in _SUCCESSES and not last.details.get("next_attempt_at")
        if finished and all(e.seq in older_seqs for e in events):
            foldable.update(e.seq for e in events)
            operations += 1
    previous: list[HistoryEvent] = []
    for event in older:
        if event.type == H.INVOCATION_COMPLETED and not event.details.get("error"):
            foldable.add(event.seq)
        elif event.type == H.HISTORY_COMPACTED:
            foldable.add(event.seq)
            previous.append(event)
    if len(foldable) < _MIN_FOLD:
        return None
    folded = [e for e in older if e.seq in foldable]
    counts: Counter[str] = Counter()
    total, ops = 0, operations
    for summary in previous:  # an earlier summary is merged, so there is only ever one
        counts.update(summary.details.get("counts", {}))
        total += int(summary.details.get("events", 0))
        ops += int(summary.details.get("operations", 0))
    fresh = [e for e in folded if e.type != H.HISTORY_COMPACTED]
    counts.update(str(e.type) for e in fresh)
    details: dict[str, Any] = {
        "events": total + len(fresh),
        "operations": ops,
        "counts": dict(sorted(counts.items())),
        "first_at": (previous[0].details.get("first_at") if previous else None)
        or folded[0].timestamp.isoformat(),
        "last_at": folded[-1].timestamp.isoformat(),
    }
    summary = HistoryEvent(folded[0].seq, H.HISTORY_COMPACTED, folded[0].timestamp, details=details)
    return HistoryCompaction(run_id, epoch, tuple(e.seq for e in folded), summary)


async def after_activation(engine: Engine, run: RunRecord) -> None:
    """Compact ``run``'s history if it is due (``run`` as claimed, at its epoch)."""
    bound = engine.history_bound
    if bound is None or run.lease_epoch % CHECK_EVERY:
        return
    try:
        history = await engine.store.history(run.run_id)
        compaction = plan(run.run_id, run.lease_epoch, history, bound)
        if compaction is not None and await engine.store.compact_history(compaction):
            log.info(
                "run %s: %d history events compacted into one", run.run_id, len(compaction.drop)
            )
    except CadenzaError as exc:  # the run is fine; the history waits for the next check
        log.warning("run %s: history not compacted: %s", run.run_id, exc)
