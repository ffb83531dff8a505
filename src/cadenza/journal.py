"""The journal: one record per durable operation of a run, keyed by a deterministic id.

An operation id is its parent's id plus its position among the parent's operations
("3", "3.1", "3.1.2"), so the same code asks for the same ids in the same order on every
replay. A record holds the outcome once there is one; replay returns it instead of running
the operation again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from cadenza.errors import ErrorInfo


class OpType(StrEnum):
    STEP = "step"
    WAIT = "wait"
    CALLBACK = "callback"
    CONTEXT = "context"
    MAP = "map"
    PARALLEL = "parallel"
    INVOKE = "invoke"
    CONDITION = "condition"
    EMIT = "emit"
    EVENT_WAIT = "event_wait"
    NOW = "now"


class OpStatus(StrEnum):
    STARTED = "STARTED"  # in flight, or (steps) an at-most-once attempt whose start is recorded
    PENDING = "PENDING"  # waiting: a timer, a callback, or (steps) the backoff before a retry
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"

    @property
    def terminal(self) -> bool:
        return self in (OpStatus.SUCCEEDED, OpStatus.FAILED)


@dataclass(frozen=True, slots=True)
class OpRecord:
    """What the journal knows of one operation.

    ``result`` is the stored text of the outcome: its JSON, or a claim-check reference
    (see ``cadenza.serde``), so read it through the codec, never with ``json.loads``;
    ``data`` keeps what the operation needs to resume: a wait's deadline, a callback's id,
    the attempt count and next attempt time of a step being retried.
    """

    op_id: str
    type: OpType
    name: str
    status: OpStatus
    parent_id: str | None = None
    attempt: int = 0
    result: str | None = None
    error: ErrorInfo | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def evolve(self, **changes: Any) -> OpRecord:
        # dataclasses.replace inspects the fields on every call; a step evolves its record
        # twice, so spell the copy out.
        values = {name: getattr(self, name) for name in _FIELDS}
        values.update(changes)
        return OpRecord(**values)


_FIELDS = tuple(OpRecord.__slots__)


def parent_of(op_id: str) -> str | None:
    head, sep, _ = op_id.rpartition(".")
    return head if sep else None
