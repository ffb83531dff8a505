"""Retention for the PostgreSQL store: list the runs that have ended, delete the ones the
engine decided to prune — each with its journal, history, callbacks and delivered
events — in one transaction per batch, re-checking the decision under row locks; and fold
the old history of a long-lived run into one summary event."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from psycopg.types.json import Jsonb

from cadenza.adapters.postgres._rows import RUN_COLUMNS, run_from_row
from cadenza.adapters.postgres._writes import Conn
from cadenza.ports.run_store import HistoryCompaction, PrunedRuns, RunRecord

T = TypeVar("T")

_ENDED = "('SUCCEEDED', 'FAILED', 'CANCELLED')"


class PostgresRetention:
    """Mixed into :class:`PostgresRunStore`, which provides ``schema``, ``_all`` and
    ``_transaction``."""

    schema: str

    if TYPE_CHECKING:  # provided by the store this is mixed into

        async def _all(self, query: str, params: Any = None) -> list[dict[str, Any]]: ...

        async def _transaction(
            self, fn: Callable[[Conn], Awaitable[T]], *, atomic: bool = True
        ) -> T: ...

    async def ended_runs(
        self,
        *,
        updated_before: datetime,
        limit: int,
        workflow: str | None = None,
        after: tuple[datetime, str] | None = None,
    ) -> list[RunRecord]:
        # ended_at is updated_at for the runs that ended, NULL for the others (its index
        # leaves a run's row free to be updated in place while it runs: see _schema).
        where = ["ended_at < %s"]
        args: list[Any] = [updated_before]
        if workflow is not None:
            where.append("workflow = %s")
            args.append(workflow)
        if after is not None:
            where.append("(ended_at, run_id) > (%s, %s)")
            args += [after[0], after[1]]
        rows = await self._all(
            f"SELECT {RUN_COLUMNS} FROM {self.schema}.runs WHERE {' AND '.join(where)}"
            " ORDER BY ended_at, run_id LIMIT %s",
            [*args, max(limit, 0)],
        )
        return [run_from_row(r) for r in rows]

    async def prune_runs(self, run_ids: Sequence[str], *, ended_before: datetime) -> PrunedRuns:
        s = self.schema
        ids = list(dict.fromkeys(run_ids))

        async def prune(conn: Conn) -> PrunedRuns:
            # Locked in run-id order, as every writer locks runs, so no deadlock; a run
            # retried or redriven meanwhile no longer matches and is left alone.
            cur = await conn.execute(
                f"SELECT r.run_id FROM {s}.runs r WHERE r.run_id = ANY(%s)"
                " AND r.ended_at < %s"
                f" AND NOT EXISTS (SELECT 1 FROM {s}.runs p WHERE p.run_id = r.parent_run_id"
                f"  AND p.status NOT IN {_ENDED})"
                " ORDER BY r.run_id FOR UPDATE OF r",
                (ids, ended_before),
            )
            doomed = [str(row["run_id"]) for row in await cur.fetchall()]
            if not doomed:
                return PrunedRuns()
            counts: dict[str, int] = {}
            for table in ("ops", "history", "callbacks"):
                cur = await conn.execute(
                    f"DELETE FROM {s}.{table} WHERE run_id = ANY(%s)", (doomed,)
                )
                counts[table] = cur.rowcount
            cur = await conn.execute(
                f"DELETE FROM {s}.outbox WHERE delivered_at IS NOT NULL"
                " AND event->>'run_id' = ANY(%s)",
                (doomed,),
            )
            counts["outbox"] = cur.rowcount
            await conn.execute(f"DELETE FROM {s}.runs WHERE run_id = ANY(%s)", (doomed,))
            return PrunedRuns(
                tuple(doomed),
                counts["ops"],
                counts["history"],
                counts["callbacks"],
                counts["outbox"],
            )

        return await self._transaction(prune)

    async def compact_history(self, compaction: HistoryCompaction) -> bool:
        s = self.schema
        c = compaction
        drop = sorted(set(c.drop))
        summary = c.summary

        async def compact(conn: Conn) -> bool:
            cur = await conn.execute(
                f"SELECT lease_epoch FROM {s}.runs WHERE run_id = %s FOR SHARE", (c.run_id,)
            )
            row = await cur.fetchone()
            if row is None or row["lease_epoch"] != c.expected_epoch or not drop:
                return False
            cur = await conn.execute(
                f"DELETE FROM {s}.history WHERE run_id = %s AND seq = ANY(%s)",
                (c.run_id, drop[1:]),
            )
            deleted = cur.rowcount
            cur = await conn.execute(
                f"UPDATE {s}.history SET type = %s, ts = %s, op_id = %s, parent_id = %s,"
                " name = %s, details = %s WHERE run_id = %s AND seq = %s",
                (
                    str(summary.type),
                    summary.timestamp,
                    summary.op_id,
                    summary.parent_id,
                    summary.name,
                    Jsonb(summary.details),
                    c.run_id,
                    drop[0],
                ),
            )
            if deleted + cur.rowcount != len(drop):
                raise _Stale  # compacted meanwhile: roll the whole write back
            return True

        try:
            return await self._transaction(compact)
        except _Stale:
            return False


class _Stale(Exception):
    """A compaction whose events are no longer all there (rolls its transaction back)."""
