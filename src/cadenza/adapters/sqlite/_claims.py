"""Claims and queue flow control in the SQLite store: concurrency caps and rate buckets.

A claim picks its runs here, inside its write transaction. The writer thread runs one
transaction at a time, so counting a queue's live leases and taking new ones cannot
interleave with another claim.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from cadenza.ports.run_store import QueueConfig, QueueStats, refill_tokens

_COLUMNS = "name, concurrency, rate_limit, rate_period_s, tokens, refilled_at"


_CLAIM = (
    "UPDATE runs SET status = 'RUNNING', lease_owner = :owner, lease_epoch = lease_epoch + 1,"
    " lease_expires_at = :until, wake_requested = 0, updated_at = :now"
    " WHERE run_id IN ({picked}) RETURNING {columns}"
)


def claim(
    conn: sqlite3.Connection,
    where: list[str],
    params: dict[str, Any],
    now: datetime,
    *,
    columns: str,
) -> list[sqlite3.Row]:
    """Lease the best runnable runs matching ``where`` (``params`` has now, owner, until
    and limit), within the budgets of limited queues."""
    picked = pick_runs(conn, where, params, now)
    if picked is None:
        ids = (
            "SELECT run_id FROM runs WHERE "
            + " AND ".join(where)
            + " ORDER BY priority DESC, created_at LIMIT :limit"
        )
    else:
        ids = "SELECT value FROM json_each(:picked)"
        params = {**params, "picked": json.dumps(picked)}
    rows = conn.execute(_CLAIM.format(picked=ids, columns=columns), params).fetchall()
    return sorted(rows, key=lambda r: (-r["priority"], r["created_at"]))


def filters(
    where: list[str],
    params: dict[str, Any],
    workflows: Sequence[tuple[str, str]] | None,
    queues: Sequence[str] | None,
) -> bool:
    """Add the workflow and queue filters; False when they can match nothing."""
    if workflows is not None:
        keys = [f"{name}@{version}" for name, version in workflows]
        if not keys:
            return False
        names = ", ".join(f":wf{i}" for i in range(len(keys)))
        where.append(f"workflow || '@' || version IN ({names})")
        params.update({f"wf{i}": key for i, key in enumerate(keys)})
    if queues is not None:
        if not queues:
            return False
        names = ", ".join(f":q{i}" for i in range(len(queues)))
        where.append(f"queue IN ({names})")
        params.update({f"q{i}": q for i, q in enumerate(queues)})
    return True


def put_queue(conn: sqlite3.Connection, config: QueueConfig) -> None:
    conn.execute(
        "INSERT INTO queues (name, concurrency, rate_limit, rate_period_s) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (name) DO UPDATE SET concurrency = excluded.concurrency,"
        " rate_limit = excluded.rate_limit, rate_period_s = excluded.rate_period_s",
        (
            config.name,
            config.concurrency,
            config.rate_limit,
            config.rate_period.total_seconds(),
        ),
    )


def list_queues(conn: sqlite3.Connection) -> list[QueueConfig]:
    return [_config(r) for r in conn.execute(f"SELECT {_COLUMNS} FROM queues ORDER BY name")]


def queue_stats(conn: sqlite3.Connection, runnable: str, now: datetime) -> list[QueueStats]:
    """Per queue: runnable runs (by ``runnable``, the claim's own predicate), when the
    oldest of them became due, live leases, and suspended runs whose wake time is ahead.

    One statement of three index searches, one per open status (``runs_leases`` or
    ``runs_queue_leases`` for PENDING and RUNNING, ``runs_due`` from the first wake time
    for SUSPENDED), so ended runs and runs parked with no wake time are never read.
    """
    columns = (
        f"SELECT queue, {runnable} AS runnable, CASE WHEN {runnable} THEN CASE status"
        " WHEN 'PENDING' THEN updated_at WHEN 'SUSPENDED' THEN wake_at"
        " ELSE lease_expires_at END END AS due,"
        " status = 'RUNNING' AND lease_expires_at > :now AS running,"
        " status = 'SUSPENDED' AND wake_at > :now AS waiting FROM runs WHERE "
    )
    rows = conn.execute(
        "SELECT queue, SUM(runnable), MIN(due), SUM(running), SUM(waiting) FROM ("
        + f"{columns}status = 'PENDING'"
        + f" UNION ALL {columns}status = 'SUSPENDED' AND wake_at IS NOT NULL"
        + f" UNION ALL {columns}status = 'RUNNING'"
        + ") GROUP BY queue",
        {"now": now.timestamp()},
    ).fetchall()
    stats = {"default": QueueStats("default")}
    for queue, ready, due, running, waiting in rows:
        stats[queue] = QueueStats(
            queue,
            runnable=int(ready or 0),
            running=int(running or 0),
            waiting=int(waiting or 0),
            oldest_due_at=datetime.fromtimestamp(due, UTC) if due is not None else None,
        )
    return [stats[name] for name in sorted(stats)]


def pick_runs(
    conn: sqlite3.Connection, where: list[str], params: dict[str, Any], now: datetime
) -> list[str] | None:
    """The run ids a claim may take when limited queues exist; None when none do.

    Each limited queue gets a budget (free slots under its cap, whole tokens in its
    bucket); the unlimited queues are taken as usual; the best ``params['limit']`` of all
    candidates by priority then age win, and the rate buckets are charged for them.
    """
    limited = [
        row
        for row in conn.execute(
            f"SELECT {_COLUMNS} FROM queues"
            " WHERE concurrency IS NOT NULL OR rate_limit IS NOT NULL ORDER BY name"
        ).fetchall()
    ]
    if not limited:
        return None
    limit = int(params["limit"])
    filters = " AND ".join(where)
    order = " ORDER BY priority DESC, created_at LIMIT :take"
    names = {f"lq{i}": row["name"] for i, row in enumerate(limited)}
    candidates: list[tuple[int, float, str, str]] = []
    tokens: dict[str, float] = {}
    for row in limited:
        config = _config(row)
        budget = math.inf
        if config.concurrency is not None:
            active = conn.execute(
                "SELECT COUNT(*) FROM runs WHERE queue = ? AND status = 'RUNNING'"
                " AND lease_expires_at > ?",
                (config.name, params["now"]),
            ).fetchone()[0]
            budget = config.concurrency - active
        if config.rate_limit is not None:
            refilled_at = row["refilled_at"]
            available = refill_tokens(
                config,
                row["tokens"],
                datetime.fromtimestamp(refilled_at, UTC) if refilled_at is not None else None,
                now,
            )
            tokens[config.name] = available
            budget = min(budget, math.floor(available))
        take = int(min(budget, limit))
        if take <= 0:
            continue
        candidates += conn.execute(
            "SELECT priority, created_at, run_id, queue FROM runs WHERE "
            + filters
            + " AND queue = :limited_queue"
            + order,
            {**params, "limited_queue": config.name, "take": take},
        ).fetchall()
    candidates += conn.execute(
        "SELECT priority, created_at, run_id, queue FROM runs WHERE "
        + filters
        + f" AND queue NOT IN ({', '.join(':' + key for key in names)})"
        + order,
        {**params, **names, "take": limit},
    ).fetchall()
    chosen = sorted(candidates, key=lambda c: (-c[0], c[1]))[:limit]
    charged: dict[str, int] = {}
    for _, _, _, queue in chosen:
        if queue in tokens:
            charged[queue] = charged.get(queue, 0) + 1
    for queue, count in charged.items():
        conn.execute(
            "UPDATE queues SET tokens = ?, refilled_at = ? WHERE name = ?",
            (tokens[queue] - count, params["now"], queue),
        )
    return [run_id for _, _, run_id, _ in chosen]


def _config(row: sqlite3.Row) -> QueueConfig:
    return QueueConfig(
        name=row["name"],
        concurrency=row["concurrency"],
        rate_limit=row["rate_limit"],
        rate_period=timedelta(seconds=row["rate_period_s"]),
    )
