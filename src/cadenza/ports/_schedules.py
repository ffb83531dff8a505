"""Schedule records of the run store port: a schedule's definition and progress, and the
firing the engine decides for it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cadenza.history import HistoryEvent
    from cadenza.ports.run_store import RunRecord

__all__ = ["CatchUp", "Overlap", "Schedule", "ScheduleFiring"]


class CatchUp(StrEnum):
    """What a schedule does with the ticks that fell due while nothing fired them."""

    LATEST = "latest"  # fire the latest missed tick once, drop the older ones
    ALL = "all"  # fire every missed tick, oldest first, up to ``catch_up_limit`` of them
    NONE = "none"  # fire only a tick that is on time; a missed one is dropped


class Overlap(StrEnum):
    """What a schedule does when a tick falls due while its previous run is still open."""

    SKIP = "skip"  # drop the tick
    ALLOW = "allow"  # start the run anyway
    BUFFER_ONE = "buffer_one"  # keep the newest such tick; fire it when the run ends


@dataclass(frozen=True, slots=True)
class Schedule:
    """A durable "start this workflow at these times": ``cron(...)``, ``rate(...)`` or
    ``at(...)`` in ``timezone``, each tick fired somewhere in ``[tick, tick + window)``.

    The first block is the definition (what ``put_schedule`` is given). The second is the
    schedule's progress, kept by the engine and written by the store: ``next_fire_at`` is
    the next tick (its nominal time, None once the schedule has no more), ``due_at`` when
    the engine must look at the schedule again (the tick plus its jitter, or sooner while
    a buffered tick waits), ``revision`` counts every write, so that a firing decided
    from a schedule that changed meanwhile is refused.
    """

    name: str
    workflow: str
    expression: str
    version: str | None = None
    module: str | None = None
    input: str = "null"  # JSON text
    timezone: str = "UTC"
    window: timedelta = timedelta(0)
    catch_up: CatchUp = CatchUp.LATEST
    catch_up_limit: int = 10
    overlap: Overlap = Overlap.SKIP
    paused: bool = False
    start_at: datetime | None = None
    end_at: datetime | None = None
    next_fire_at: datetime | None = None
    due_at: datetime | None = None
    buffered_tick: datetime | None = None
    last_tick_at: datetime | None = None
    last_run_id: str | None = None
    resumed_at: datetime | None = None
    revision: int = 0
    created_at: datetime | None = None
    updated_at: datetime | None = None

    def evolve(self, **changes: Any) -> Schedule:
        return replace(self, **changes)


@dataclass(frozen=True, slots=True)
class ScheduleFiring:
    """What the engine decided for one schedule at ``now`` (``fire_schedule``).

    Applied only while the schedule is still at ``expected_revision``: two workers that
    decide the same ticks race, one firing wins, the other is refused and writes nothing.
    ``runs`` are created with their ExecutionStarted events; a run whose id is taken (the
    tick was fired before) is left as it is. ``next_fire_at``, ``due_at`` and
    ``buffered_tick`` replace the schedule's; ``last_tick_at`` and ``last_run_id``
    replace them when given.
    """

    name: str
    expected_revision: int
    now: datetime
    next_fire_at: datetime | None
    due_at: datetime | None
    buffered_tick: datetime | None = None
    runs: Sequence[tuple[RunRecord, HistoryEvent]] = ()
    last_tick_at: datetime | None = None
    last_run_id: str | None = None

    def applied_to(self, schedule: Schedule) -> Schedule:
        """``schedule`` as this firing leaves it, one revision on (what a store writes)."""
        return schedule.evolve(
            next_fire_at=self.next_fire_at,
            due_at=self.due_at,
            buffered_tick=self.buffered_tick,
            last_tick_at=self.last_tick_at or schedule.last_tick_at,
            last_run_id=self.last_run_id or schedule.last_run_id,
            revision=schedule.revision + 1,
            updated_at=self.now,
        )
