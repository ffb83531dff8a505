"""Deciding what a schedule does now: which ticks are due, which of them fire.

Pure functions of the schedule, the time and whether its previous run is still open, so
every worker that looks at the same schedule at the same moment decides the same thing.
The jitter of a tick is drawn from a hash of the schedule's name and the tick, not from a
random generator, for the same reason.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache

from cadenza.ports.run_store import CatchUp, Overlap, Schedule
from cadenza.schedules.expressions import Expression, parse_expression, zone

#: A tick fired more than this after its fire time was missed (what ``CatchUp.NONE`` drops).
ON_TIME = timedelta(minutes=1)
#: How often a schedule holding a buffered tick looks whether its previous run has ended.
BUFFER_RECHECK = timedelta(seconds=5)
_TINY = timedelta(microseconds=1)


@lru_cache(maxsize=512)
def expression(text: str) -> Expression:
    """``text`` parsed, once per process (a schedule is looked at again and again)."""
    return parse_expression(text)


def jitter(name: str, tick: datetime, window: timedelta) -> timedelta:
    """Where in ``[0, window)`` the tick of ``name`` at ``tick`` fires: the same on every
    worker, spread evenly over the window from one tick to the next (whole milliseconds)."""
    millis = int(window.total_seconds() * 1000)
    if millis <= 0:
        return timedelta(0)
    digest = hashlib.sha256(f"{name}\x00{tick.isoformat()}".encode()).digest()
    return timedelta(milliseconds=int.from_bytes(digest[:8], "big") % millis)


def fire_time(schedule: Schedule, tick: datetime) -> datetime:
    """When the tick at ``tick`` actually fires: the tick plus its jitter."""
    return tick + jitter(schedule.name, tick, schedule.window)


def anchor(schedule: Schedule) -> datetime:
    """Where a rate counts from: the start date, else when the schedule was created."""
    start = schedule.start_at or schedule.created_at
    if start is None:
        raise ValueError(f"schedule {schedule.name!r} has neither start_at nor created_at")
    return start


def next_tick(schedule: Schedule, after: datetime) -> datetime | None:
    """The schedule's first tick strictly after ``after``, within its start and end dates."""
    if schedule.start_at is not None and after < schedule.start_at:
        after = schedule.start_at - _TINY
    tick = expression(schedule.expression).next_after(
        after, tz=zone(schedule.timezone), anchor=anchor(schedule)
    )
    if tick is None or (schedule.end_at is not None and tick > schedule.end_at):
        return None
    return tick


def first_tick(schedule: Schedule, now: datetime) -> datetime | None:
    """The first tick of a schedule defined (or resumed) at ``now``: a tick at ``now`` counts."""
    return next_tick(schedule, now - _TINY)


@dataclass(frozen=True, slots=True)
class Decision:
    """What to write: the ticks to start runs for (oldest first), the schedule's next tick
    and when to look again, the tick to keep buffered, and how many due ticks were dropped."""

    fire: list[datetime]
    next_tick: datetime | None
    due_at: datetime | None
    buffered: datetime | None
    dropped: int


def decide(schedule: Schedule, now: datetime, *, previous_open: bool) -> Decision:
    """The ticks of ``schedule`` due at ``now`` and what becomes of them under its catch-up
    and overlap policies. ``previous_open``: the run of its last fired tick has not ended.

    A tick is *late* when its fire time passed more than :data:`ON_TIME` ago: it was
    missed (no worker was looking). Catch-up decides what becomes of late ticks; ticks on
    time always fire (subject to overlap)."""
    start = schedule.next_fire_at
    if start is not None and schedule.resumed_at is not None and start < schedule.resumed_at:
        start = first_tick(schedule, schedule.resumed_at)  # no catch-up across a pause
    keep = max(schedule.catch_up_limit, 1) if schedule.catch_up == CatchUp.ALL else 1
    due, total, following, following_at = _due_ticks(schedule, start, now, keep)

    late = [t for t, ready in due if ready is None or now - ready > ON_TIME]
    on_time = [t for t, ready in due if ready is not None and now - ready <= ON_TIME]
    if schedule.catch_up == CatchUp.NONE:
        chosen = on_time
    elif schedule.catch_up == CatchUp.LATEST:
        chosen = on_time or late[-1:]
    else:
        chosen = [t for t, _ in due][-keep:]
    buffered = schedule.buffered_tick
    if schedule.overlap == Overlap.SKIP:
        fire = [] if previous_open else chosen[-1:]
    elif schedule.overlap == Overlap.BUFFER_ONE:
        if previous_open:
            fire, buffered = [], (chosen[-1] if chosen else buffered)
        else:
            fire = chosen[-1:] or ([buffered] if buffered is not None else [])
            buffered = None
    else:
        fire = chosen
    kept = 1 if buffered is not None and buffered in chosen else 0
    dropped = total - len([t for t in fire if t != schedule.buffered_tick]) - kept
    due_at = following_at
    if buffered is not None:
        recheck = now + BUFFER_RECHECK
        due_at = recheck if due_at is None else min(due_at, recheck)
    return Decision(fire, following, due_at, buffered, max(dropped, 0))


def _due_ticks(
    schedule: Schedule, start: datetime | None, now: datetime, keep: int
) -> tuple[list[tuple[datetime, datetime | None]], int, datetime | None, datetime | None]:
    """The ticks from ``start`` on that are ready at ``now`` (the last ``keep`` of the late
    ones, all that are on time), each with the time it became ready (None: long ago); how
    many were ready (a lower bound after a long outage); and the first tick not ready yet
    with the time it will be.

    Ticks fire in order: a tick is ready once its fire time has come and the tick before
    it is ready, so a wide window never lets a later tick overtake an earlier one. A tick
    at ``t`` is ready by ``t + window`` whatever the draws, so the ticks before
    ``now - window - ON_TIME`` are late for sure: after a long outage they are not walked
    one by one; only the newest ``keep`` are looked for, in spans that double back."""
    if start is None:
        return [], 0, None, None
    due: list[tuple[datetime, datetime | None]] = []
    total = 0
    tick: datetime | None = start
    certain = now - schedule.window - ON_TIME
    if start <= certain:
        span = timedelta(hours=1)
        while True:
            begin = max(start, certain - span)
            found = _ticks_between(schedule, begin, certain)
            if len(found) >= keep or begin == start:
                break
            span *= 2
        due = [(t, None) for t in found[-keep:]]
        total = len(found)
        tick = next_tick(schedule, found[-1]) if found else next_tick(schedule, certain)
    ready: datetime | None = None
    while tick is not None:
        at = fire_time(schedule, tick)
        ready = at if ready is None else max(at, ready)
        if ready > now:
            return due, total, tick, ready
        due.append((tick, ready))
        total += 1
        late_ones = [d for d in due if d[1] is None or now - d[1] > ON_TIME]
        if len(late_ones) > keep:  # late ticks form a prefix: the oldest is not kept
            due.remove(late_ones[0])
        tick = next_tick(schedule, tick)
    return due, total, None, None


def _ticks_between(schedule: Schedule, begin: datetime, end: datetime) -> list[datetime]:
    """The ticks in ``[begin, end]``, in order."""
    found: list[datetime] = []
    tick = next_tick(schedule, begin - _TINY)
    while tick is not None and tick <= end:
        found.append(tick)
        tick = next_tick(schedule, tick)
    return found
