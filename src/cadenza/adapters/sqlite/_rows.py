"""Rows of the SQLite store to records of the port, and back. Times are stored as float
epoch seconds (fast to compare and index); JSON documents as text."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from cadenza.errors import ErrorInfo
from cadenza.journal import OpRecord, OpStatus, OpType
from cadenza.ports.run_store import (
    CallbackKind,
    CallbackRecord,
    CallbackStatus,
    OutboxEntry,
    RunOrigin,
    RunRecord,
    RunStatus,
)

# What a text column's parameter is bound as when its value is None, in a statement that
# reads it as ``NULLIF(?, 0)``: the sqlite3 module binds None through its adapter lookup
# (two failed attribute lookups), an int directly, and a text column never holds the
# integer 0, so the two cannot be confused.
NULL = 0


def _ts(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


def _dt(value: float | None) -> datetime | None:
    return datetime.fromtimestamp(value, UTC) if value is not None else None


def _req_dt(value: float) -> datetime:
    return datetime.fromtimestamp(value, UTC)


def _error_json(error: ErrorInfo | None) -> str | None:
    return json.dumps(error.to_dict()) if error is not None else None


def _error(text: str | None) -> ErrorInfo | None:
    return ErrorInfo.from_dict(json.loads(text)) if text else None


def _run_from_row(r: sqlite3.Row) -> RunRecord:
    return RunRecord(
        run_id=r["run_id"],
        workflow=r["workflow"],
        version=r["version"],
        module=r["module"],
        status=RunStatus(r["status"]),
        input=r["input"],
        result=r["result"],
        error=_error(r["error"]),
        parent_run_id=r["parent_run_id"],
        parent_op_id=r["parent_op_id"],
        queue=r["queue"],
        priority=r["priority"],
        wake_at=_dt(r["wake_at"]),
        lease_owner=r["lease_owner"],
        lease_epoch=r["lease_epoch"],
        lease_expires_at=_dt(r["lease_expires_at"]),
        cancel_requested=bool(r["cancel_requested"]),
        state=json.loads(r["state"]),
        trace_id=r["trace_id"],
        idempotency_key=r["idempotency_key"],
        created_at=_req_dt(r["created_at"]),
        updated_at=_req_dt(r["updated_at"]),
        origin=RunOrigin.from_dict(json.loads(r["origin"])) if r["origin"] else None,
        tenant=r["tenant"],
    )


def _op_from_row(r: sqlite3.Row) -> OpRecord:
    return OpRecord(
        op_id=r["op_id"],
        parent_id=r["parent_id"],
        type=OpType(r["type"]),
        name=r["name"],
        status=OpStatus(r["status"]),
        attempt=r["attempt"],
        result=r["result"],
        error=_error(r["error"]),
        started_at=_dt(r["started_at"]),
        ended_at=_dt(r["ended_at"]),
        data=json.loads(r["data"]) if r["data"] else {},
    )


def _callback_row(cb: CallbackRecord) -> tuple[Any, ...]:
    return (
        cb.callback_id,
        cb.run_id,
        cb.op_id,
        str(cb.kind),
        str(cb.status),
        _ts(cb.created_at),
        _ts(cb.expires_at),
        cb.heartbeat_timeout_s,
        _ts(cb.heartbeat_at),
        json.dumps(cb.pattern) if cb.pattern is not None else None,
        cb.result,
        _error_json(cb.error),
        _ts(cb.completed_at),
        json.dumps(cb.payload_schema) if cb.payload_schema is not None else None,
    )


def _callback_from_row(r: sqlite3.Row) -> CallbackRecord:
    return CallbackRecord(
        callback_id=r["callback_id"],
        run_id=r["run_id"],
        op_id=r["op_id"],
        kind=CallbackKind(r["kind"]),
        status=CallbackStatus(r["status"]),
        created_at=_req_dt(r["created_at"]),
        expires_at=_dt(r["expires_at"]),
        heartbeat_timeout_s=r["heartbeat_timeout_s"],
        heartbeat_at=_dt(r["heartbeat_at"]),
        pattern=json.loads(r["pattern"]) if r["pattern"] else None,
        result=r["result"],
        error=_error(r["error"]),
        completed_at=_dt(r["completed_at"]),
        payload_schema=json.loads(r["payload_schema"]) if r["payload_schema"] else None,
    )


def _outbox_from_row(r: sqlite3.Row) -> OutboxEntry:
    return OutboxEntry(
        seq=r["seq"],
        event=json.loads(r["event"]),
        published_at=_req_dt(r["published_at"]),
        delivered_at=_dt(r["delivered_at"]),
    )


def upsert_ops(conn: sqlite3.Connection, run_id: str, ops: Sequence[OpRecord]) -> None:
    """Insert or update journal records (a checkpoint's, a fork's, a retry's)."""
    rows = [
        (
            run_id,
            op.op_id,
            NULL if op.parent_id is None else op.parent_id,
            str(op.type),
            op.name,
            str(op.status),
            op.attempt,
            NULL if op.result is None else op.result,
            NULL if op.error is None else _error_json(op.error),
            _ts(op.started_at),
            _ts(op.ended_at),
            json.dumps(op.data) if op.data else NULL,
        )
        for op in ops
    ]
    sql = (
        "INSERT INTO ops (run_id, op_id, parent_id, type, name, status, attempt, result,"
        " error, started_at, ended_at, data) VALUES (?, ?, NULLIF(?, 0), ?, ?, ?, ?,"
        " NULLIF(?, 0), NULLIF(?, 0), ?, ?, NULLIF(?, 0))"
        " ON CONFLICT (run_id, op_id) DO UPDATE SET status = excluded.status,"
        " attempt = excluded.attempt, result = excluded.result, error = excluded.error,"
        " started_at = excluded.started_at, ended_at = excluded.ended_at,"
        " data = excluded.data"
    )
    if len(rows) == 1:
        conn.execute(sql, rows[0])
    else:
        conn.executemany(sql, rows)
