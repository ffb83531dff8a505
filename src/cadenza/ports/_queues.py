"""Queue records of the run store port: a queue's flow control and what waits in it."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

__all__ = ["QueueConfig", "QueueStats", "refill_tokens"]


@dataclass(frozen=True, slots=True)
class QueueConfig:
    """Cluster-wide flow control for the runs of one queue, enforced by ``claim_runs``.

    ``concurrency`` caps how many runs of the queue hold a live lease at once, over all
    workers together. ``rate_limit`` caps how many claims of the queue's runs start per
    ``rate_period``: a token bucket that holds up to ``rate_limit`` tokens and refills at
    ``rate_limit`` per ``rate_period`` (so bursts up to the limit, that rate sustained).
    Every claim of a run counts: its first activation and each resumption. ``None`` lifts a
    limit, ``concurrency=0`` pauses the queue; a queue without a config has no limits.
    """

    name: str
    concurrency: int | None = None
    rate_limit: int | None = None
    rate_period: timedelta = timedelta(seconds=1)

    @property
    def limited(self) -> bool:
        return self.concurrency is not None or self.rate_limit is not None


@dataclass(frozen=True, slots=True)
class QueueStats:
    """What waits in one queue at a moment (``queue_stats``), counted by the claim's rules.

    ``runnable``: runs a claim could take now, queue limits aside (PENDING, SUSPENDED with
    a wake time that has come, RUNNING under a lease that has expired). ``oldest_due_at``:
    when the longest-waiting of them became claimable (a PENDING run's last update, which
    is when it was created, woken, redriven or handed back; a wake time; a lease expiry),
    None when none is. ``running``: RUNNING under a live lease. ``waiting``: SUSPENDED with
    a wake time still ahead (a timer, a retry backing off, a callback's deadline); a run
    that waits with no wake time at all (an untimed callback, an event, a child run) is
    not queued work and is not counted.
    """

    queue: str
    runnable: int = 0
    running: int = 0
    waiting: int = 0
    oldest_due_at: datetime | None = None

    def oldest_age(self, now: datetime) -> timedelta:
        """How long the oldest runnable run has waited at ``now`` (zero when none waits)."""
        if self.oldest_due_at is None:
            return timedelta(0)
        return max(now - self.oldest_due_at, timedelta(0))


def refill_tokens(
    config: QueueConfig, tokens: float | None, refilled_at: datetime | None, now: datetime
) -> float:
    """The tokens in a queue's rate bucket at ``now`` (the arithmetic every store shares).

    ``tokens`` and ``refilled_at`` are what the store kept after the last claim; None means
    the bucket was never drawn from, so it is full.
    """
    if config.rate_limit is None:
        return math.inf
    if tokens is None or refilled_at is None:
        return float(config.rate_limit)
    elapsed = max((now - refilled_at).total_seconds(), 0.0)
    period = max(config.rate_period.total_seconds(), 1e-9)
    return min(float(config.rate_limit), tokens + elapsed * config.rate_limit / period)
