"""The schedule methods of :class:`~cadenza.testing.InMemoryRunStore`, kept apart so the
store's module stays about runs. Same promises as the SQLite and PostgreSQL stores: a
firing is checked whole (the schedule's revision) before anything of it is written."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from cadenza.errors import ScheduleNotFound
from cadenza.history import HistoryEvent
from cadenza.ports.run_store import RunRecord, Schedule, ScheduleFiring


class MemorySchedules:
    """Mixed into the in-memory store, whose lock, runs and history it shares."""

    _lock: threading.RLock
    _runs: dict[str, RunRecord]
    _schedules: dict[str, Schedule]

    if TYPE_CHECKING:  # provided by the store this is mixed into

        def _insert_run(self, run: RunRecord) -> None: ...

        def _append(self, run_id: str, events: Sequence[HistoryEvent]) -> None: ...

    async def put_schedule(self, schedule: Schedule) -> Schedule:
        with self._lock:
            json.loads(schedule.input)  # as a database column would, refuse what is not JSON
            known = self._schedules.get(schedule.name)
            stored = schedule.evolve(
                revision=(known.revision if known else 0) + 1,
                created_at=known.created_at if known else schedule.created_at,
            )
            self._schedules[schedule.name] = stored
            return stored

    async def get_schedule(self, name: str) -> Schedule:
        with self._lock:
            if name not in self._schedules:
                raise ScheduleNotFound(name)
            return self._schedules[name]

    async def list_schedules(self) -> list[Schedule]:
        with self._lock:
            return [self._schedules[name] for name in sorted(self._schedules)]

    async def delete_schedule(self, name: str) -> bool:
        with self._lock:
            return self._schedules.pop(name, None) is not None

    async def pause_schedule(self, name: str, *, paused: bool, now: datetime) -> Schedule:
        with self._lock:
            known = self._schedules.get(name)
            if known is None:
                raise ScheduleNotFound(name)
            resumed = now if known.paused and not paused else known.resumed_at
            stored = known.evolve(
                paused=paused, resumed_at=resumed, revision=known.revision + 1, updated_at=now
            )
            self._schedules[name] = stored
            return stored

    async def due_schedules(self, *, now: datetime, limit: int) -> list[Schedule]:
        with self._lock:
            due = [
                s
                for s in self._schedules.values()
                if not s.paused and s.due_at is not None and s.due_at <= now
            ]
            return sorted(due, key=lambda s: (s.due_at, s.name))[:limit]

    async def next_schedule_due_at(self) -> datetime | None:
        with self._lock:
            times = [s.due_at for s in self._schedules.values() if not s.paused and s.due_at]
            return min(times, default=None)

    async def fire_schedule(self, firing: ScheduleFiring) -> bool:
        with self._lock:
            known = self._schedules.get(firing.name)
            if known is None or known.revision != firing.expected_revision:
                return False
            for run, started in firing.runs:
                if run.run_id in self._runs:
                    continue  # the tick fired before
                self._insert_run(run.evolve(state=json.loads(json.dumps(run.state))))
                self._append(run.run_id, [started])
            self._schedules[firing.name] = firing.applied_to(known)
            return True
