"""Helpers shared by this folder's tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from cadenza.engine import _cancellation
from cadenza.history import HistoryEvent, HistoryEventType
from cadenza.journal import OpRecord, OpStatus, OpType
from cadenza.ports.run_store import (
    CallbackKind,
    CallbackRecord,
    CallbackResolution,
    CallbackStatus,
    Checkpoint,
    ChildRun,
    RunOutcome,
    RunRecord,
    RunStatus,
    RunStore,
    WakeUp,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def new_run(run_id: str, *, created: float = 0, **changes: Any) -> RunRecord:
    run = RunRecord(
        run_id=run_id,
        workflow="wf",
        version="1",
        status=RunStatus.PENDING,
        input='{"n": 1}',
        created_at=at(created),
        updated_at=at(created),
        module="tests.contract:wf",
        state={"agentId": run_id, "status": "INITIATED"},
        trace_id=f"trace-{run_id}",
    )
    return run.evolve(**changes)


def started(seconds: float = 0) -> HistoryEvent:
    return HistoryEvent(seq=0, type=HistoryEventType.EXECUTION_STARTED, timestamp=at(seconds))


async def create(store: RunStore, run_id: str, **changes: Any) -> RunRecord:
    return await store.create_run(new_run(run_id, **changes), started())


async def claim(
    store: RunStore,
    *,
    owner: str = "w1",
    now: float = 0,
    lease: float = 30,
    limit: int = 100,
    **filters: Any,
) -> list[RunRecord]:
    return await store.claim_runs(
        owner=owner, now=at(now), lease_until=at(now + lease), limit=limit, **filters
    )


async def claim_one(
    store: RunStore, run_id: str, *, owner: str = "w1", now: float = 0, lease: float = 30
) -> RunRecord:
    claimed = await claim(store, owner=owner, now=now, lease=lease, run_id=run_id)
    assert [r.run_id for r in claimed] == [run_id]
    return claimed[0]


def checkpoint(run: RunRecord, now: float = 1, **parts: Any) -> Checkpoint:
    assert run.lease_owner is not None
    return Checkpoint(run.run_id, run.lease_owner, run.lease_epoch, at(now), **parts)


def step(op_id: str, *, status: OpStatus = OpStatus.SUCCEEDED, result: str = '"ok"') -> OpRecord:
    return OpRecord(
        op_id,
        OpType.STEP,
        f"step-{op_id}",
        status,
        attempt=1,
        result=result if status == OpStatus.SUCCEEDED else None,
        started_at=at(1),
        ended_at=at(2) if status.terminal else None,
        data={"k": [1, 2]},
    )


def note(type: HistoryEventType, op_id: str | None = None, **details: Any) -> HistoryEvent:
    return HistoryEvent(seq=0, type=type, timestamp=at(1), op_id=op_id, details=details)


def callback(
    callback_id: str,
    run_id: str,
    *,
    kind: CallbackKind = CallbackKind.CALLBACK,
    created: float = 0,
    **changes: Any,
) -> CallbackRecord:
    record = CallbackRecord(
        callback_id=callback_id,
        run_id=run_id,
        op_id="1",
        kind=kind,
        status=CallbackStatus.PENDING,
        created_at=at(created),
        expires_at=at(3600),
    )
    return CallbackRecord(**{**_fields(record), **changes})


def _fields(record: CallbackRecord) -> dict[str, Any]:
    return {name: getattr(record, name) for name in record.__slots__}


def envelope(event_id: str, **detail: Any) -> dict[str, Any]:
    return {
        "version": "0",
        "id": event_id,
        "detail-type": "order.placed",
        "source": "tests",
        "time": "2026-01-01T00:00:00Z",
        "resources": [],
        "detail": detail,
    }


async def suspended(
    store: RunStore, run_id: str, *, wake_at: float | None = None, **changes: Any
) -> RunRecord:
    """A run that ran once and now waits (for ``wake_at``, or for a wake-up)."""
    await create(store, run_id, **changes)
    run = await claim_one(store, run_id)
    await store.commit(
        checkpoint(run, suspend=True, wake_at=at(wake_at) if wake_at is not None else None)
    )
    return await store.get_run(run_id)


def child(run: RunRecord, seconds: float = 1) -> ChildRun:
    """Start ``run`` from its parent's checkpoint, with the event the engine writes."""
    details = {"parent_run_id": run.parent_run_id, "parent_op_id": run.parent_op_id}
    event = HistoryEvent(
        seq=0, type=HistoryEventType.EXECUTION_STARTED, timestamp=at(seconds), details=details
    )
    return ChildRun(run, event)


def wake_parent(run: RunRecord, outcome: RunOutcome) -> WakeUp:
    """What the engine puts in the checkpoint that ends child ``run``."""
    assert run.parent_run_id is not None
    succeeded = outcome.status == RunStatus.SUCCEEDED
    status = CallbackStatus.SUCCEEDED if succeeded else CallbackStatus.FAILED
    resolution = CallbackResolution(run.run_id, status, outcome.result, outcome.error)
    return WakeUp(run.parent_run_id, resolution)


async def cancel_tree(store: RunStore, run_id: str, seconds: float) -> RunRecord:
    """Cancel a run and its open descendants as ``Engine.cancel`` plans it."""
    plan = await _cancellation.plan(store, run_id, at(seconds))
    return await store.request_cancel(plan, now=at(seconds))
