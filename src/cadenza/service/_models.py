"""The wire formats of the API: what requests carry and responses return."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from cadenza.engine.engine import PendingCallback
from cadenza.history import HistoryEvent
from cadenza.ports.run_store import QueueConfig, QueueStats, Rule, RunRecord, RunStatus

__all__ = [
    "CallbackDone",
    "EventIn",
    "EventOut",
    "FailCallback",
    "ForkRun",
    "HistoryEntry",
    "QueueIn",
    "QueueOut",
    "RetryRun",
    "RuleIn",
    "RuleOut",
    "RunDetail",
    "RunList",
    "RunResult",
    "RunSummary",
    "StartRun",
    "SucceedCallback",
    "WaitOut",
    "WorkflowOut",
]

#: Names that go into URLs: run ids, rule and queue names.
NAME = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"


class RequestModel(BaseModel):
    """A request body: unknown fields are refused, not ignored."""

    model_config = ConfigDict(extra="forbid")


class StartRun(RequestModel):
    """Start a run of a registered workflow. The ``Idempotency-Key`` header starts at most
    one run per key (per tenant): a repeat with the same input returns that run."""

    workflow: str = Field(min_length=1, max_length=200, description="name, or MODULE:WORKFLOW")
    version: str | None = Field(default=None, max_length=50)
    input: Any = None
    run_id: str | None = Field(default=None, pattern=NAME)
    queue: str | None = Field(default=None, pattern=NAME)
    priority: int = Field(default=0, ge=-1000, le=1000)


class RetryRun(RequestModel):
    version: str | None = Field(default=None, max_length=50)


class ForkRun(RequestModel):
    from_op: str = Field(min_length=1, max_length=200)
    input: Any = Field(default=None, description="omit to keep the source run's input")
    state: dict[str, Any] | None = None
    version: str | None = Field(default=None, max_length=50)


class SucceedCallback(RequestModel):
    payload: Any = None


class FailCallback(RequestModel):
    error: str = Field(default="CallbackFailed", min_length=1, max_length=200)
    message: str = Field(default="", max_length=10_000)


class HeartbeatIn(RequestModel):
    pass


class EventIn(RequestModel):
    detail_type: str = Field(min_length=1, max_length=256)
    detail: dict[str, Any] = Field(default_factory=dict)
    source: str = Field(default="cadenza.api", min_length=1, max_length=256)
    id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/@-]{0,127}$")


class RuleIn(RequestModel):
    pattern: dict[str, Any]
    target: str = Field(description="start_workflow or complete_callback")
    params: dict[str, Any] = Field(default_factory=dict)
    enabled: bool = True


class QueueIn(RequestModel):
    concurrency: int | None = Field(default=None, ge=0)
    rate_limit: int | None = Field(default=None, ge=1)
    rate_period_seconds: float = Field(default=1.0, gt=0, le=86_400)


# --- responses -------------------------------------------------------------------------


class ErrorOut(BaseModel):
    type: str
    message: str


class RunSummary(BaseModel):
    run_id: str
    workflow: str
    version: str
    status: RunStatus
    tenant: str
    created_at: datetime
    updated_at: datetime
    parent_run_id: str | None = None
    forked_from: dict[str, str] | None = None
    wake_at: datetime | None = None
    error: ErrorOut | None = None
    result: Any = Field(default=None, description="in lists only with ?include_result=true")

    @classmethod
    def of(cls, run: RunRecord) -> RunSummary:
        return cls(
            run_id=run.run_id,
            workflow=run.workflow,
            version=run.version,
            status=run.status,
            tenant=run.tenant,
            created_at=run.created_at,
            updated_at=run.updated_at,
            parent_run_id=run.parent_run_id,
            forked_from=(
                {"run_id": run.origin.run_id, "op_id": run.origin.op_id} if run.origin else None
            ),
            wake_at=run.wake_at if run.status == RunStatus.SUSPENDED else None,
            error=ErrorOut(type=run.error.type, message=run.error.message) if run.error else None,
        )


class WaitOut(BaseModel):
    """Something the run waits on: a callback (with the token that completes it) or an
    event matching ``pattern``."""

    run_id: str
    op_id: str
    name: str
    kind: str
    expires_at: datetime | None = None
    token: str | None = None
    payload_schema: dict[str, Any] | None = None
    pattern: dict[str, Any] | None = None

    @classmethod
    def of(cls, wait: PendingCallback) -> WaitOut:
        return cls(**{**wait.as_dict(), "kind": str(wait.kind)})


class RunDetail(RunSummary):
    input: Any = None
    steps: dict[str, int] = Field(default_factory=dict)
    waiting_for: list[WaitOut] = Field(default_factory=list)
    children: list[RunSummary] = Field(default_factory=list)
    agent_status: Any = None
    usage: dict[str, Any] | None = Field(default=None, description="model calls and cost")


class RunList(BaseModel):
    runs: list[RunSummary]
    next_cursor: str | None = Field(
        default=None, description="pass as ?cursor= for the next page; null on the last"
    )


class RunResult(BaseModel):
    run_id: str
    status: RunStatus
    result: Any = None


class HistoryEntry(BaseModel):
    seq: int
    type: str
    timestamp: datetime
    op_id: str | None = None
    parent_id: str | None = None
    name: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def of(cls, event: HistoryEvent) -> HistoryEntry:
        return cls(
            seq=event.seq,
            type=str(event.type),
            timestamp=event.timestamp,
            op_id=event.op_id,
            parent_id=event.parent_id,
            name=event.name,
            details=json.loads(json.dumps(event.details, default=str)),
        )


class CallbackDone(BaseModel):
    run_id: str
    op_id: str
    callback: str = Field(description="succeeded, failed or heartbeat")


class EventOut(BaseModel):
    """An event as EventBridge shapes it (``detail-type``, ``source``, ``detail``, …)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    version: str = "0"
    id: str
    detail_type: str = Field(alias="detail-type")
    source: str
    account: str = "local"
    time: str
    region: str = "local"
    resources: list[str] = Field(default_factory=list)
    detail: dict[str, Any] = Field(default_factory=dict)
    delivered: bool | None = None

    @classmethod
    def of(cls, event: dict[str, Any], *, delivered: bool | None = None) -> EventOut:
        data = {**event}
        if delivered is not None:
            data["delivered"] = delivered
        return cls.model_validate(data)


class RuleOut(BaseModel):
    name: str
    pattern: dict[str, Any]
    target: str
    params: dict[str, Any]
    enabled: bool
    created_at: datetime | None = None

    @classmethod
    def of(cls, rule: Rule, name: str) -> RuleOut:
        return cls(
            name=name,
            pattern=rule.pattern,
            target=rule.target,
            params=rule.params,
            enabled=rule.enabled,
            created_at=rule.created_at,
        )


class QueueOut(BaseModel):
    name: str
    concurrency: int | None = None
    rate_limit: int | None = None
    rate_period_seconds: float

    @classmethod
    def of(cls, queue: QueueConfig) -> QueueOut:
        return cls(
            name=queue.name,
            concurrency=queue.concurrency,
            rate_limit=queue.rate_limit,
            rate_period_seconds=queue.rate_period.total_seconds(),
        )


class QueueStatusOut(QueueOut):
    """A queue's limits and what waits in it (``RunStore.queue_stats``), over all tenants."""

    runnable: int = Field(description="Runs that a worker could claim now")
    running: int = Field(description="Runs executing under a live lease")
    waiting: int = Field(description="Suspended runs whose wake time is still ahead")
    oldest_due_at: datetime | None = Field(
        description="When the oldest runnable run became claimable"
    )
    oldest_age_seconds: float = Field(
        description="How long the oldest runnable run has waited (0 when none waits)"
    )

    @classmethod
    def of_queue(cls, queue: QueueConfig, stats: QueueStats, now: datetime) -> QueueStatusOut:
        return cls(
            **QueueOut.of(queue).model_dump(),
            runnable=stats.runnable,
            running=stats.running,
            waiting=stats.waiting,
            oldest_due_at=stats.oldest_due_at,
            oldest_age_seconds=stats.oldest_age(now).total_seconds(),
        )


class WorkflowOut(BaseModel):
    name: str
    version: str
    description: str = ""
    queue: str
    module: str | None = None
    takes_input: bool
    input_schema: dict[str, Any] | None = None
    output_schema: dict[str, Any] | None = None
