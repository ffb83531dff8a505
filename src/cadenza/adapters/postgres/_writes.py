"""The writes of the PostgreSQL run store that touch several rows at once.

A checkpoint is one SQL statement when it can be: a chain of data-modifying CTEs whose
first member is the fenced update of the run row, and whose inserts happen only if that
update found the run still leased to the writer. In autocommit mode that statement is its
own transaction, so the common checkpoint (journal records, history, state, events,
callbacks, suspension, the end of a run) costs one round trip and one commit. A
checkpoint that resolves callbacks, starts child runs, wakes or cancels other runs runs
the same statement inside a transaction and adds those parts after it, as the checkpoint
spells them out.

Rows are locked in one order everywhere (a run before its callbacks, a child before its
parent) so that concurrent writers queue up instead of deadlocking; the store retries the
rare deadlock that remains (cancelling a tree while one of its children ends).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection, AsyncCursor
from psycopg.rows import DictRow, TupleRow, tuple_row

from cadenza.adapters.postgres._notify import OUTBOX
from cadenza.adapters.postgres._rows import (
    OP_COLUMNS,
    RUN_COLUMNS,
    error_jsonb,
    history_params,
    jsonb,
    op_params,
    run_from_row,
    run_params,
)
from cadenza.errors import (
    CallbackNotFound,
    CheckpointConflict,
    ErrorInfo,
    LeaseLost,
    RunNotFound,
    RunStateError,
)
from cadenza.history import HistoryEvent
from cadenza.journal import OpRecord
from cadenza.ports.run_store import (
    CallbackRecord,
    CallbackResolution,
    Cancellation,
    Checkpoint,
    CommitResult,
    Redrive,
    RunRecord,
    RunStatus,
    WakeUp,
)

Conn = AsyncConnection[DictRow]

_TERMINAL = "('SUCCEEDED', 'FAILED', 'CANCELLED')"


def needs_transaction(cp: Checkpoint) -> bool:
    """Whether a checkpoint has parts that one statement cannot do (or undo): conditional
    resolutions, child runs, and whatever it does to other runs."""
    return bool(cp.resolutions or cp.children or cp.wake_ups or cp.cancels)


async def notify(conn: Conn, channel: str, payload: str = "") -> None:
    await conn.execute("SELECT pg_notify(%s, %s)", (channel, payload))


# --- checkpoints -----------------------------------------------------------------------


async def apply_checkpoint(
    conn: Conn, schema: str, cp: Checkpoint, *, channel: str
) -> CommitResult | None:
    """The one statement of a checkpoint; what the run row says back, or None when the
    fence failed (nothing was written)."""
    cur = await send_checkpoint(conn, schema, cp, channel=channel)
    return commit_result(await cur.fetchone())


async def send_checkpoint(
    conn: Conn, schema: str, cp: Checkpoint, *, channel: str
) -> AsyncCursor[TupleRow]:
    """Send a checkpoint's one statement; in a pipeline, its answer is read later (with
    :func:`commit_result`). Its row comes back as a tuple: building a dict from the
    result's description costs more than the rest of reading it."""
    cur = conn.cursor(row_factory=tuple_row)
    return await cur.execute(*checkpoint_statement(schema, cp, channel=channel))


def commit_result(row: TupleRow | None) -> CommitResult | None:
    """A checkpoint statement's row (``cancel_requested`` first, see
    :func:`_checkpoint_sql`) as the commit's result; None when fenced off."""
    return None if row is None else CommitResult(cancel_requested=bool(row[0]))


def checkpoint_statement(
    schema: str, cp: Checkpoint, *, channel: str
) -> tuple[str, dict[str, Any]]:
    """The SQL and parameters of a checkpoint's one statement (see :func:`apply_checkpoint`).

    The SQL depends only on which parts the checkpoint has, so the few texts are built
    once and psycopg prepares each on every connection after a few uses: PostgreSQL then
    neither parses nor plans a checkpoint again.
    """
    params: dict[str, Any] = {
        "now": cp.now,
        "run_id": cp.run_id,
        "owner": cp.owner,
        "epoch": cp.expected_epoch,
    }
    touches_run = cp.state is not None or cp.outcome is not None or cp.suspend
    if touches_run:
        params["channel"] = channel
    if cp.state is not None:
        params["state"] = _json_param(cp.state)
    if cp.outcome is not None:
        params["status"] = str(cp.outcome.status)
        params["result"] = cp.outcome.result
        params["error"] = _error_param(cp.outcome.error)
    elif cp.suspend:
        params["wake_at"] = cp.wake_at
    if cp.ops:
        params["ops"] = _json_param([_op_row(op) for op in cp.ops])
    if cp.history:
        params["history"] = _json_param(
            [
                {
                    "type": str(e.type),
                    "ts": _iso(e.timestamp),
                    "op_id": e.op_id,
                    "parent_id": e.parent_id,
                    "name": e.name,
                    "details": e.details or None,
                }
                for e in cp.history
            ]
        )
    if cp.callbacks:
        params["callbacks"] = _json_param([_callback_row(cb) for cb in cp.callbacks])
    if cp.events:
        params["events"] = _json_param(list(cp.events))
        params["channel"] = channel
    sql = _checkpoint_sql(
        schema,
        state=cp.state is not None,
        outcome=cp.outcome is not None,
        suspend=cp.suspend and cp.outcome is None,
        ops=bool(cp.ops),
        history=bool(cp.history),
        callbacks=bool(cp.callbacks),
        events=bool(cp.events),
    )
    return sql, params


@functools.lru_cache(maxsize=256)
def _checkpoint_sql(
    s: str,
    *,
    state: bool,
    outcome: bool,
    suspend: bool,
    ops: bool,
    history: bool,
    callbacks: bool,
    events: bool,
) -> str:
    touches_run = state or outcome or suspend
    if touches_run:
        sets = ["updated_at = %(now)s"]
        if state:
            sets.append("state = %(state)s::jsonb")
        if outcome:
            sets += [
                "status = %(status)s",
                "result = %(result)s",
                "error = %(error)s::jsonb",
                "lease_owner = NULL",
                "lease_expires_at = NULL",
                "wake_at = NULL",
            ]
        elif suspend:
            sets += [
                "status = CASE WHEN wake_requested THEN 'PENDING' ELSE 'SUSPENDED' END",
                "wake_at = %(wake_at)s",
                "lease_owner = NULL",
                "lease_expires_at = NULL",
            ]
        fence = (
            f"fence AS (UPDATE {s}.runs SET {', '.join(sets)} WHERE run_id = %(run_id)s"
            " AND lease_owner = %(owner)s AND lease_epoch = %(epoch)s"
            " RETURNING cancel_requested, status, queue)"
        )
    else:
        # Nothing about the run itself changes (a step's result, say): leave its row
        # alone, as the SQLite store does. The row is only locked (FOR SHARE), which a
        # claim's FOR UPDATE or any UPDATE of the run waits for, so the fence holds until
        # COMMIT as an update's lock would; but no new row version and no index entries
        # are written (updated_at is indexed, so even a bare update of it is never HOT).
        fence = (
            f"fence AS (SELECT cancel_requested, status, queue FROM {s}.runs"
            " WHERE run_id = %(run_id)s AND lease_owner = %(owner)s"
            " AND lease_epoch = %(epoch)s FOR SHARE)"
        )
    ctes = [fence]
    # json_to_recordset reads the text once; the jsonb variant would first build (and key-
    # sort) a jsonb document only to take it apart again.
    if ops:
        ctes.append(
            f"new_ops AS (INSERT INTO {s}.ops (run_id, op_id, parent_id, type, name, status,"
            " attempt, result, error, started_at, ended_at, data)"
            " SELECT %(run_id)s, o.op_id, o.parent_id, o.type, o.name, o.status, o.attempt,"
            " o.result, o.error, o.started_at, o.ended_at, o.data"
            " FROM json_to_recordset(%(ops)s::json) AS o(op_id text, parent_id text,"
            " type text, name text, status text, attempt integer, result text, error jsonb,"
            " started_at timestamptz, ended_at timestamptz, data jsonb)"
            " WHERE EXISTS (SELECT 1 FROM fence)"
            " ON CONFLICT (run_id, op_id) DO UPDATE SET status = excluded.status,"
            " attempt = excluded.attempt, result = excluded.result, error = excluded.error,"
            " started_at = excluded.started_at, ended_at = excluded.ended_at,"
            " data = excluded.data)"
        )
    if history:
        ctes.append(
            f"new_history AS (INSERT INTO {s}.history (run_id, type, ts, op_id, parent_id,"
            " name, details)"
            " SELECT %(run_id)s, h.type, h.ts, h.op_id, h.parent_id, h.name, h.details"
            " FROM ROWS FROM (json_to_recordset(%(history)s::json) AS (type text,"
            " ts timestamptz, op_id text, parent_id text, name text, details jsonb))"
            " WITH ORDINALITY AS h(type, ts, op_id, parent_id, name, details, n)"
            " WHERE EXISTS (SELECT 1 FROM fence) ORDER BY h.n)"
        )
    if callbacks:
        ctes.append(
            f"new_callbacks AS (INSERT INTO {s}.callbacks (callback_id, run_id, op_id, kind,"
            " status, created_at, expires_at, heartbeat_timeout_s, heartbeat_at, pattern,"
            " result, error, completed_at, payload_schema)"
            " SELECT c.callback_id, c.run_id, c.op_id, c.kind, c.status, c.created_at,"
            " c.expires_at, c.heartbeat_timeout_s, c.heartbeat_at, c.pattern, c.result,"
            " c.error, c.completed_at, c.payload_schema"
            " FROM json_to_recordset(%(callbacks)s::json) AS c(callback_id text,"
            " run_id text, op_id text, kind text, status text, created_at timestamptz,"
            " expires_at timestamptz, heartbeat_timeout_s double precision,"
            " heartbeat_at timestamptz, pattern jsonb, result text, error jsonb,"
            " completed_at timestamptz, payload_schema jsonb)"
            " WHERE EXISTS (SELECT 1 FROM fence))"
        )
    if events:
        ctes.append(
            f"new_events AS (INSERT INTO {s}.outbox (event_id, event, published_at)"
            " SELECT e.value ->> 'id', e.value, %(now)s"
            " FROM jsonb_array_elements(%(events)s::jsonb) WITH ORDINALITY AS e(value, n)"
            " WHERE EXISTS (SELECT 1 FROM fence) ORDER BY e.n"
            " ON CONFLICT (event_id) DO NOTHING)"
        )
        ctes.append(f"relayed AS (SELECT pg_notify(%(channel)s, '{OUTBOX}') FROM fence)")
    # SELECT members of a WITH run only when referenced: counting them makes them run.
    counts = []
    if touches_run:
        # Wake idle workers when this commit made something runnable: a wake-up that
        # arrived while the run was running, a freed slot of a capped queue. A checkpoint
        # that leaves the run row alone makes nothing runnable.
        wakes = ["f.status = 'PENDING'"]
        if outcome or suspend:
            wakes.append(
                f"EXISTS (SELECT 1 FROM {s}.queues q WHERE q.name = f.queue"
                " AND (q.concurrency IS NOT NULL OR q.rate_limit IS NOT NULL))"
            )
        ctes.append(
            "woken AS (SELECT pg_notify(%(channel)s, '') FROM fence f WHERE "
            + " OR ".join(wakes)
            + ")"
        )
        counts.append("(SELECT count(*) FROM woken)")
    if events:
        counts.append("(SELECT count(*) FROM relayed)")
    return (
        "WITH "
        + ", ".join(ctes)
        + " SELECT cancel_requested, status"
        + (f", {' + '.join(counts)} AS woken" if counts else "")
        + " FROM fence"
    )


def _op_row(op: OpRecord) -> dict[str, Any]:
    return {
        "op_id": op.op_id,
        "parent_id": op.parent_id,
        "type": str(op.type),
        "name": op.name,
        "status": str(op.status),
        "attempt": op.attempt,
        "result": op.result,
        "error": op.error.to_dict() if op.error is not None else None,
        "started_at": _iso(op.started_at),
        "ended_at": _iso(op.ended_at),
        "data": op.data or None,
    }


def _callback_row(cb: CallbackRecord) -> dict[str, Any]:
    return {
        "callback_id": cb.callback_id,
        "run_id": cb.run_id,
        "op_id": cb.op_id,
        "kind": str(cb.kind),
        "status": str(cb.status),
        "created_at": _iso(cb.created_at),
        "expires_at": _iso(cb.expires_at),
        "heartbeat_timeout_s": cb.heartbeat_timeout_s,
        "heartbeat_at": _iso(cb.heartbeat_at),
        "pattern": cb.pattern,
        "result": cb.result,
        "error": cb.error.to_dict() if cb.error is not None else None,
        "completed_at": _iso(cb.completed_at),
        "payload_schema": cb.payload_schema,
    }


def _error_param(error: ErrorInfo | None) -> str | None:
    return _json_param(error.to_dict()) if error is not None else None


async def fence_error(conn: Conn, schema: str, cp: Checkpoint) -> Exception:
    """Why a checkpoint's fence failed: the run is gone, or its lease moved on."""
    cur = await conn.execute(
        f"SELECT lease_owner, lease_epoch FROM {schema}.runs WHERE run_id = %s", (cp.run_id,)
    )
    row = await cur.fetchone()
    if row is None:
        return RunNotFound(cp.run_id)
    return LeaseLost(
        f"run {cp.run_id}: lease epoch {cp.expected_epoch} of {cp.owner} is no longer"
        f" current (now {row['lease_epoch']} of {row['lease_owner']}); checkpoint rejected"
    )


async def finish_checkpoint(
    conn: Conn, schema: str, cp: Checkpoint, result: CommitResult, *, channel: str
) -> CommitResult:
    """The parts of a checkpoint after its statement, in the same transaction."""
    for resolution in cp.resolutions:
        if not await set_callback(conn, schema, resolution, cp.now):
            raise CheckpointConflict(
                f"run {cp.run_id}: callback {resolution.callback_id} was completed meanwhile"
            )
    for child in cp.children:
        await insert_run(conn, schema, child.run)
        await insert_history(conn, schema, child.run.run_id, [child.started])
    if cp.children:
        await notify(conn, channel)
    for wake_up in cp.wake_ups:
        await apply_wake_up(conn, schema, wake_up, cp.now, channel=channel)
    for cancellation in cp.cancels:
        await cancel(conn, schema, cancellation, cp.now, channel=channel)
    return result


# --- callbacks -------------------------------------------------------------------------


async def set_callback(conn: Conn, schema: str, res: CallbackResolution, now: datetime) -> bool:
    cur = await conn.execute(
        f"UPDATE {schema}.callbacks SET status = %s, result = %s, error = %s, completed_at = %s"
        " WHERE callback_id = %s AND status = 'PENDING' RETURNING callback_id",
        (str(res.status), res.result, error_jsonb(res.error), now, res.callback_id),
    )
    return await cur.fetchone() is not None


def _wake_resolved(s: str) -> str:
    """The statement's tail that wakes the run of the callback ``resolved`` (a CTE), and
    tells the workers listening on ``%(channel)s`` when that made the run runnable.

    A run still running is not: its lease holder sees the wake-up flag at its next
    checkpoint, and that checkpoint, leaving the run PENDING, sends the word itself.
    Every notification wakes every listening worker, and each then tries a claim.
    """
    return (
        f" woken AS (UPDATE {s}.runs r SET wake_requested = true, updated_at = %(now)s,"
        " status = CASE r.status WHEN 'SUSPENDED' THEN 'PENDING' ELSE r.status END"
        " FROM resolved WHERE r.run_id = resolved.run_id RETURNING r.status),"
        " notified AS (SELECT pg_notify(%(channel)s, '') FROM woken"
        " WHERE woken.status = 'PENDING')"
    )


def _resolution_params(res: CallbackResolution, now: datetime, channel: str) -> dict[str, Any]:
    return {
        "id": res.callback_id,
        "status": str(res.status),
        "result": res.result,
        "error": error_jsonb(res.error),
        "now": now,
        "channel": channel,
    }


async def resolve_callback(
    conn: Conn, schema: str, res: CallbackResolution, now: datetime, *, channel: str
) -> bool:
    """Resolve a callback from outside its run and wake the run, unless it already ended.

    One statement: lock the run row, resolve the callback if still PENDING, wake the run.
    """
    s = schema
    cur = await conn.execute(
        f"WITH target AS (SELECT c.callback_id, r.run_id, r.status AS run_status"
        f" FROM {s}.callbacks c JOIN {s}.runs r ON r.run_id = c.run_id"
        " WHERE c.callback_id = %(id)s FOR UPDATE OF r),"
        f" resolved AS (UPDATE {s}.callbacks c SET status = %(status)s, result = %(result)s,"
        " error = %(error)s, completed_at = %(now)s FROM target t"
        " WHERE c.callback_id = t.callback_id AND c.status = 'PENDING'"
        f" AND t.run_status NOT IN {_TERMINAL} RETURNING c.run_id),"
        + _wake_resolved(s)
        + " SELECT t.run_id, t.run_status, (SELECT count(*) FROM resolved) AS resolved,"
        " (SELECT count(*) FROM notified) AS notified FROM target t",
        _resolution_params(res, now, channel),
    )
    row = await cur.fetchone()
    if row is None:
        raise CallbackNotFound(f"no callback {res.callback_id!r}")
    if RunStatus(row["run_status"]).terminal:
        raise RunStateError(
            f"run {row['run_id']} already ended ({row['run_status']}); its callbacks are closed"
        )
    return bool(row["resolved"])


async def apply_wake_up(
    conn: Conn, schema: str, wake_up: WakeUp, now: datetime, *, channel: str
) -> bool:
    """Resolve another run's callback and wake that run, if the run has not ended and the
    callback still waits; otherwise nothing (see :class:`WakeUp`). One statement, which
    locks the run row before the callback row, as every writer does."""
    s = schema
    res = wake_up.resolution
    cur = await conn.execute(
        f"WITH target AS (SELECT run_id FROM {s}.runs WHERE run_id = %(run)s"
        f" AND status NOT IN {_TERMINAL} FOR UPDATE),"
        f" resolved AS (UPDATE {s}.callbacks c SET status = %(status)s, result = %(result)s,"
        " error = %(error)s, completed_at = %(now)s FROM target t"
        " WHERE c.callback_id = %(id)s AND c.run_id = t.run_id AND c.status = 'PENDING'"
        " RETURNING c.run_id),"
        + _wake_resolved(s)
        + " SELECT (SELECT count(*) FROM target) AS open,"
        " (SELECT count(*) FROM resolved) AS resolved,"
        " (SELECT count(*) FROM notified) AS notified,"
        f" EXISTS (SELECT 1 FROM {s}.callbacks WHERE callback_id = %(id)s"
        " AND run_id = %(run)s) AS known",
        {"run": wake_up.run_id, **_resolution_params(res, now, channel)},
    )
    row = await cur.fetchone()
    assert row is not None
    if row["open"] and not row["known"]:
        raise CallbackNotFound.to_wake(wake_up.run_id, res.callback_id)
    return bool(row["resolved"])


async def wake(conn: Conn, schema: str, run_id: str, now: datetime) -> None:
    await conn.execute(
        f"UPDATE {schema}.runs SET wake_requested = true, updated_at = %s,"
        " status = CASE status WHEN 'SUSPENDED' THEN 'PENDING' ELSE status END"
        " WHERE run_id = %s",
        (now, run_id),
    )


# --- runs ------------------------------------------------------------------------------


async def cancel(
    conn: Conn, schema: str, cancellation: Cancellation, now: datetime, *, channel: str
) -> None:
    """Apply one planned cancellation to the run as it is now (see :class:`Cancellation`)."""
    s = schema
    # Lock the run first: whether a live lease holds it is decided in this transaction,
    # since claims race the plan.
    cur = await conn.execute(
        f"SELECT status, lease_expires_at FROM {s}.runs WHERE run_id = %s FOR UPDATE",
        (cancellation.run_id,),
    )
    row = await cur.fetchone()
    if row is None or RunStatus(row["status"]).terminal:
        return
    expires = row["lease_expires_at"]
    if row["status"] == RunStatus.RUNNING and expires is not None and expires > now:
        # The worker sees the flag at its next checkpoint and stops the run itself.
        await conn.execute(
            f"UPDATE {s}.runs SET cancel_requested = true, updated_at = %s WHERE run_id = %s",
            (now, cancellation.run_id),
        )
        return
    await conn.execute(
        f"UPDATE {s}.runs SET status = 'CANCELLED', cancel_requested = true, error = %s,"
        " lease_owner = NULL, lease_expires_at = NULL, wake_at = NULL, updated_at = %s"
        " WHERE run_id = %s",
        (error_jsonb(cancellation.error), now, cancellation.run_id),
    )
    await insert_history(conn, s, cancellation.run_id, [cancellation.event])
    if cancellation.wake_up is not None:
        await apply_wake_up(conn, s, cancellation.wake_up, now, channel=channel)


async def redrive(conn: Conn, schema: str, rd: Redrive, now: datetime) -> RunRecord:
    """Put one ended run back to work (see ``RunStore.redrive_runs``)."""
    s = schema
    cur = await conn.execute(
        f"SELECT status, lease_epoch FROM {s}.runs WHERE run_id = %s FOR UPDATE", (rd.run_id,)
    )
    row = await cur.fetchone()
    if row is None:
        raise RunNotFound(rd.run_id)
    if row["status"] not in ("FAILED", "CANCELLED") or row["lease_epoch"] != rd.expected_epoch:
        raise RunStateError(
            f"run {rd.run_id} changed since the retry was planned (it is {row['status']} now);"
            f" see 'cadenza runs show {rd.run_id}'"
        )
    async with conn.cursor() as c:
        if rd.drop:
            await c.executemany(
                f"DELETE FROM {s}.ops WHERE run_id = %s AND op_id = %s",
                [(rd.run_id, op_id) for op_id in rd.drop],
            )
        if rd.reset:
            await upsert_ops(conn, s, rd.run_id, rd.reset)
        if rd.reopen:
            await c.executemany(
                f"UPDATE {s}.callbacks SET status = 'PENDING', result = NULL, error = NULL,"
                " completed_at = NULL WHERE callback_id = %s AND run_id = %s",
                [(cb, rd.run_id) for cb in rd.reopen],
            )
    cur = await conn.execute(
        f"UPDATE {s}.runs SET status = 'PENDING', result = NULL, error = NULL, wake_at = NULL,"
        " lease_owner = NULL, lease_expires_at = NULL, lease_epoch = lease_epoch + 1,"
        " cancel_requested = false, wake_requested = false, updated_at = %s,"
        " version = coalesce(%s, version), module = coalesce(%s, module),"
        f" state = coalesce(%s, state) WHERE run_id = %s RETURNING {RUN_COLUMNS}",
        (now, rd.version, rd.module, jsonb(rd.state), rd.run_id),
    )
    updated = await cur.fetchone()
    assert updated is not None
    await insert_history(conn, s, rd.run_id, [rd.event])
    return run_from_row(updated)


async def upsert_ops(conn: Conn, schema: str, run_id: str, ops: Sequence[OpRecord]) -> None:
    async with conn.cursor() as cur:
        await cur.executemany(
            f"INSERT INTO {schema}.ops ({_OP_COLUMNS}) VALUES"
            " (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (run_id, op_id) DO UPDATE SET status = excluded.status,"
            " attempt = excluded.attempt, result = excluded.result, error = excluded.error,"
            " started_at = excluded.started_at, ended_at = excluded.ended_at,"
            " data = excluded.data",
            [op_params(run_id, op) for op in ops],
        )


_OP_COLUMNS = "run_id, " + OP_COLUMNS

_INSERT_RUN = (
    "INSERT INTO {s}.runs (" + RUN_COLUMNS + ") VALUES"
    " (" + ", ".join(["%s"] * len(RUN_COLUMNS.split(","))) + ")"
)


async def insert_run(conn: Conn, schema: str, run: RunRecord) -> None:
    await conn.execute(_INSERT_RUN.replace("{s}", schema), run_params(run))


async def insert_history(
    conn: Conn, schema: str, run_id: str, events: Sequence[HistoryEvent]
) -> None:
    if events:
        async with conn.cursor() as cur:
            await cur.executemany(
                f"INSERT INTO {schema}.history (run_id, type, ts, op_id, parent_id, name,"
                " details) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                [history_params(run_id, e) for e in events],
            )


async def insert_events(
    conn: Conn, schema: str, events: Sequence[dict[str, Any]], now: datetime
) -> None:
    if events:
        async with conn.cursor() as cur:
            await cur.executemany(
                f"INSERT INTO {schema}.outbox (event_id, event, published_at)"
                " VALUES (%s, %s, %s) ON CONFLICT (event_id) DO NOTHING",
                [(e["id"], jsonb(e), now) for e in events],
            )


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _json_param(value: Any) -> str:
    return json.dumps(value, default=str)
