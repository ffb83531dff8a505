"""Rows of the PostgreSQL run store to records and back.

JSON documents (state, errors, patterns, event envelopes, history details) live in jsonb
columns and come back as Python objects; results and inputs stay text, exactly as the
engine wrote them (they may be claim-check references).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from psycopg.types.json import Jsonb

from cadenza.errors import ErrorInfo
from cadenza.history import HistoryEvent, HistoryEventType
from cadenza.journal import OpRecord, OpStatus, OpType
from cadenza.ports.run_store import (
    DEFAULT_TENANT,
    CallbackKind,
    CallbackRecord,
    CallbackStatus,
    OutboxEntry,
    QueueConfig,
    Rule,
    RunOrigin,
    RunRecord,
    RunStatus,
)

Row = dict[str, Any]

RUN_COLUMNS = (
    "run_id, workflow, version, module, status, input, result, error, parent_run_id,"
    " parent_op_id, queue, priority, wake_at, lease_owner, lease_epoch, lease_expires_at,"
    " cancel_requested, state, trace_id, idempotency_key, created_at, updated_at, origin,"
    " tenant"
)
CALLBACK_COLUMNS = (
    "callback_id, run_id, op_id, kind, status, created_at, expires_at, heartbeat_timeout_s,"
    " heartbeat_at, pattern, result, error, completed_at, payload_schema"
)
OP_COLUMNS = (
    "op_id, parent_id, type, name, status, attempt, result, error, started_at, ended_at, data"
)
QUEUE_COLUMNS = "name, concurrency, rate_limit, rate_period_s, tokens, refilled_at"

_dumps_lenient = partial(json.dumps, default=str)


def jsonb(value: Any, *, lenient: bool = False) -> Jsonb | None:
    if value is None:
        return None
    return Jsonb(value, dumps=_dumps_lenient) if lenient else Jsonb(value)


def error_jsonb(error: ErrorInfo | None) -> Jsonb | None:
    return Jsonb(error.to_dict()) if error is not None else None


def utc(value: datetime | None) -> datetime | None:
    return value.astimezone(UTC) if value is not None else None


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


def _error(value: dict[str, Any] | None) -> ErrorInfo | None:
    return ErrorInfo.from_dict(value) if value else None


def run_params(run: RunRecord) -> tuple[Any, ...]:
    return (
        run.run_id,
        run.workflow,
        run.version,
        run.module,
        str(run.status),
        run.input,
        run.result,
        error_jsonb(run.error),
        run.parent_run_id,
        run.parent_op_id,
        run.queue,
        run.priority,
        run.wake_at,
        run.lease_owner,
        run.lease_epoch,
        run.lease_expires_at,
        run.cancel_requested,
        Jsonb(run.state),
        run.trace_id,
        run.idempotency_key,
        run.created_at,
        run.updated_at,
        jsonb(run.origin.to_dict()) if run.origin is not None else None,
        run.tenant,
    )


def run_from_row(r: Row) -> RunRecord:
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
        wake_at=utc(r["wake_at"]),
        lease_owner=r["lease_owner"],
        lease_epoch=r["lease_epoch"],
        lease_expires_at=utc(r["lease_expires_at"]),
        cancel_requested=r["cancel_requested"],
        state=r["state"],
        trace_id=r["trace_id"],
        idempotency_key=r["idempotency_key"],
        created_at=_utc(r["created_at"]),
        updated_at=_utc(r["updated_at"]),
        origin=RunOrigin.from_dict(r["origin"]) if r["origin"] else None,
        tenant=r["tenant"],
    )


def op_params(run_id: str, op: OpRecord) -> tuple[Any, ...]:
    return (
        run_id,
        op.op_id,
        op.parent_id,
        str(op.type),
        op.name,
        str(op.status),
        op.attempt,
        op.result,
        error_jsonb(op.error),
        op.started_at,
        op.ended_at,
        Jsonb(op.data) if op.data else None,
    )


def op_from_row(r: Row) -> OpRecord:
    return OpRecord(
        op_id=r["op_id"],
        parent_id=r["parent_id"],
        type=OpType(r["type"]),
        name=r["name"],
        status=OpStatus(r["status"]),
        attempt=r["attempt"],
        result=r["result"],
        error=_error(r["error"]),
        started_at=utc(r["started_at"]),
        ended_at=utc(r["ended_at"]),
        data=r["data"] or {},
    )


def history_params(run_id: str, event: HistoryEvent) -> tuple[Any, ...]:
    return (
        run_id,
        str(event.type),
        event.timestamp,
        event.op_id,
        event.parent_id,
        event.name,
        jsonb(event.details, lenient=True) if event.details else None,
    )


def history_from_row(r: Row) -> HistoryEvent:
    return HistoryEvent(
        seq=r["seq"],
        type=HistoryEventType(r["type"]),
        timestamp=_utc(r["ts"]),
        op_id=r["op_id"],
        parent_id=r["parent_id"],
        name=r["name"],
        details=r["details"] or {},
    )


def callback_params(cb: CallbackRecord) -> tuple[Any, ...]:
    return (
        cb.callback_id,
        cb.run_id,
        cb.op_id,
        str(cb.kind),
        str(cb.status),
        cb.created_at,
        cb.expires_at,
        cb.heartbeat_timeout_s,
        cb.heartbeat_at,
        jsonb(cb.pattern),
        cb.result,
        error_jsonb(cb.error),
        cb.completed_at,
        jsonb(cb.payload_schema),
    )


def callback_from_row(r: Row) -> CallbackRecord:
    return CallbackRecord(
        callback_id=r["callback_id"],
        run_id=r["run_id"],
        op_id=r["op_id"],
        kind=CallbackKind(r["kind"]),
        status=CallbackStatus(r["status"]),
        created_at=_utc(r["created_at"]),
        expires_at=utc(r["expires_at"]),
        heartbeat_timeout_s=r["heartbeat_timeout_s"],
        heartbeat_at=utc(r["heartbeat_at"]),
        pattern=r["pattern"],
        result=r["result"],
        error=_error(r["error"]),
        completed_at=utc(r["completed_at"]),
        payload_schema=r["payload_schema"],
    )


def outbox_from_row(r: Row) -> OutboxEntry:
    return OutboxEntry(
        seq=r["seq"],
        event=r["event"],
        published_at=_utc(r["published_at"]),
        delivered_at=utc(r["delivered_at"]),
    )


def rule_from_row(r: Row) -> Rule:
    return Rule(
        name=r["name"],
        pattern=r["pattern"],
        target=r["target"],
        params=r["params"],
        enabled=r["enabled"],
        created_at=utc(r["created_at"]),
        tenant=r.get("tenant") or DEFAULT_TENANT,
    )


def queue_from_row(r: Row) -> QueueConfig:
    return QueueConfig(
        name=r["name"],
        concurrency=r["concurrency"],
        rate_limit=r["rate_limit"],
        rate_period=timedelta(seconds=r["rate_period_s"]),
    )
