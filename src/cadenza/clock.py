"""Time, passed in rather than read, so tests can control it.

Everything in cadenza that depends on time — the engine's deadlines and timers, and the
model wrappers' rate limits and cache expiry — asks a :class:`Clock`. A
:class:`FakeClock` therefore drives all of it at once, and a test never sleeps for real.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta


class Clock:
    """Wall-clock time in UTC."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back, for measuring intervals (a rate
        bucket's refill, a cache entry's age): the wall clock may jump."""
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(seconds, 0.0))


class FakeClock(Clock):
    """A clock that moves only when told to: ``advance()`` wakes the sleepers it passes."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 1, tzinfo=UTC)
        self._start = self._now
        self._sleepers: list[tuple[datetime, asyncio.Future[None]]] = []

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return (self._now - self._start).total_seconds()

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sleepers.append((self._now + timedelta(seconds=seconds), future))
        await future

    def advance(self, delta: timedelta | float) -> None:
        if not isinstance(delta, timedelta):
            delta = timedelta(seconds=delta)
        self._now += delta
        keep = []
        for due, future in self._sleepers:
            if due <= self._now:
                if not future.done():
                    future.set_result(None)
            else:
                keep.append((due, future))
        self._sleepers = keep


def iso(value: datetime) -> str:
    return value.isoformat()


def parse_iso(value: str) -> datetime:
    return datetime.fromisoformat(value)
