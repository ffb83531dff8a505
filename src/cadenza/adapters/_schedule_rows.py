"""The ``schedules`` table the SQL stores share: its columns and the Schedule ↔ row mapping.

SQLite and PostgreSQL keep a schedule in the same columns and differ only in how a moment
and a flag are stored (epoch seconds and 0/1 in SQLite, ``timestamptz`` and ``boolean`` in
PostgreSQL), so each store passes its own conversions for those.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Protocol

from cadenza.ports.run_store import CatchUp, Overlap, Schedule

SCHEDULE_COLUMNS = (
    "name, workflow, version, module, expression, input, timezone, window_s, catch_up,"
    " catch_up_limit, overlap, paused, start_at, end_at, next_fire_at, due_at, buffered_tick,"
    " last_tick_at, last_run_id, resumed_at, revision, created_at, updated_at"
)


class Row(Protocol):
    """A result row read by column name (``sqlite3.Row``, a psycopg dict row)."""

    def __getitem__(self, key: str, /) -> Any: ...


def schedule_params(
    s: Schedule,
    *,
    moment: Callable[[datetime | None], Any],
    flag: Callable[[bool], Any],
) -> tuple[Any, ...]:
    """The values of :data:`SCHEDULE_COLUMNS` for ``s``, in their order."""
    return (
        s.name,
        s.workflow,
        s.version,
        s.module,
        s.expression,
        s.input,
        s.timezone,
        s.window.total_seconds(),
        str(s.catch_up),
        s.catch_up_limit,
        str(s.overlap),
        flag(s.paused),
        moment(s.start_at),
        moment(s.end_at),
        moment(s.next_fire_at),
        moment(s.due_at),
        moment(s.buffered_tick),
        moment(s.last_tick_at),
        s.last_run_id,
        moment(s.resumed_at),
        s.revision,
        moment(s.created_at),
        moment(s.updated_at),
    )


def schedule_from_row(r: Row, *, moment: Callable[[Any], datetime | None]) -> Schedule:
    """The schedule a row of :data:`SCHEDULE_COLUMNS` holds."""
    return Schedule(
        name=r["name"],
        workflow=r["workflow"],
        version=r["version"],
        module=r["module"],
        expression=r["expression"],
        input=r["input"],
        timezone=r["timezone"],
        window=timedelta(seconds=r["window_s"]),
        catch_up=CatchUp(r["catch_up"]),
        catch_up_limit=r["catch_up_limit"],
        overlap=Overlap(r["overlap"]),
        paused=bool(r["paused"]),
        start_at=moment(r["start_at"]),
        end_at=moment(r["end_at"]),
        next_fire_at=moment(r["next_fire_at"]),
        due_at=moment(r["due_at"]),
        buffered_tick=moment(r["buffered_tick"]),
        last_tick_at=moment(r["last_tick_at"]),
        last_run_id=r["last_run_id"],
        resumed_at=moment(r["resumed_at"]),
        revision=r["revision"],
        created_at=moment(r["created_at"]),
        updated_at=moment(r["updated_at"]),
    )
