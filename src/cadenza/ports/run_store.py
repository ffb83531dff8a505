"""The run store port: everything durable about runs, behind one small async interface.

The engine never talks to a database directly. It reads a run's journal and callbacks when
an activation starts and hands the store one :class:`Checkpoint` at a time; the store must
apply a checkpoint atomically (all of it or nothing), and only while the writer still holds
the run's lease (fencing by ``lease_epoch``).

Time is always passed in (``now``), never read by the store, so fake clocks work and so
every adapter agrees on what "due" means.
"""

from __future__ import annotations

import asyncio
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from cadenza.errors import ErrorInfo
from cadenza.history import HistoryEvent
from cadenza.journal import OpRecord


class RunStatus(StrEnum):
    PENDING = "PENDING"  # runnable now
    RUNNING = "RUNNING"  # a worker holds the lease
    SUSPENDED = "SUSPENDED"  # waiting for a timer, a callback, an event or a child run
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        return self in (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED)


class CallbackKind(StrEnum):
    CALLBACK = "callback"  # completed by a token holder (human approval, webhook)
    EVENT = "event"  # completed by the first event matching ``pattern``
    INVOKE = "invoke"  # completed when the child run ``callback_id`` ends


class CallbackStatus(StrEnum):
    PENDING = "PENDING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    TIMED_OUT = "TIMED_OUT"


@dataclass(frozen=True, slots=True)
class RunOrigin:
    """Where a forked run comes from: the run whose journal it copied, the operation from
    which it ran live, and the agent state document it started from, when one was given."""

    run_id: str
    op_id: str
    state: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"run_id": self.run_id, "op_id": self.op_id}
        if self.state is not None:
            data["state"] = self.state
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunOrigin:
        return cls(str(data["run_id"]), str(data["op_id"]), data.get("state"))


@dataclass(frozen=True, slots=True)
class RunRecord:
    run_id: str
    workflow: str
    version: str
    status: RunStatus
    input: str  # JSON text (or a claim-check reference)
    created_at: datetime
    updated_at: datetime
    module: str | None = None  # import path of the workflow, so any process can resume it
    result: str | None = None
    error: ErrorInfo | None = None
    parent_run_id: str | None = None
    parent_op_id: str | None = None
    queue: str = "default"
    priority: int = 0
    wake_at: datetime | None = None
    lease_owner: str | None = None
    lease_epoch: int = 0
    lease_expires_at: datetime | None = None
    cancel_requested: bool = False
    state: dict[str, Any] = field(default_factory=dict)
    trace_id: str | None = None
    idempotency_key: str | None = None
    origin: RunOrigin | None = None  # set on a fork

    def evolve(self, **changes: Any) -> RunRecord:
        return replace(self, **changes)


@dataclass(frozen=True, slots=True)
class CallbackRecord:
    callback_id: str
    run_id: str
    op_id: str
    kind: CallbackKind
    status: CallbackStatus
    created_at: datetime
    expires_at: datetime | None = None
    heartbeat_timeout_s: float | None = None
    heartbeat_at: datetime | None = None
    pattern: dict[str, Any] | None = None  # for EVENT callbacks
    # JSON Schema the payload must satisfy, so that any process can validate it
    payload_schema: dict[str, Any] | None = None
    result: str | None = None
    error: ErrorInfo | None = None
    completed_at: datetime | None = None

    def deadline(self) -> datetime | None:
        """When the callback times out if nothing completes or heartbeats it."""
        candidates = [t for t in (self.expires_at,) if t is not None]
        if self.heartbeat_timeout_s is not None:
            since = self.heartbeat_at or self.created_at
            candidates.append(since + timedelta(seconds=self.heartbeat_timeout_s))
        return min(candidates) if candidates else None


@dataclass(frozen=True, slots=True)
class CallbackResolution:
    """Complete a callback from inside a checkpoint, if and only if it is still PENDING."""

    callback_id: str
    status: CallbackStatus
    result: str | None = None
    error: ErrorInfo | None = None


@dataclass(frozen=True, slots=True)
class RunOutcome:
    status: RunStatus  # SUCCEEDED, FAILED or CANCELLED
    result: str | None = None
    error: ErrorInfo | None = None


@dataclass(slots=True)
class Checkpoint:
    """Everything one step of progress of a run writes, committed atomically.

    ``expected_epoch`` fences the write: the store rejects it with LeaseLost when another
    worker has claimed the run since. ``resolutions`` are conditional: if one callback is no
    longer PENDING the whole checkpoint is rejected with CheckpointConflict.
    """

    run_id: str
    owner: str
    expected_epoch: int
    now: datetime
    ops: list[OpRecord] = field(default_factory=list)
    history: list[HistoryEvent] = field(default_factory=list)
    state: dict[str, Any] | None = None
    callbacks: list[CallbackRecord] = field(default_factory=list)
    resolutions: list[CallbackResolution] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    children: list[RunRecord] = field(default_factory=list)
    outcome: RunOutcome | None = None
    suspend: bool = False
    wake_at: datetime | None = None

    @property
    def releases(self) -> bool:
        return self.outcome is not None or self.suspend


@dataclass(frozen=True, slots=True)
class Redrive:
    """Put one ended run back to work (``redrive_runs``), as the engine decided.

    The run must still be FAILED or CANCELLED at ``expected_epoch``, so that a redrive
    planned from a journal that has changed since is refused rather than applied.
    ``drop`` deletes journal records (failed outcomes), ``reset`` rewrites records (an
    invocation waiting again for its redriven child), ``reopen`` sets callbacks back to
    PENDING. The run becomes PENDING with no result, error, lease or cancel request, and
    ``event`` is appended to its history. ``version`` and ``module`` move it to another
    version of its workflow; ``state`` replaces its state document.
    """

    run_id: str
    expected_epoch: int
    event: HistoryEvent
    drop: list[str] = field(default_factory=list)
    reset: list[OpRecord] = field(default_factory=list)
    reopen: list[str] = field(default_factory=list)
    version: str | None = None
    module: str | None = None
    state: dict[str, Any] | None = None  # replaces the state document when given


@dataclass(frozen=True, slots=True)
class CommitResult:
    cancel_requested: bool = False


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    seq: int
    event: dict[str, Any]
    published_at: datetime
    delivered_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Rule:
    """Deliver events matching ``pattern`` to a target.

    Targets: ``start_workflow`` (params: workflow, version?, module?, input: "event" |
    "detail"), ``complete_callback`` (params: token_path, a dotted path in the event to the
    callback token; outcome: succeed | fail).
    """

    name: str
    pattern: dict[str, Any]
    target: str
    params: dict[str, Any] = field(default_factory=dict)
    enabled: bool = True
    created_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class QueueConfig:
    """Cluster-wide flow control for the runs of one queue, enforced by ``claim_runs``.

    ``concurrency`` caps how many runs of the queue hold a live lease at once, over all
    workers together. ``rate_limit`` caps how many claims of the queue's runs start per
    ``rate_period``: a token bucket that holds up to ``rate_limit`` tokens and refills at
    ``rate_limit`` per ``rate_period`` (so bursts up to the limit, that rate sustained).
    Every claim of a run counts: its first activation and each resumption. ``None`` lifts a
    limit, ``concurrency=0`` pauses the queue; a queue without a config has no limits.
    """

    name: str
    concurrency: int | None = None
    rate_limit: int | None = None
    rate_period: timedelta = timedelta(seconds=1)

    @property
    def limited(self) -> bool:
        return self.concurrency is not None or self.rate_limit is not None


def refill_tokens(
    config: QueueConfig, tokens: float | None, refilled_at: datetime | None, now: datetime
) -> float:
    """The tokens in a queue's rate bucket at ``now`` (the arithmetic every store shares).

    ``tokens`` and ``refilled_at`` are what the store kept after the last claim; None means
    the bucket was never drawn from, so it is full.
    """
    if config.rate_limit is None:
        return math.inf
    if tokens is None or refilled_at is None:
        return float(config.rate_limit)
    elapsed = max((now - refilled_at).total_seconds(), 0.0)
    period = max(config.rate_period.total_seconds(), 1e-9)
    return min(float(config.rate_limit), tokens + elapsed * config.rate_limit / period)


class RunStore(ABC):
    """The port every run-store adapter implements; see docs/architecture.md."""

    url: str

    async def open(self) -> None:  # noqa: B027 - optional hook
        """Create or migrate the schema. Idempotent."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections and threads."""

    # --- runs ---------------------------------------------------------------------------

    @abstractmethod
    async def create_run(self, run: RunRecord, started: HistoryEvent) -> RunRecord:
        """Insert a new run with its ExecutionStarted event.

        When ``run.idempotency_key`` names an existing run, return that run instead. A run
        id that is taken is refused with :class:`RunAlreadyExists`.
        """

    @abstractmethod
    async def get_run(self, run_id: str) -> RunRecord:
        """The run, or RunNotFound."""

    @abstractmethod
    async def list_runs(
        self,
        *,
        status: RunStatus | None = None,
        workflow: str | None = None,
        parent_run_id: str | None = None,
        limit: int = 50,
    ) -> list[RunRecord]:
        """Newest first."""

    @abstractmethod
    async def claim_runs(
        self,
        *,
        owner: str,
        now: datetime,
        lease_until: datetime,
        limit: int,
        workflows: Sequence[tuple[str, str]] | None = None,
        queues: Sequence[str] | None = None,
        run_id: str | None = None,
        trace_id: str | None = None,
    ) -> list[RunRecord]:
        """Lease up to ``limit`` runnable runs: PENDING, SUSPENDED and due, or RUNNING with
        an expired lease. Each claim increments ``lease_epoch`` and clears pending wake-ups.
        ``workflows`` limits claims to the (name, version) pairs this worker can execute;
        ``run_id`` to one run; ``trace_id`` to the runs of one trace (a run, the children
        it invokes and the runs that rules start from its events).

        Higher ``priority`` first, then oldest first, and returned in that order. A queue's
        :class:`QueueConfig` holds across every claimer: a claim never takes a queue past
        its ``concurrency`` (runs RUNNING under an unexpired lease) nor draws more than its
        rate bucket holds."""

    @abstractmethod
    async def renew_lease(
        self, run_id: str, *, owner: str, epoch: int, lease_until: datetime
    ) -> bool:
        """Extend a lease; False when it was lost."""

    @abstractmethod
    async def release_lease(self, run_id: str, *, owner: str, epoch: int) -> None:
        """Hand a run back (graceful shutdown): it becomes PENDING for another worker."""

    @abstractmethod
    async def next_wake_at(
        self,
        *,
        workflows: Sequence[tuple[str, str]] | None = None,
        queues: Sequence[str] | None = None,
    ) -> datetime | None:
        """The earliest time any run becomes runnable, among the runs of ``workflows`` and
        ``queues`` when given (a time in the past, for PENDING runs)."""

    async def wait_for_work(self, max_wait: float) -> None:
        """Return when something may have become runnable, or after ``max_wait`` seconds.

        Idle workers wait here between claims. This default just sleeps; a store that can
        hear about new work (PostgreSQL's LISTEN/NOTIFY) returns as soon as it does, so a
        run started or woken on one machine is picked up at once on another.
        """
        await asyncio.sleep(max(max_wait, 0.0))

    @abstractmethod
    async def request_cancel(self, run_id: str, *, now: datetime) -> RunRecord:
        """Mark a run cancelled: at once when no worker holds it, else at its next
        checkpoint. Cancels its open child runs too. RunStateError when already ended."""

    @abstractmethod
    async def redrive_runs(self, redrives: Sequence[Redrive], *, now: datetime) -> list[RunRecord]:
        """Apply every :class:`Redrive` in one transaction and return the runs, now PENDING.

        RunStateError (and nothing written) when one of the runs is no longer ended at the
        epoch its redrive was planned against; RunNotFound when one does not exist.
        """

    @abstractmethod
    async def fork_run(
        self, run: RunRecord, events: Sequence[HistoryEvent], journal: Sequence[OpRecord]
    ) -> RunRecord:
        """Insert a new run together with its first history events and the journal records
        it starts from, atomically."""

    # --- queues -------------------------------------------------------------------------

    @abstractmethod
    async def put_queue(self, config: QueueConfig) -> None:
        """Create or replace the flow control of a queue."""

    @abstractmethod
    async def list_queues(self) -> list[QueueConfig]:
        """The queues that have a config, by name."""

    # --- activations --------------------------------------------------------------------

    @abstractmethod
    async def load_journal(self, run_id: str) -> list[OpRecord]:
        """All operation records of a run."""

    @abstractmethod
    async def load_callbacks(self, run_id: str) -> list[CallbackRecord]:
        """All callbacks of a run."""

    async def load_activation(self, run_id: str) -> tuple[list[OpRecord], list[CallbackRecord]]:
        """Journal and callbacks together; adapters may read both in one round trip."""
        return await self.load_journal(run_id), await self.load_callbacks(run_id)

    @abstractmethod
    async def commit(self, checkpoint: Checkpoint) -> CommitResult:
        """Apply a checkpoint atomically. LeaseLost when the lease epoch moved on;
        CheckpointConflict when a resolution found its callback no longer PENDING.

        On ``outcome`` the run ends and, when it has a parent, the parent's INVOKE callback
        is resolved and the parent woken. On ``suspend`` the run becomes SUSPENDED until
        ``wake_at`` — or PENDING, if a wake-up arrived since it was claimed.
        """

    @abstractmethod
    async def history(self, run_id: str, *, after_seq: int = 0) -> list[HistoryEvent]:
        """History events in order."""

    # --- callbacks ----------------------------------------------------------------------

    @abstractmethod
    async def get_callback(self, callback_id: str) -> CallbackRecord:
        """The callback, or CallbackNotFound."""

    @abstractmethod
    async def complete_callback(self, resolution: CallbackResolution, *, now: datetime) -> bool:
        """Resolve a PENDING callback and wake its run. False when it was not PENDING."""

    @abstractmethod
    async def heartbeat_callback(self, callback_id: str, *, now: datetime) -> bool:
        """Record a heartbeat on a PENDING callback. False when it was not PENDING."""

    @abstractmethod
    async def open_event_waiters(self) -> list[CallbackRecord]:
        """PENDING callbacks of kind EVENT, for matching against published events."""

    # --- events -------------------------------------------------------------------------

    @abstractmethod
    async def publish(self, events: Sequence[dict[str, Any]], *, now: datetime) -> None:
        """Put events from outside a run into the outbox."""

    @abstractmethod
    async def fetch_outbox(self, *, limit: int) -> list[OutboxEntry]:
        """Undelivered events, oldest first."""

    @abstractmethod
    async def mark_delivered(self, seqs: Sequence[int], *, now: datetime) -> None:
        """Mark outbox entries delivered."""

    @abstractmethod
    async def list_events(self, *, limit: int = 50) -> list[OutboxEntry]:
        """Recent events, newest first."""

    @abstractmethod
    async def put_rule(self, rule: Rule) -> None:
        """Create or replace a rule."""

    @abstractmethod
    async def list_rules(self) -> list[Rule]:
        """All rules."""

    @abstractmethod
    async def delete_rule(self, name: str) -> bool:
        """Delete a rule; False when there was none."""
