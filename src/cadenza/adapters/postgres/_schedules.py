"""The schedule methods of the PostgreSQL store (mixed into :class:`PostgresRunStore`).

A firing is one transaction that starts with ``UPDATE … WHERE revision = expected``. Two
workers racing over the same tick both try it; PostgreSQL makes the second wait for the
first's row lock and then re-reads the row, finds the revision moved on, and updates
nothing: that worker writes no run and learns it lost (False)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

from cadenza.adapters._schedule_rows import SCHEDULE_COLUMNS, schedule_from_row, schedule_params
from cadenza.adapters.postgres import _writes
from cadenza.adapters.postgres._rows import RUN_COLUMNS, run_params, utc
from cadenza.adapters.postgres._writes import Conn
from cadenza.errors import ScheduleNotFound
from cadenza.ports.run_store import Schedule, ScheduleFiring

T = TypeVar("T")

_PLACEHOLDERS = ", ".join(["%s"] * len(SCHEDULE_COLUMNS.split(",")))


class PostgresSchedules:
    """Needs the store's ``schema``, ``channel``, ``_one``, ``_all`` and ``_transaction``."""

    schema: str
    channel: str
    _one: Callable[..., Awaitable[dict[str, Any] | None]]
    _all: Callable[..., Awaitable[list[dict[str, Any]]]]
    _transaction: Callable[..., Awaitable[Any]]

    async def put_schedule(self, schedule: Schedule) -> Schedule:
        s = self.schema
        row = await self._one(
            f"INSERT INTO {s}.schedules AS old ({SCHEDULE_COLUMNS}) VALUES ({_PLACEHOLDERS})"
            " ON CONFLICT (name) DO UPDATE SET"
            + ", ".join(
                f" {c} = excluded.{c}"
                for c in (c.strip() for c in SCHEDULE_COLUMNS.split(","))
                if c not in ("name", "revision", "created_at")
            )
            + ", revision = old.revision + 1"
            f" RETURNING {SCHEDULE_COLUMNS}",
            _params(schedule.evolve(revision=1)),
        )
        assert row is not None
        return _from_row(row)

    async def get_schedule(self, name: str) -> Schedule:
        row = await self._one(
            f"SELECT {SCHEDULE_COLUMNS} FROM {self.schema}.schedules WHERE name = %s", (name,)
        )
        if row is None:
            raise ScheduleNotFound(name)
        return _from_row(row)

    async def list_schedules(self) -> list[Schedule]:
        rows = await self._all(
            f"SELECT {SCHEDULE_COLUMNS} FROM {self.schema}.schedules ORDER BY name"
        )
        return [_from_row(r) for r in rows]

    async def delete_schedule(self, name: str) -> bool:
        row = await self._one(
            f"DELETE FROM {self.schema}.schedules WHERE name = %s RETURNING name", (name,)
        )
        return row is not None

    async def pause_schedule(self, name: str, *, paused: bool, now: datetime) -> Schedule:
        # A resume (paused -> not paused) marks when: ticks before it are not caught up.
        row = await self._one(
            f"UPDATE {self.schema}.schedules SET resumed_at = CASE WHEN paused AND NOT %s"
            " THEN %s ELSE resumed_at END, paused = %s, revision = revision + 1,"
            f" updated_at = %s WHERE name = %s RETURNING {SCHEDULE_COLUMNS}",
            (paused, now, paused, now, name),
        )
        if row is None:
            raise ScheduleNotFound(name)
        return _from_row(row)

    async def due_schedules(self, *, now: datetime, limit: int) -> list[Schedule]:
        rows = await self._all(
            f"SELECT {SCHEDULE_COLUMNS} FROM {self.schema}.schedules WHERE NOT paused"
            " AND due_at <= %s ORDER BY due_at, name LIMIT %s",
            (now, limit),
        )
        return [_from_row(r) for r in rows]

    async def next_schedule_due_at(self) -> datetime | None:
        row = await self._one(
            f"SELECT min(due_at) AS due FROM {self.schema}.schedules WHERE NOT paused"
        )
        return utc(row["due"]) if row is not None else None

    async def fire_schedule(self, firing: ScheduleFiring) -> bool:
        s = self.schema

        async def fire(conn: Conn) -> bool:
            cur = await conn.execute(
                f"UPDATE {s}.schedules SET next_fire_at = %s, due_at = %s, buffered_tick = %s,"
                " last_tick_at = COALESCE(%s, last_tick_at), last_run_id = COALESCE(%s,"
                " last_run_id), revision = revision + 1, updated_at = %s"
                " WHERE name = %s AND revision = %s RETURNING name",
                (
                    firing.next_fire_at,
                    firing.due_at,
                    firing.buffered_tick,
                    firing.last_tick_at,
                    firing.last_run_id,
                    firing.now,
                    firing.name,
                    firing.expected_revision,
                ),
            )
            if await cur.fetchone() is None:
                return False
            created = 0
            for run, started in firing.runs:
                cur = await conn.execute(
                    f"INSERT INTO {s}.runs ({RUN_COLUMNS}) VALUES"
                    f" ({', '.join(['%s'] * len(RUN_COLUMNS.split(',')))})"
                    " ON CONFLICT (run_id) DO NOTHING RETURNING run_id",
                    run_params(run),
                )
                if await cur.fetchone() is not None:  # else the tick fired before
                    await _writes.insert_history(conn, s, run.run_id, [started])
                    created += 1
            if created:
                await _writes.notify(conn, self.channel)
            return True

        fired: bool = await self._transaction(fire)
        return fired


def _params(s: Schedule) -> tuple[Any, ...]:
    return schedule_params(s, moment=lambda v: v, flag=lambda b: b)


def _from_row(r: dict[str, Any]) -> Schedule:
    return schedule_from_row(r, moment=utc)
