"""The single-table layout of the DynamoDB run store: keys, and records to items and back.

Every item has a partition key ``pk`` and a sort key ``sk`` (both strings). A run keeps
everything it owns in its own partition, so that one strongly consistent Query reads an
activation (journal and callbacks) and one transaction fences a checkpoint:

=====================  ======================  ============================================
pk                     sk                      what
=====================  ======================  ============================================
``R#<run id>``         ``RUN``                 the run's head: status, lease, wake time,
                                               counters; small, so fencing is cheap
``R#<run id>``         ``RUN#BODY``            input, state document, result, error
``R#<run id>``         ``H#<first seq>``       one page of history (a checkpoint's events)
``R#<run id>``         ``J#<op id>``           one journal record
``R#<run id>``         ``JP#<write>``          a page of journal records (large checkpoints)
``R#<run id>``         ``K#<callback id>``     a callback
``R#<run id>``         ``B#<sha256>#<n>``      chunk n of a body too large for one item
``CB#<callback id>``   ``CB``                  which run a callback belongs to
``IK#<key>``           ``IK``                  the run an idempotency key started
``EV#<event id>``      ``EV``                  an event id already in the outbox (dedupe)
``OUTBOX``             ``<seq>`` / ``#SEQ``    every event, and the sequence counter
``OUTBOX#NEW``         ``<seq>``               events not yet delivered
``RULES`` / ``QUEUES`` ``<name>``              rules; queue configs with their rate bucket
``APIKEYS``            ``<key id>``            API keys of the service (hashes only)
=====================  ======================  ============================================

Two global secondary indexes, both sparse: ``gsi1`` (``g1pk``, ``g1sk``) holds the heads of
runnable-or-soon runs under ``RUNNABLE`` sorted by the time they become runnable (the
claim and timer index), and PENDING event waiters under ``WAITING``; ``gsi2`` (``g2pk``,
``g2sk``) holds every run head under ``RUNS`` by creation time, for listing. ``gsi1`` also
keeps ended runs under ``ENDED`` by their last update (for retention), and ``gsi2`` the
outbox entries of each run under ``EVENTS#<run id>`` (so a pruned run takes its delivered
events along).

Times in keys are UTC ``YYYY-MM-DDTHH:MM:SS.ffffffZ``, which sort as text.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from cadenza.errors import ErrorInfo
from cadenza.history import HistoryEvent, HistoryEventType
from cadenza.journal import OpRecord, OpStatus, OpType
from cadenza.ports.run_store import (
    DEFAULT_TENANT,
    ApiKeyRecord,
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

Item = dict[str, Any]

HEAD = "RUN"
BODY = "RUN#BODY"
RUNNABLE = "RUNNABLE"
ENDED = "ENDED"
WAITING = "WAITING"
RUNS = "RUNS"
OUTBOX = "OUTBOX"
OUTBOX_NEW = "OUTBOX#NEW"
SEQ = "#SEQ"
RULES = "RULES"
QUEUES = "QUEUES"
APIKEYS = "APIKEYS"
_EPOCH = datetime.fromtimestamp(0, UTC)


def run_pk(run_id: str) -> str:
    return f"R#{run_id}"


def op_sk(op_id: str) -> str:
    return f"J#{op_id}"


def page_sk(write: int) -> str:
    return f"JP#{write:012d}"


def callback_sk(callback_id: str) -> str:
    return f"K#{callback_id}"


def history_sk(first_seq: int) -> str:
    return f"H#{first_seq:010d}"


def seq_sk(seq: int) -> str:
    return f"{seq:016d}"


def time_key(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def parse(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value is not None else None


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


# --- attribute values ------------------------------------------------------------------


def to_av(value: Any) -> dict[str, Any]:
    """A Python value (str, int, bool, list of str) as a DynamoDB attribute value."""
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, int):
        return {"N": str(value)}
    if isinstance(value, str):
        return {"S": value}
    if isinstance(value, list):
        return {"L": [to_av(v) for v in value]}
    raise TypeError(f"no DynamoDB attribute for {type(value).__name__}")


def from_av(av: dict[str, Any]) -> Any:
    if "S" in av:
        return av["S"]
    if "N" in av:
        return int(av["N"])
    if "BOOL" in av:
        return bool(av["BOOL"])
    if "L" in av:
        return [from_av(v) for v in av["L"]]
    if "NULL" in av:
        return None
    raise TypeError(f"unexpected DynamoDB attribute {sorted(av)}")


def to_item(item: Item) -> dict[str, Any]:
    return {k: to_av(v) for k, v in item.items() if v is not None}


def from_item(raw: dict[str, Any]) -> Item:
    return {k: from_av(v) for k, v in raw.items()}


def key(pk: str, sk: str) -> dict[str, Any]:
    return {"pk": {"S": pk}, "sk": {"S": sk}}


def item_size(item: Item) -> int:
    """DynamoDB's size of an item: attribute names plus values, in UTF-8 bytes."""
    size = 0
    for name, value in item.items():
        if value is None:
            continue
        size += len(name.encode()) + _value_size(value)
    return size


def _value_size(value: Any) -> int:
    if isinstance(value, bool):
        return 1
    if isinstance(value, int):
        return len(str(value)) // 2 + 2
    if isinstance(value, str):
        return len(value.encode())
    if isinstance(value, list):
        return 3 + sum(1 + _value_size(v) for v in value)
    return len(str(value).encode())


# --- runs: a small head and a body -------------------------------------------------------


def error_doc(error: ErrorInfo | None) -> dict[str, Any] | None:
    return error.to_dict() if error is not None else None


def error_of(doc: dict[str, Any] | None) -> ErrorInfo | None:
    return ErrorInfo.from_dict(doc) if doc is not None else None


def runnable_at(run: RunRecord) -> datetime | None:
    """When the run becomes claimable without a wake-up; None keeps it out of ``g1``."""
    if run.status == RunStatus.PENDING:
        return _EPOCH
    if run.status == RunStatus.SUSPENDED:
        return run.wake_at
    if run.status == RunStatus.RUNNING:
        return run.lease_expires_at
    return None


def head_item(run: RunRecord, *, wake: bool, hseq: int, writes: int, ver: int) -> Item:
    """The head of ``run``; ``wake`` is the wake-up flag, ``hseq`` the last history seq,
    ``writes`` the journal write counter, ``ver`` the optimistic-lock version."""
    due = runnable_at(run)
    return {
        "pk": run_pk(run.run_id),
        "sk": HEAD,
        "wf": run.workflow,
        "wv": run.version,
        "st": str(run.status),
        "cr": iso(run.created_at),
        "up": iso(run.updated_at),
        "pa": run.parent_run_id,
        "q": run.queue,
        "pr": run.priority,
        "wa": iso(run.wake_at),
        "ow": run.lease_owner,
        "ep": run.lease_epoch,
        "lx": iso(run.lease_expires_at),
        "cx": run.cancel_requested,
        "tr": run.trace_id,
        "tn": run.tenant,
        "wk": wake,
        "hs": hseq,
        "wc": writes,
        "ver": ver,
        # Runnable runs by when; ended ones (for retention) by when they last changed.
        "g1pk": RUNNABLE if due is not None else ENDED if run.status.terminal else None,
        "g1sk": f"{time_key(due if due is not None else run.updated_at)}#{run.run_id}"
        if due is not None or run.status.terminal
        else None,
        "g2pk": RUNS,
        "g2sk": f"{time_key(run.created_at)}#{run.run_id}",
    }


def body_doc(run: RunRecord) -> dict[str, Any]:
    return {
        "input": run.input,
        "module": run.module,
        "result": run.result,
        "error": error_doc(run.error),
        "parent_op_id": run.parent_op_id,
        "state": run.state,
        "idempotency_key": run.idempotency_key,
        "origin": run.origin.to_dict() if run.origin is not None else None,
    }


def run_of(head: Item, body: dict[str, Any]) -> RunRecord:
    origin = body.get("origin")
    return RunRecord(
        run_id=head["pk"][2:],
        workflow=head["wf"],
        version=head["wv"],
        status=RunStatus(head["st"]),
        input=body["input"],
        created_at=datetime.fromisoformat(head["cr"]),
        updated_at=datetime.fromisoformat(head["up"]),
        module=body.get("module"),
        result=body.get("result"),
        error=error_of(body.get("error")),
        parent_run_id=head.get("pa"),
        parent_op_id=body.get("parent_op_id"),
        queue=head["q"],
        priority=head["pr"],
        wake_at=parse(head.get("wa")),
        lease_owner=head.get("ow"),
        lease_epoch=head["ep"],
        lease_expires_at=parse(head.get("lx")),
        cancel_requested=bool(head.get("cx", False)),
        state=body.get("state") or {},
        trace_id=head.get("tr"),
        idempotency_key=body.get("idempotency_key"),
        origin=RunOrigin.from_dict(origin) if origin is not None else None,
        tenant=head.get("tn", DEFAULT_TENANT),
    )


# --- journal, history, callbacks ---------------------------------------------------------


def op_doc(op: OpRecord) -> dict[str, Any]:
    """The parts of a record a later write may change (the rest keeps its first value)."""
    return {
        "status": str(op.status),
        "attempt": op.attempt,
        "result": op.result,
        "error": error_doc(op.error),
        "started_at": iso(op.started_at),
        "ended_at": iso(op.ended_at),
        "data": op.data or {},
    }


def op_of(op_id: str, kind: str, name: str, parent: str | None, doc: dict[str, Any]) -> OpRecord:
    return OpRecord(
        op_id=op_id,
        type=OpType(kind),
        name=name,
        status=OpStatus(doc["status"]),
        parent_id=parent,
        attempt=doc["attempt"],
        result=doc.get("result"),
        error=error_of(doc.get("error")),
        started_at=parse(doc.get("started_at")),
        ended_at=parse(doc.get("ended_at")),
        data=doc.get("data") or {},
    )


def page_doc(op: OpRecord) -> dict[str, Any]:
    return {
        **op_doc(op),
        "op_id": op.op_id,
        "type": str(op.type),
        "name": op.name,
        "parent_id": op.parent_id,
    }


def event_doc(event: HistoryEvent) -> dict[str, Any]:
    doc: dict[str, Any] = {"type": str(event.type), "ts": iso(event.timestamp)}
    for name in ("op_id", "parent_id", "name"):
        value = getattr(event, name)
        if value is not None:
            doc[name] = value
    if event.details:
        # As the SQL stores do: what JSON cannot hold is kept as its text.
        doc["details"] = json.loads(json.dumps(event.details, default=str))
    return doc


def event_of(seq: int, doc: dict[str, Any]) -> HistoryEvent:
    return HistoryEvent(
        seq=seq,
        type=HistoryEventType(doc["type"]),
        timestamp=datetime.fromisoformat(doc["ts"]),
        op_id=doc.get("op_id"),
        parent_id=doc.get("parent_id"),
        name=doc.get("name"),
        details=doc.get("details") or {},
    )


def callback_doc(cb: CallbackRecord) -> dict[str, Any]:
    return {
        "op_id": cb.op_id,
        "kind": str(cb.kind),
        "created_at": iso(cb.created_at),
        "expires_at": iso(cb.expires_at),
        "heartbeat_timeout_s": cb.heartbeat_timeout_s,
        "heartbeat_at": iso(cb.heartbeat_at),
        "pattern": cb.pattern,
        "payload_schema": cb.payload_schema,
        "result": cb.result,
        "error": error_doc(cb.error),
        "completed_at": iso(cb.completed_at),
    }


def callback_item(cb: CallbackRecord, *, ver: int) -> Item:
    waiting = cb.kind == CallbackKind.EVENT and cb.status == CallbackStatus.PENDING
    return {
        "pk": run_pk(cb.run_id),
        "sk": callback_sk(cb.callback_id),
        "st": str(cb.status),
        "d": dumps(callback_doc(cb)),
        "ver": ver,
        "g1pk": WAITING if waiting else None,
        "g1sk": f"{time_key(cb.created_at)}#{cb.callback_id}" if waiting else None,
    }


def callback_of(item: Item) -> CallbackRecord:
    doc = json.loads(item["d"])
    return CallbackRecord(
        callback_id=item["sk"][2:],
        run_id=item["pk"][2:],
        op_id=doc["op_id"],
        kind=CallbackKind(doc["kind"]),
        status=CallbackStatus(item["st"]),
        created_at=datetime.fromisoformat(doc["created_at"]),
        expires_at=parse(doc.get("expires_at")),
        heartbeat_timeout_s=doc.get("heartbeat_timeout_s"),
        heartbeat_at=parse(doc.get("heartbeat_at")),
        pattern=doc.get("pattern"),
        payload_schema=doc.get("payload_schema"),
        result=doc.get("result"),
        error=error_of(doc.get("error")),
        completed_at=parse(doc.get("completed_at")),
    )


# --- outbox, rules, queues, keys -----------------------------------------------------------


def outbox_of(item: Item) -> OutboxEntry:
    return OutboxEntry(
        seq=int(item["sk"]),
        event=json.loads(item["d"]),
        published_at=datetime.fromisoformat(item["at"]),
        delivered_at=parse(item.get("dl")),
    )


def rule_item(rule: Rule) -> Item:
    doc = {
        "pattern": rule.pattern,
        "target": rule.target,
        "params": rule.params,
        "enabled": rule.enabled,
        "created_at": iso(rule.created_at),
        "tenant": rule.tenant,
    }
    return {"pk": RULES, "sk": rule.name, "d": dumps(doc)}


def rule_of(item: Item) -> Rule:
    doc = json.loads(item["d"])
    return Rule(
        name=item["sk"],
        pattern=doc["pattern"],
        target=doc["target"],
        params=doc.get("params") or {},
        enabled=bool(doc.get("enabled", True)),
        created_at=parse(doc.get("created_at")),
        tenant=doc.get("tenant", DEFAULT_TENANT),
    )


def queue_doc(config: QueueConfig) -> dict[str, Any]:
    return {
        "concurrency": config.concurrency,
        "rate_limit": config.rate_limit,
        "rate_period": config.rate_period.total_seconds(),
    }


def queue_of(item: Item) -> QueueConfig:
    from datetime import timedelta

    doc = json.loads(item["d"])
    return QueueConfig(
        name=item["sk"],
        concurrency=doc.get("concurrency"),
        rate_limit=doc.get("rate_limit"),
        rate_period=timedelta(seconds=doc.get("rate_period", 1.0)),
    )


def api_key_item(key_record: ApiKeyRecord) -> Item:
    doc = {
        "name": key_record.name,
        "tenant": key_record.tenant,
        "scopes": list(key_record.scopes),
        "secret_hash": key_record.secret_hash,
        "created_at": iso(key_record.created_at),
        "revoked_at": iso(key_record.revoked_at),
    }
    return {"pk": APIKEYS, "sk": key_record.key_id, "d": dumps(doc)}


def api_key_of(item: Item) -> ApiKeyRecord:
    doc = json.loads(item["d"])
    return ApiKeyRecord(
        key_id=item["sk"],
        name=doc["name"],
        tenant=doc["tenant"],
        scopes=tuple(doc.get("scopes") or ()),
        secret_hash=doc["secret_hash"],
        created_at=datetime.fromisoformat(doc["created_at"]),
        revoked_at=parse(doc.get("revoked_at")),
    )


def revoked(key_record: ApiKeyRecord, now: datetime) -> ApiKeyRecord:
    return replace(key_record, revoked_at=now)
