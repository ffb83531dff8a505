"""Retention for the SQLite store: list the runs that have ended, delete the ones the
engine decided to prune — each with its journal, history, callbacks and delivered
events — in one transaction per batch, re-checking the decision inside it; and fold the
old history of a long-lived run into one summary event."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from cadenza.adapters.sqlite._rows import _run_from_row, _ts
from cadenza.ports.run_store import HistoryCompaction, PrunedRuns, RunRecord

_ENDED = "status IN ('SUCCEEDED', 'FAILED', 'CANCELLED')"
_CHUNK = 500  # ids per statement, well under SQLite's limit on bound parameters


class SqliteRetention:
    """Mixed into :class:`SqliteRunStore`, which provides ``_read`` and ``_write``."""

    _read: Callable[..., Any]
    _write: Callable[..., Any]

    async def ended_runs(
        self,
        *,
        updated_before: datetime,
        limit: int,
        workflow: str | None = None,
        after: tuple[datetime, str] | None = None,
    ) -> list[RunRecord]:
        where = [_ENDED, "updated_at < ?"]
        args: list[Any] = [_ts(updated_before)]
        if workflow is not None:
            where.append("workflow = ?")
            args.append(workflow)
        if after is not None:
            where.append("(updated_at > ? OR (updated_at = ? AND run_id > ?))")
            args += [_ts(after[0]), _ts(after[0]), after[1]]
        sql = f"SELECT * FROM runs WHERE {' AND '.join(where)} ORDER BY updated_at, run_id LIMIT ?"

        def read(conn: sqlite3.Connection) -> list[RunRecord]:
            return [_run_from_row(r) for r in conn.execute(sql, [*args, max(limit, 0)])]

        result: list[RunRecord] = await self._read(read)
        return result

    async def prune_runs(self, run_ids: Sequence[str], *, ended_before: datetime) -> PrunedRuns:
        ids = list(dict.fromkeys(run_ids))

        def prune(conn: sqlite3.Connection) -> PrunedRuns:
            doomed: list[str] = []
            for start in range(0, len(ids), _CHUNK):
                chunk = ids[start : start + _CHUNK]
                marks = ", ".join("?" * len(chunk))
                doomed += [
                    row[0]
                    for row in conn.execute(
                        f"SELECT r.run_id FROM runs r WHERE r.run_id IN ({marks})"
                        f" AND r.{_ENDED} AND r.updated_at < ?"
                        " AND NOT EXISTS (SELECT 1 FROM runs p WHERE p.run_id = r.parent_run_id"
                        "  AND p.status NOT IN ('SUCCEEDED', 'FAILED', 'CANCELLED'))",
                        [*chunk, _ts(ended_before)],
                    )
                ]
            counts = {"ops": 0, "history": 0, "callbacks": 0, "outbox": 0}
            for start in range(0, len(doomed), _CHUNK):
                chunk = doomed[start : start + _CHUNK]
                marks = ", ".join("?" * len(chunk))
                for table in ("ops", "history", "callbacks"):
                    cur = conn.execute(f"DELETE FROM {table} WHERE run_id IN ({marks})", chunk)
                    counts[table] += cur.rowcount
                cur = conn.execute(
                    "DELETE FROM outbox WHERE delivered_at IS NOT NULL"
                    f" AND json_extract(event, '$.run_id') IN ({marks})",
                    chunk,
                )
                counts["outbox"] += cur.rowcount
                conn.execute(f"DELETE FROM runs WHERE run_id IN ({marks})", chunk)
            return PrunedRuns(
                tuple(doomed),
                counts["ops"],
                counts["history"],
                counts["callbacks"],
                counts["outbox"],
            )

        result: PrunedRuns = await self._write(prune)
        return result

    async def compact_history(self, compaction: HistoryCompaction) -> bool:
        c = compaction
        drop = sorted(set(c.drop))
        summary = c.summary

        def compact(conn: sqlite3.Connection) -> bool:
            row = conn.execute(
                "SELECT lease_epoch FROM runs WHERE run_id = ?", (c.run_id,)
            ).fetchone()
            if row is None or row[0] != c.expected_epoch or not drop:
                return False
            found = 0
            for start in range(0, len(drop), _CHUNK):
                chunk = drop[start : start + _CHUNK]
                found += conn.execute(
                    f"SELECT count(*) FROM history WHERE run_id = ? AND seq IN"
                    f" ({', '.join('?' * len(chunk))})",
                    [c.run_id, *chunk],
                ).fetchone()[0]
            if found != len(drop):
                return False  # compacted meanwhile by another writer
            conn.execute(
                "UPDATE history SET type = ?, ts = ?, op_id = ?, parent_id = ?, name = ?,"
                " details = ? WHERE run_id = ? AND seq = ?",
                (
                    str(summary.type),
                    _ts(summary.timestamp),
                    summary.op_id,
                    summary.parent_id,
                    summary.name,
                    json.dumps(summary.details, default=str),
                    c.run_id,
                    drop[0],
                ),
            )
            rest = drop[1:]
            for start in range(0, len(rest), _CHUNK):
                chunk = rest[start : start + _CHUNK]
                marks = ", ".join("?" * len(chunk))
                conn.execute(
                    f"DELETE FROM history WHERE run_id = ? AND seq IN ({marks})", [c.run_id, *chunk]
                )
            return True

        result: bool = await self._write(compact)
        return result
