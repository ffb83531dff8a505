"""The execution history: an append-only audit trail of everything that happened to a run.

The journal is what replay needs (the latest outcome of each operation); the history is
what people read (every start, retry, wait and completion, in order, with timestamps).
Event names follow AWS Lambda durable executions so the two read alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class HistoryEventType(StrEnum):
    EXECUTION_STARTED = "ExecutionStarted"
    EXECUTION_SUCCEEDED = "ExecutionSucceeded"
    EXECUTION_FAILED = "ExecutionFailed"
    EXECUTION_CANCELLED = "ExecutionStopped"
    EXECUTION_REDRIVEN = "ExecutionRedriven"  # an ended run put back to work (retry)
    EXECUTION_FORKED = "ExecutionForked"  # a run started from another run's journal
    EXECUTION_CONTINUED_AS_NEW = "ExecutionContinuedAsNew"  # ended; a new run goes on
    INVOCATION_COMPLETED = "InvocationCompleted"
    STEP_STARTED = "StepStarted"
    STEP_SUCCEEDED = "StepSucceeded"
    STEP_FAILED = "StepFailed"
    WAIT_STARTED = "WaitStarted"
    WAIT_SUCCEEDED = "WaitSucceeded"
    CALLBACK_STARTED = "CallbackStarted"
    CALLBACK_SUCCEEDED = "CallbackSucceeded"
    CALLBACK_FAILED = "CallbackFailed"
    CALLBACK_TIMED_OUT = "CallbackTimedOut"
    CONTEXT_STARTED = "ContextStarted"
    CONTEXT_SUCCEEDED = "ContextSucceeded"
    CONTEXT_FAILED = "ContextFailed"
    INVOKE_STARTED = "ChainedInvokeStarted"
    INVOKE_SUCCEEDED = "ChainedInvokeSucceeded"
    INVOKE_FAILED = "ChainedInvokeFailed"
    EVENT_EMITTED = "EventEmitted"
    EVENT_WAIT_STARTED = "EventWaitStarted"
    EVENT_WAIT_SUCCEEDED = "EventWaitSucceeded"
    EVENT_WAIT_TIMED_OUT = "EventWaitTimedOut"
    # The audit trail: someone outside the run asked for something (started, cancelled,
    # retried or forked it, completed one of its callbacks); details say who and what.
    ACTION_REQUESTED = "ActionRequested"
    # Older events of a long-lived run folded into one: counts by type, the seqs it covers.
    HISTORY_COMPACTED = "HistoryCompacted"


@dataclass(frozen=True, slots=True)
class HistoryEvent:
    """One line of a run's history. ``seq`` orders the events of a run."""

    seq: int
    type: HistoryEventType
    timestamp: datetime
    op_id: str | None = None
    parent_id: str | None = None
    name: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "seq": self.seq,
            "type": str(self.type),
            "timestamp": self.timestamp.isoformat(),
        }
        for key in ("op_id", "parent_id", "name"):
            value = getattr(self, key)
            if value is not None:
                data[key] = value
        if self.details:
            data["details"] = self.details
        return data
