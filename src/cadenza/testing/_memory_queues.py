"""Queue statistics of :class:`~cadenza.testing.InMemoryRunStore`, kept apart so the
store's module stays about running runs. A run counts as the claim sees it: runnable by
the claim's own test, running under a live lease, waiting for a wake time still ahead."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import datetime

from cadenza.ports.run_store import QueueStats, RunRecord, RunStatus


class MemoryQueues:
    """Mixed into the in-memory store, whose lock and runs it shares."""

    _lock: threading.RLock
    _runs: dict[str, RunRecord]

    async def queue_stats(self, *, now: datetime) -> list[QueueStats]:
        with self._lock:
            stats: dict[str, QueueStats] = {"default": QueueStats("default")}
            for run in self._runs.values():
                if run.status.terminal:
                    continue
                row = stats.get(run.queue) or QueueStats(run.queue)
                due = _due_at(run, now)
                if due is not None:
                    oldest = row.oldest_due_at
                    row = replace(
                        row,
                        runnable=row.runnable + 1,
                        oldest_due_at=due if oldest is None else min(oldest, due),
                    )
                elif run.status == RunStatus.RUNNING and run.lease_expires_at is not None:
                    row = replace(row, running=row.running + 1)
                elif run.status == RunStatus.SUSPENDED and run.wake_at is not None:
                    row = replace(row, waiting=row.waiting + 1)
                else:
                    continue  # waits with no wake time: not queued work
                stats[run.queue] = row
            return [stats[name] for name in sorted(stats)]


def _due_at(run: RunRecord, now: datetime) -> datetime | None:
    """When ``run`` became claimable, if it is (the test ``claim_runs`` applies)."""
    if run.status == RunStatus.PENDING:
        return run.updated_at
    if run.status == RunStatus.SUSPENDED and run.wake_at is not None and run.wake_at <= now:
        return run.wake_at
    if (
        run.status == RunStatus.RUNNING
        and run.lease_expires_at is not None
        and run.lease_expires_at <= now
    ):
        return run.lease_expires_at
    return None
