"""Claiming runs in PostgreSQL: SKIP LOCKED leases, and queue flow control across workers.

A plain claim is one statement: lock the best runnable rows nobody else is locking
(``FOR UPDATE SKIP LOCKED``), lease them, bump their fencing epoch, return them. It never
takes runs of a limited queue (one with a concurrency cap or a rate limit). Those are
claimed in a transaction that first locks the queue's row, so that counting its live
leases and taking new ones cannot interleave between two workers; a worker that finds the
queue row locked skips the queue this time instead of waiting.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from cadenza.adapters.postgres._rows import RUN_COLUMNS, queue_from_row
from cadenza.adapters.postgres._writes import Conn
from cadenza.ports.run_store import refill_tokens

RUNNABLE = (
    "(status = 'PENDING' OR (status = 'SUSPENDED' AND wake_at <= %(now)s)"
    " OR (status = 'RUNNING' AND lease_expires_at <= %(now)s))"
)
_ORDER = " ORDER BY priority DESC, created_at"


def filters(
    where: list[str],
    params: dict[str, Any],
    workflows: Sequence[tuple[str, str]] | None,
    queues: Sequence[str] | None,
    run_id: str | None = None,
    trace_id: str | None = None,
) -> bool:
    """Add the workflow, queue, run and trace filters; False when they can match nothing."""
    if workflows is not None:
        if not workflows:
            return False
        where.append(
            "(workflow, version) IN"
            " (SELECT * FROM unnest(%(wf_names)s::text[], %(wf_versions)s::text[]))"
        )
        params["wf_names"] = [name for name, _ in workflows]
        params["wf_versions"] = [version for _, version in workflows]
    if queues is not None:
        if not queues:
            return False
        where.append("queue = ANY(%(queues)s::text[])")
        params["queues"] = list(queues)
    if run_id is not None:
        where.append("run_id = %(run_id)s")
        params["run_id"] = run_id
    if trace_id is not None:
        where.append("trace_id = %(trace_id)s")
        params["trace_id"] = trace_id
    return True


def _lease(schema: str, picked: str) -> str:
    columns = ", ".join(f"r.{c.strip()}" for c in RUN_COLUMNS.split(","))
    return (
        f"WITH picked AS ({picked}) UPDATE {schema}.runs r SET status = 'RUNNING',"
        " lease_owner = %(owner)s, lease_epoch = r.lease_epoch + 1,"
        " lease_expires_at = %(until)s, wake_requested = false, updated_at = %(now)s"
        f" FROM picked WHERE r.run_id = picked.run_id RETURNING {columns}"
    )


def _unlimited(schema: str) -> str:
    return (
        f"NOT EXISTS (SELECT 1 FROM {schema}.queues q WHERE q.name = runs.queue"
        " AND (q.concurrency IS NOT NULL OR q.rate_limit IS NOT NULL))"
    )


async def claim_plain(
    conn: Conn, schema: str, where: list[str], params: dict[str, Any]
) -> list[dict[str, Any]]:
    """Lease the best runnable runs of unlimited queues; one statement."""
    picked = (
        f"SELECT run_id FROM {schema}.runs WHERE "
        + " AND ".join([*where, _unlimited(schema)])
        + _ORDER
        + " LIMIT %(limit)s FOR UPDATE SKIP LOCKED"
    )
    cur = await conn.execute(_lease(schema, picked), params)
    return await cur.fetchall()


async def claim_limited(
    conn: Conn,
    schema: str,
    where: list[str],
    params: dict[str, Any],
    limited: Sequence[str],
    now: datetime,
) -> list[dict[str, Any]]:
    """Lease within the budgets of ``limited`` queues and from unlimited ones, best first.

    Runs in the caller's transaction: the locks on queue rows and candidate runs hold
    until it commits.
    """
    s = schema
    limit = int(params["limit"])
    cur = await conn.execute(
        f"SELECT name, concurrency, rate_limit, rate_period_s, tokens, refilled_at"
        f" FROM {s}.queues WHERE name = ANY(%s)"
        " AND (concurrency IS NOT NULL OR rate_limit IS NOT NULL)"
        " ORDER BY name FOR UPDATE SKIP LOCKED",
        (list(limited),),
    )
    locked = await cur.fetchall()
    capped = [r["name"] for r in locked if r["concurrency"] is not None]
    active: dict[str, int] = {}
    if capped:
        cur = await conn.execute(
            f"SELECT queue, count(*) AS n FROM {s}.runs WHERE status = 'RUNNING'"
            " AND lease_expires_at > %s AND queue = ANY(%s) GROUP BY queue",
            (now, capped),
        )
        active = {r["queue"]: r["n"] for r in await cur.fetchall()}
    candidates: list[dict[str, Any]] = []
    tokens: dict[str, float] = {}
    select = f"SELECT run_id, priority, created_at, queue FROM {s}.runs WHERE "
    for row in locked:
        config = queue_from_row(row)
        budget = math.inf
        if config.concurrency is not None:
            budget = config.concurrency - active.get(config.name, 0)
        if config.rate_limit is not None:
            tokens[config.name] = refill_tokens(config, row["tokens"], row["refilled_at"], now)
            budget = min(budget, math.floor(tokens[config.name]))
        take = int(min(budget, limit))
        if take <= 0:
            continue
        cur = await conn.execute(
            select
            + " AND ".join([*where, "queue = %(limited_queue)s"])
            + _ORDER
            + " LIMIT %(take)s FOR UPDATE SKIP LOCKED",
            {**params, "limited_queue": config.name, "take": take},
        )
        candidates += await cur.fetchall()
    cur = await conn.execute(
        select
        + " AND ".join([*where, _unlimited(s)])
        + _ORDER
        + " LIMIT %(limit)s FOR UPDATE SKIP LOCKED",
        params,
    )
    candidates += await cur.fetchall()
    candidates.sort(key=lambda c: (-c["priority"], c["created_at"]))
    chosen = candidates[:limit]
    if not chosen:
        return []
    cur = await conn.execute(
        _lease(s, "SELECT unnest(%(chosen)s::text[]) AS run_id"),
        {**params, "chosen": [c["run_id"] for c in chosen]},
    )
    claimed = await cur.fetchall()
    charged: dict[str, int] = {}
    for c in chosen:
        if c["queue"] in tokens:
            charged[c["queue"]] = charged.get(c["queue"], 0) + 1
    for queue, count in charged.items():
        await conn.execute(
            f"UPDATE {s}.queues SET tokens = %s, refilled_at = %s WHERE name = %s",
            (tokens[queue] - count, now, queue),
        )
    return claimed
