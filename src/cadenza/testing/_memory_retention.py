"""The retention methods of :class:`~cadenza.testing.InMemoryRunStore`, kept apart so the
store's module stays about running runs. Same promises as the SQLite and PostgreSQL
stores: a run is deleted whole (journal, history, callbacks, delivered events) and only
while the engine's decision still holds."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime

from cadenza.history import HistoryEvent
from cadenza.journal import OpRecord
from cadenza.ports.run_store import (
    CallbackRecord,
    HistoryCompaction,
    OutboxEntry,
    PrunedRuns,
    RunRecord,
)


class MemoryRetention:
    """Mixed into the in-memory store, whose lock and tables it shares."""

    _lock: threading.RLock
    _runs: dict[str, RunRecord]
    _keys: dict[str, str]
    _woken: set[str]
    _ops: dict[str, dict[str, OpRecord]]
    _history: dict[str, list[HistoryEvent]]
    _callbacks: dict[str, CallbackRecord]
    _outbox: dict[int, OutboxEntry]

    async def ended_runs(
        self,
        *,
        updated_before: datetime,
        limit: int,
        workflow: str | None = None,
        after: tuple[datetime, str] | None = None,
    ) -> list[RunRecord]:
        with self._lock:
            runs = sorted(
                (
                    r
                    for r in self._runs.values()
                    if r.status.terminal
                    and r.updated_at < updated_before
                    and (workflow is None or r.workflow == workflow)
                    and (after is None or (r.updated_at, r.run_id) > after)
                ),
                key=lambda r: (r.updated_at, r.run_id),
            )
            return [
                replace(r, state=json.loads(json.dumps(r.state))) for r in runs[: max(limit, 0)]
            ]

    async def prune_runs(self, run_ids: Sequence[str], *, ended_before: datetime) -> PrunedRuns:
        with self._lock:
            doomed = [
                run_id
                for run_id in dict.fromkeys(run_ids)
                if (run := self._runs.get(run_id)) is not None
                and run.status.terminal
                and run.updated_at < ended_before
                and not self._parent_open(run)
            ]
            gone = set(doomed)
            journal = sum(len(self._ops.pop(run_id, {})) for run_id in doomed)
            history = sum(len(self._history.pop(run_id, [])) for run_id in doomed)
            callbacks = [k for k, cb in self._callbacks.items() if cb.run_id in gone]
            for callback_id in callbacks:
                del self._callbacks[callback_id]
            events = [
                seq
                for seq, entry in self._outbox.items()
                if entry.delivered_at is not None and entry.event.get("run_id") in gone
            ]
            for seq in events:
                del self._outbox[seq]
            for run_id in doomed:
                run = self._runs.pop(run_id)
                self._woken.discard(run_id)
                if run.idempotency_key is not None:
                    self._keys.pop(run.idempotency_key, None)
            return PrunedRuns(tuple(doomed), journal, history, len(callbacks), len(events))

    def _parent_open(self, run: RunRecord) -> bool:
        parent = self._runs.get(run.parent_run_id) if run.parent_run_id else None
        return parent is not None and not parent.status.terminal

    async def compact_history(self, compaction: HistoryCompaction) -> bool:
        with self._lock:
            run = self._runs.get(compaction.run_id)
            history = self._history.get(compaction.run_id, [])
            drop = set(compaction.drop)
            if (
                run is None
                or run.lease_epoch != compaction.expected_epoch
                or not drop
                or len(drop & {e.seq for e in history}) != len(drop)
            ):
                return False
            first = min(drop)
            summary = replace(
                compaction.summary,
                seq=first,
                details=json.loads(json.dumps(compaction.summary.details, default=str)),
            )
            self._history[compaction.run_id] = [
                summary if e.seq == first else e
                for e in history
                if e.seq == first or e.seq not in drop
            ]
            return True
