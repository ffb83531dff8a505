"""Claiming runs from DynamoDB: the sparse ``g1`` index by wake time, conditional leases.

Candidates come from the index partition ``RUNNABLE`` (heads of PENDING runs sort first,
then SUSPENDED runs by wake time and RUNNING runs by lease expiry), up to ``now``. They are
ordered as the port asks (higher priority, then older) and leased one by one with an
UpdateItem conditioned on the head's version, so of two claimers racing for a run exactly
one wins; the loser moves on to its next candidate. The index is eventually consistent,
which can only make a claim miss a run that just became runnable (the next poll takes
it), never take one twice: the conditional write reads the table itself.

A queue with a :class:`QueueConfig` keeps its flow control in its own item: the rate
bucket, and the ids of the runs leased under it (pruned on every claim to those still
RUNNING under a live lease, read consistently). A claim from a limited queue is a
transaction of the run's lease and the queue item at the version read, so all claimers
together keep the queue's concurrency and rate.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from cadenza.adapters.dynamodb import _items as it
from cadenza.adapters.dynamodb._table import (
    ConditionFailed,
    Table,
    TransactionCancelled,
    update,
)
from cadenza.adapters.dynamodb._unit import load_doc
from cadenza.ports.run_store import (
    QueueConfig,
    QueueStats,
    RunRecord,
    RunStatus,
    refill_tokens,
)


@dataclass(slots=True)
class _Queue:
    config: QueueConfig
    ver: int
    tokens: float
    active: list[str] = field(default_factory=list)
    budget: float = math.inf


async def claim_runs(
    table: Table,
    *,
    owner: str,
    now: datetime,
    lease_until: datetime,
    limit: int,
    workflows: Sequence[tuple[str, str]] | None,
    queues: Sequence[str] | None,
    run_id: str | None,
    trace_id: str | None,
) -> list[RunRecord]:
    if limit <= 0:
        return []
    pairs = {tuple(p) for p in workflows} if workflows is not None else None
    names = set(queues) if queues is not None else None
    if run_id is not None:
        head = await table.get(it.run_pk(run_id), it.HEAD)
        heads = [head] if head is not None else []
    else:
        heads = await runnable_heads(table, now)
    candidates = [
        h
        for h in heads
        if _runnable(h, now)
        and (pairs is None or (h["wf"], h["wv"]) in pairs)
        and (names is None or h["q"] in names)
        and (trace_id is None or h.get("tr") == trace_id)
    ]
    if not candidates:
        return []
    candidates.sort(key=lambda h: (-h["pr"], h["cr"], h["pk"]))
    limited = await _queues(table, now, {h["q"] for h in candidates})
    claimed: list[str] = []
    for head in candidates:
        if len(claimed) >= limit:
            break
        queue = limited.get(head["q"])
        if queue is not None and queue.budget < 1:
            continue
        leased = await _lease(table, head, owner, now, lease_until, queue)
        if leased is not None:
            claimed.append(leased)
    if not claimed:
        return []
    # The leased runs as the table holds them (the index carries only what claims need).
    items = await table.batch_get(
        [(it.run_pk(r), sk) for r in claimed for sk in (it.HEAD, it.BODY)]
    )
    runs = []
    for run_id in claimed:
        head = items[(it.run_pk(run_id), it.HEAD)]
        body = items[(it.run_pk(run_id), it.BODY)]
        runs.append(it.run_of(head, await load_doc(table, run_id, body)))
    return runs


async def runnable_heads(table: Table, now: datetime) -> list[it.Item]:
    """Heads in the ``RUNNABLE`` index partition that are due by ``now``."""
    return await table.query(
        "g1pk = :p AND g1sk < :upto",
        {":p": it.RUNNABLE, ":upto": f"{it.time_key(now)}$"},
        index="gsi1",
    )


async def queue_stats(table: Table, now: datetime) -> list[QueueStats]:
    """Per queue: runnable runs (by the claim's own test), when the oldest became due,
    live leases, and suspended runs whose wake time is ahead.

    What it reads: the whole ``RUNNABLE`` partition of ``gsi1`` (one Query, paged), whose
    projection carries status, queue, creation, wake and lease times. That partition is
    exactly the PENDING runs, the SUSPENDED runs with a wake time and the RUNNING runs, so
    neither ended runs nor runs parked with no wake time are read. The index does not
    carry when a PENDING run last changed, only when it was created (never later): the
    heads of the oldest-created PENDING runs of each queue are read, a batch at a time,
    only until no remaining PENDING run of the queue was created before the oldest due
    time found; usually that is one head per queue.
    """
    heads = await table.query("g1pk = :p", {":p": it.RUNNABLE}, index="gsi1")
    stats: dict[str, QueueStats] = {"default": QueueStats("default")}
    pending: dict[str, list[it.Item]] = {}
    for head in heads:
        row = stats.get(head["q"]) or QueueStats(head["q"])
        status = RunStatus(head["st"])
        if status == RunStatus.PENDING:
            row = replace(row, runnable=row.runnable + 1)
            pending.setdefault(row.queue, []).append(head)
        elif _runnable(head, now):
            due = datetime.fromisoformat(head["wa" if status == RunStatus.SUSPENDED else "lx"])
            row = replace(row, runnable=row.runnable + 1, oldest_due_at=_earlier(row, due))
        elif status == RunStatus.RUNNING:
            row = replace(row, running=row.running + 1)
        elif status == RunStatus.SUSPENDED:
            row = replace(row, waiting=row.waiting + 1)
        stats[row.queue] = row
    for unread in pending.values():
        unread.sort(key=lambda h: (h["cr"], h["pk"]), reverse=True)  # oldest last
    while True:
        batch = [
            (queue, unread.pop())
            for queue, unread in pending.items()
            if unread and _may_be_older(unread[-1], stats[queue])
        ]
        if not batch:
            break
        read = await table.batch_get([(h["pk"], it.HEAD) for _, h in batch])
        for queue, head in batch:
            current = read.get((head["pk"], it.HEAD))
            due = datetime.fromisoformat((current or head).get("up") or head["cr"])
            stats[queue] = replace(stats[queue], oldest_due_at=_earlier(stats[queue], due))
    return [stats[name] for name in sorted(stats)]


def _may_be_older(head: it.Item, row: QueueStats) -> bool:
    """Whether the PENDING run of ``head`` may have become due before ``row``'s oldest
    (it cannot have changed before it was created)."""
    oldest = row.oldest_due_at
    return oldest is None or datetime.fromisoformat(head["cr"]) < oldest


def _earlier(row: QueueStats, due: datetime) -> datetime:
    return due if row.oldest_due_at is None else min(row.oldest_due_at, due)


def _runnable(head: it.Item, now: datetime) -> bool:
    status = head["st"]
    if status == RunStatus.PENDING:
        return True
    field_name = {RunStatus.SUSPENDED: "wa", RunStatus.RUNNING: "lx"}.get(RunStatus(status))
    if field_name is None or head.get(field_name) is None:
        return False
    return datetime.fromisoformat(head[field_name]) <= now


async def _queues(table: Table, now: datetime, names: set[str]) -> dict[str, _Queue]:
    """The limited queues among ``names``, with what each may still start now."""
    items = await table.query("pk = :pk", {":pk": it.QUEUES})
    queues: dict[str, _Queue] = {}
    for item in items:
        config = it.queue_of(item)
        if config.name not in names or not config.limited:
            continue
        refilled = it.parse(item.get("rf"))
        held = float(item["tk"]) if "tk" in item else None
        queue = _Queue(config, item.get("qv", 0), refill_tokens(config, held, refilled, now))
        queue.active = list(json.loads(item.get("act", "[]")))
        queues[config.name] = queue
    heads = await table.batch_get(
        [(it.run_pk(r), it.HEAD) for q in queues.values() for r in q.active]
    )
    for queue in queues.values():
        queue.active = [
            r
            for r in queue.active
            if (h := heads.get((it.run_pk(r), it.HEAD))) is not None
            and h["st"] == RunStatus.RUNNING
            and h.get("lx") is not None
            and datetime.fromisoformat(h["lx"]) > now
            and h.get("q") == queue.config.name
        ]
        budget = math.inf
        if queue.config.concurrency is not None:
            budget = queue.config.concurrency - len(queue.active)
        if queue.config.rate_limit is not None:
            budget = min(budget, math.floor(queue.tokens))
        queue.budget = budget
    return queues


async def _lease(
    table: Table,
    head: it.Item,
    owner: str,
    now: datetime,
    lease_until: datetime,
    queue: _Queue | None,
) -> str | None:
    """Lease one run if its head is still as the index showed it; its id, or None."""
    run_id: str = head["pk"][2:]
    values: dict[str, Any] = {
        ":st": str(RunStatus.RUNNING),
        ":ow": owner,
        ":ep": head["ep"] + 1,
        ":lx": it.iso(lease_until),
        ":up": it.iso(now),
        ":wk": False,
        ":g1pk": it.RUNNABLE,
        ":g1sk": f"{it.time_key(lease_until)}#{run_id}",
        ":one": 1,
        ":seen_ep": head["ep"],
        ":seen_st": head["st"],
    }
    expression = (
        "SET st = :st, ow = :ow, ep = :ep, lx = :lx, up = :up, wk = :wk, g1pk = :g1pk,"
        " g1sk = :g1sk ADD ver :one"
    )
    # The run is still as the index showed it: not claimed since (epoch), not woken or
    # ended (status), and for an expired lease, not renewed meanwhile.
    condition = "ep = :seen_ep AND st = :seen_st"
    if head["st"] == RunStatus.RUNNING:
        values[":seen_lx"] = head["lx"]
        condition += " AND lx = :seen_lx"
    if queue is None:
        try:
            await table.call(
                "update_item",
                TableName=table.name,
                Key=it.key(head["pk"], it.HEAD),
                UpdateExpression=expression,
                ConditionExpression=condition,
                ExpressionAttributeValues=it.to_item(values),
            )
        except ConditionFailed:
            return None  # another claimer (or a write to the run) got there first
        return run_id
    # The queue's bucket and lease list move with the lease, at the version read.
    active = [*queue.active, run_id]
    tokens = queue.tokens - 1 if queue.config.rate_limit is not None else None
    queue_values: dict[str, Any] = {":nqv": queue.ver + 1}
    queue_values[":act"] = json.dumps(active)
    sets = ["qv = :nqv", "act = :act"]
    queue_condition = "attribute_not_exists(qv)"
    if queue.ver:
        queue_values[":qv"] = queue.ver
        queue_condition = "qv = :qv"
    if tokens is not None:
        queue_values.update({":tk": repr(tokens), ":rf": it.iso(now)})
        sets += ["tk = :tk", "rf = :rf"]
    try:
        await table.transact(
            [
                update(head["pk"], it.HEAD, expression, values, condition=condition),
                update(
                    it.QUEUES,
                    queue.config.name,
                    "SET " + ", ".join(sets),
                    queue_values,
                    condition=queue_condition,
                ),
            ]
        )
    except TransactionCancelled as refused:
        if refused.failed(1) or refused.conflict:
            queue.budget = 0  # another claimer is drawing on this queue: leave it to them
        return None
    queue.ver += 1
    queue.active = active
    queue.budget -= 1
    if tokens is not None:
        queue.tokens = tokens
    return run_id
