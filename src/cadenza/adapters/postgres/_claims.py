"""Claiming runs in PostgreSQL: SKIP LOCKED leases, and queue flow control across workers.

A plain claim is one statement: lock the best runnable rows nobody else is locking
(``FOR UPDATE SKIP LOCKED``), lease them, bump their fencing epoch, return them; the same
round trip reads the journals and callbacks their activations load first. It never
takes runs of a limited queue (one with a concurrency cap or a rate limit). Those are
claimed in a transaction that first locks the queue's row, so that counting its live
leases and taking new ones cannot interleave between two workers; a worker that finds the
queue row locked skips the queue this time instead of waiting.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from cadenza.adapters.postgres._rows import (
    CALLBACK_COLUMNS,
    OP_COLUMNS,
    RUN_COLUMNS,
    callback_from_row,
    op_from_row,
    queue_from_row,
)
from cadenza.adapters.postgres._writes import Conn
from cadenza.journal import OpRecord
from cadenza.ports.run_store import CallbackRecord, refill_tokens

RUNNABLE = (
    "(status = 'PENDING' OR (status = 'SUSPENDED' AND wake_at <= %(now)s)"
    " OR (status = 'RUNNING' AND lease_expires_at <= %(now)s))"
)
_ORDER = " ORDER BY priority DESC, created_at"


def queue_stats_query(schema: str) -> str:
    """Per queue: runnable runs (by :data:`RUNNABLE`, the claim's own predicate), when the
    oldest of them became due, live leases, and suspended runs whose wake time is ahead.

    Three index scans, one per open status, over the partial indexes the claims use
    (``runs_pending``, ``runs_due`` from the first wake time, ``runs_queue_leases``), so
    ended runs and runs parked with no wake time are never read. Takes ``now``.
    """
    columns = (
        f"SELECT queue, ({RUNNABLE})::int AS runnable, CASE WHEN {RUNNABLE} THEN CASE status"
        " WHEN 'PENDING' THEN updated_at WHEN 'SUSPENDED' THEN wake_at"
        " ELSE lease_expires_at END END AS due,"
        " (status = 'RUNNING' AND lease_expires_at > %(now)s)::int AS running,"
        " (status = 'SUSPENDED' AND wake_at > %(now)s)::int AS waiting"
        f" FROM {schema}.runs WHERE "
    )
    return (
        "SELECT queue, sum(runnable) AS runnable, min(due) AS due, sum(running) AS running,"
        " sum(waiting) AS waiting FROM ("
        + f"{columns}status = 'PENDING'"
        + f" UNION ALL {columns}status = 'SUSPENDED' AND wake_at IS NOT NULL"
        + f" UNION ALL {columns}status = 'RUNNING'"
        + ") open GROUP BY queue"
    )


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
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Lease the best runnable runs of unlimited queues, and read what their activations
    load first: their journal records and callbacks. One round trip: the three statements
    leave in one pipeline, and run in its one implicit transaction, so the reads see the
    runs just leased (found by the lease's own expiry time, which the partial index on
    running runs' leases serves) and commit with the lease. The rows of the reads carry
    the run id and the epoch of the lease they were read under."""
    picked = (
        f"SELECT run_id FROM {schema}.runs WHERE "
        + " AND ".join([*where, _unlimited(schema)])
        + _ORDER
        + " LIMIT %(limit)s FOR UPDATE SKIP LOCKED"
    )
    leased = (
        f" FROM {schema}.runs r JOIN {schema}.{{table}} x ON x.run_id = r.run_id"
        " WHERE r.status = 'RUNNING' AND r.lease_expires_at = %(until)s"
        " AND r.lease_owner = %(owner)s"
        # On a run's first claim the engine reads nothing: no lease has written records yet.
        " AND r.lease_epoch > 1"
    )
    keys = {"owner": params["owner"], "until": params["until"]}
    ops_columns = ", ".join(f"x.{c.strip()}" for c in OP_COLUMNS.split(","))
    callback_columns = ", ".join(
        f"x.{c.strip()}" for c in CALLBACK_COLUMNS.split(",") if c.strip() != "run_id"
    )
    async with conn.pipeline():
        claimed = await conn.execute(_lease(schema, picked), params)
        ops = await conn.execute(
            f"SELECT r.run_id, r.lease_epoch, {ops_columns}" + leased.format(table="ops"), keys
        )
        callbacks = await conn.execute(
            f"SELECT r.run_id, r.lease_epoch, {callback_columns}"
            + leased.format(table="callbacks"),
            keys,
        )
        return await claimed.fetchall(), await ops.fetchall(), await callbacks.fetchall()


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


class Prefetched:
    """The journals and callbacks read with a claim, until each run's activation loads
    them (once: the engine reloads after a conflict, and then reads the tables).

    Only the runs that claim returned are kept, under the epoch it leased them with. An
    entry is given out for at most ``max_age`` seconds, and dropped when the run commits:
    the lease holder is the only writer of a run's journal, and its activation loads
    before it commits, so within that time the entry is what the tables hold. Callbacks
    may be completed meanwhile by others, as they may between any read and the
    activation; the wake-up flag, which the claim cleared, catches that.
    """

    def __init__(self, *, max_age: float = 2.0, max_entries: int = 4096) -> None:
        self._max_age = max_age
        self._max_entries = max_entries
        self._entries: dict[str, tuple[float, list[OpRecord], list[CallbackRecord]]] = {}

    def put(
        self,
        runs: list[dict[str, Any]],
        ops: list[dict[str, Any]],
        callbacks: list[dict[str, Any]],
    ) -> None:
        # A first claim (epoch 1) is not read ahead: the engine loads nothing then, except
        # for a fork, whose copied records it must read from the tables.
        leased = {r["run_id"]: r["lease_epoch"] for r in runs if r["lease_epoch"] > 1}
        if not leased:
            return
        journals: dict[str, list[OpRecord]] = {run_id: [] for run_id in leased}
        waiting: dict[str, list[CallbackRecord]] = {run_id: [] for run_id in leased}
        for row in ops:
            if leased.get(row["run_id"]) == row["lease_epoch"]:
                journals[row["run_id"]].append(op_from_row(row))
        for row in callbacks:
            if leased.get(row["run_id"]) == row["lease_epoch"]:
                waiting[row["run_id"]].append(callback_from_row(row))
        now = time.monotonic()
        if len(self._entries) + len(leased) > self._max_entries:
            self._entries = {k: v for k, v in self._entries.items() if now - v[0] < self._max_age}
            if len(self._entries) + len(leased) > self._max_entries:
                self._entries.clear()
        for run_id in leased:
            self._entries[run_id] = (now, journals[run_id], waiting[run_id])

    def take(self, run_id: str) -> tuple[list[OpRecord], list[CallbackRecord]] | None:
        entry = self._entries.pop(run_id, None)
        if entry is None or time.monotonic() - entry[0] > self._max_age:
            return None
        return entry[1], entry[2]

    def drop(self, run_id: str) -> None:
        self._entries.pop(run_id, None)
