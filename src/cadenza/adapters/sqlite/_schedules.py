"""The schedule methods of the SQLite store (mixed into :class:`SqliteRunStore`).

A firing is one write job: the revision check, the runs and the schedule's new progress
commit together or not at all, and SQLite's single writer orders racing firings, so the
second finds the revision moved on and writes nothing."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from cadenza.adapters._schedule_rows import SCHEDULE_COLUMNS, schedule_from_row, schedule_params
from cadenza.adapters.sqlite._rows import _dt, _ts
from cadenza.errors import ScheduleNotFound
from cadenza.ports.run_store import Schedule, ScheduleFiring

T = TypeVar("T")


class SqliteSchedules:
    """Mixed into :class:`SqliteRunStore`, which provides ``_read`` and ``_write``."""

    if TYPE_CHECKING:  # the store's own, seen by the type checker only

        async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...

        async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...

    async def put_schedule(self, schedule: Schedule) -> Schedule:
        def put(conn: sqlite3.Connection) -> Schedule:
            known = _get(conn, schedule.name)
            stored = schedule.evolve(
                revision=(known.revision if known else 0) + 1,
                created_at=known.created_at if known else schedule.created_at,
            )
            conn.execute(
                f"INSERT OR REPLACE INTO schedules ({SCHEDULE_COLUMNS}) VALUES"
                f" ({', '.join('?' * len(SCHEDULE_COLUMNS.split(',')))})",
                _params(stored),
            )
            return stored

        return await self._write(put)

    async def get_schedule(self, name: str) -> Schedule:
        def get(conn: sqlite3.Connection) -> Schedule:
            found = _get(conn, name)
            if found is None:
                raise ScheduleNotFound(name)
            return found

        return await self._read(get)

    async def list_schedules(self) -> list[Schedule]:
        return await self._read(
            lambda conn: [
                _from_row(r)
                for r in conn.execute(f"SELECT {SCHEDULE_COLUMNS} FROM schedules ORDER BY name")
            ]
        )

    async def delete_schedule(self, name: str) -> bool:
        return await self._write(
            lambda conn: conn.execute("DELETE FROM schedules WHERE name = ?", (name,)).rowcount == 1
        )

    async def pause_schedule(self, name: str, *, paused: bool, now: datetime) -> Schedule:
        def pause(conn: sqlite3.Connection) -> Schedule:
            # A resume (paused -> not paused) marks when: ticks before it are not caught up.
            conn.execute(
                "UPDATE schedules SET resumed_at = CASE WHEN paused = 1 AND ? = 0 THEN ?"
                " ELSE resumed_at END, paused = ?, revision = revision + 1, updated_at = ?"
                " WHERE name = ?",
                (int(paused), _ts(now), int(paused), _ts(now), name),
            )
            found = _get(conn, name)
            if found is None:
                raise ScheduleNotFound(name)
            return found

        return await self._write(pause)

    async def due_schedules(self, *, now: datetime, limit: int) -> list[Schedule]:
        return await self._read(
            lambda conn: [
                _from_row(r)
                for r in conn.execute(
                    f"SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE paused = 0 AND due_at <= ?"
                    " ORDER BY due_at, name LIMIT ?",
                    (_ts(now), limit),
                )
            ]
        )

    async def next_schedule_due_at(self) -> datetime | None:
        return await self._read(
            lambda conn: _dt(
                conn.execute("SELECT MIN(due_at) FROM schedules WHERE paused = 0").fetchone()[0]
            )
        )

    async def fire_schedule(self, firing: ScheduleFiring) -> bool:
        # Imported here: the store module imports this one to mix it in.
        from cadenza.adapters.sqlite._store import _insert_history, _insert_run

        def fire(conn: sqlite3.Connection) -> bool:
            moved = conn.execute(
                "UPDATE schedules SET next_fire_at = ?, due_at = ?, buffered_tick = ?,"
                " last_tick_at = COALESCE(?, last_tick_at), last_run_id = COALESCE(?,"
                " last_run_id), revision = revision + 1, updated_at = ?"
                " WHERE name = ? AND revision = ?",
                (
                    _ts(firing.next_fire_at),
                    _ts(firing.due_at),
                    _ts(firing.buffered_tick),
                    _ts(firing.last_tick_at),
                    firing.last_run_id,
                    _ts(firing.now),
                    firing.name,
                    firing.expected_revision,
                ),
            ).rowcount
            if moved != 1:
                return False
            for run, started in firing.runs:
                taken = conn.execute(
                    "SELECT 1 FROM runs WHERE run_id = ?", (run.run_id,)
                ).fetchone()
                if taken is None:  # else the tick fired before
                    _insert_run(conn, run)
                    _insert_history(conn, run.run_id, [started])
            return True

        return await self._write(fire)


def _get(conn: sqlite3.Connection, name: str) -> Schedule | None:
    row = conn.execute(
        f"SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE name = ?", (name,)
    ).fetchone()
    return _from_row(row) if row is not None else None


def _params(s: Schedule) -> tuple[Any, ...]:
    return schedule_params(s, moment=_ts, flag=int)


def _from_row(r: sqlite3.Row) -> Schedule:
    return schedule_from_row(r, moment=_dt)
