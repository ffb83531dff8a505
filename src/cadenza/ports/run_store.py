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
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from cadenza.errors import ErrorInfo
from cadenza.history import HistoryEvent
from cadenza.journal import OpRecord

# Queue and schedule records live in modules of their own; they are part of this port.
from cadenza.ports._queues import QueueConfig as QueueConfig
from cadenza.ports._queues import QueueStats as QueueStats
from cadenza.ports._queues import refill_tokens as refill_tokens
from cadenza.ports._schedules import CatchUp as CatchUp
from cadenza.ports._schedules import Overlap as Overlap
from cadenza.ports._schedules import Schedule as Schedule
from cadenza.ports._schedules import ScheduleFiring as ScheduleFiring

#: The tenant of runs started without one (the embedded shape, the CLI, older runs).
DEFAULT_TENANT = "default"


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
    # Who the run belongs to: the service shows a run only to keys of its tenant. Child
    # runs, forks and the runs rules start inherit it; the embedded shape uses "default".
    tenant: str = DEFAULT_TENANT

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
class WakeUp:
    """Resolve a callback of another run and wake that run, as the engine decided (the end
    of a child run reaching its parent's INVOKE callback).

    Conditional, because the other run moves on by itself: the store applies it only while
    ``resolution.callback_id`` is still PENDING and ``run_id`` has not ended, and skips it
    without error otherwise (a cancelled parent ends before its children). Applied, it
    resolves the callback, sets the run's wake-up flag and makes it PENDING if SUSPENDED.
    """

    run_id: str  # the run the callback belongs to, woken
    resolution: CallbackResolution


@dataclass(frozen=True, slots=True)
class ChildRun:
    """Start a run from inside a checkpoint: insert ``run`` and append ``started`` (its
    ExecutionStarted event) to its history. A run id or idempotency key that is taken
    refuses the whole checkpoint with a non-retryable StoreError."""

    run: RunRecord
    started: HistoryEvent


@dataclass(frozen=True, slots=True)
class Cancellation:
    """Cancel one run, as the engine planned it (``request_cancel``, or a cancelled run's
    checkpoint reaching its open children).

    The store applies it according to the run as it finds it, since a worker may claim or
    end the run meanwhile: an ended run is left alone; a run RUNNING under a lease that
    has not expired at the write's ``now`` only gets ``cancel_requested`` (its worker
    ends it at its next checkpoint); any other run becomes CANCELLED with ``error`` and
    ``cancel_requested``, loses its lease and wake time, gets ``event`` appended to its
    history, and ``wake_up`` (its parent's INVOKE callback) is applied as a WakeUp.
    """

    run_id: str
    error: ErrorInfo
    event: HistoryEvent  # ExecutionCancelled
    wake_up: WakeUp | None = None


@dataclass(frozen=True, slots=True)
class RunOutcome:
    status: RunStatus  # SUCCEEDED, FAILED or CANCELLED
    result: str | None = None
    error: ErrorInfo | None = None


@dataclass(slots=True)
class Checkpoint:
    """Everything one step of progress of a run writes, committed atomically.

    ``expected_epoch`` fences the write: the store rejects it with LeaseLost when another
    worker has claimed the run since. ``resolutions`` (callbacks of this run) are
    conditional: if one callback is no longer PENDING the whole checkpoint is rejected with
    CheckpointConflict.

    What the checkpoint does to other runs is decided by the engine and spelled out here;
    the store applies exactly that and infers nothing from the run's parent or children:
    ``children`` are inserted, ``wake_ups`` resolve other runs' callbacks (each skipped
    when no longer applicable, see :class:`WakeUp`), ``cancels`` are applied after the
    run's own update, in order (see :class:`Cancellation`).
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
    children: list[ChildRun] = field(default_factory=list)
    wake_ups: list[WakeUp] = field(default_factory=list)
    cancels: list[Cancellation] = field(default_factory=list)
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
    # Rules see only the events of their tenant, and the runs they start belong to it.
    tenant: str = DEFAULT_TENANT


@dataclass(frozen=True, slots=True)
class RunPage:
    """Where a page of ``list_runs`` ends: the next page holds the runs strictly older
    than (``created_at``, ``run_id``), in the order ``list_runs`` returns them."""

    created_at: datetime
    run_id: str


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    """An API key of the service: only a hash of its secret is stored, never the key."""

    key_id: str
    name: str
    tenant: str
    scopes: tuple[str, ...]
    secret_hash: str  # hex SHA-256 of the secret part of the key
    created_at: datetime
    revoked_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class PrunedRuns:
    """What one ``prune_runs`` call deleted: the runs and the rows that went with them."""

    run_ids: tuple[str, ...] = ()
    journal_records: int = 0
    history_events: int = 0
    callbacks: int = 0
    events: int = 0  # delivered outbox entries the runs had emitted


@dataclass(frozen=True, slots=True)
class HistoryCompaction:
    """Fold old events of an open run's history into one summary (``compact_history``):
    the events at ``drop`` (seqs, ascending) go, and ``summary`` takes the place and seq
    of the first of them. Applied only while the run is still at ``expected_epoch`` and
    every seq is still there, so a stale or repeated compaction writes nothing."""

    run_id: str
    expected_epoch: int
    drop: tuple[int, ...]
    summary: HistoryEvent


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
        tenant: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        text: str | None = None,
        after: RunPage | None = None,
        trace_id: str | None = None,
    ) -> list[RunRecord]:
        """Newest first (``created_at``, then ``run_id``, both descending).

        ``trace_id`` keeps the runs of one trace (a run, the runs it invokes, the runs rules
        start from its events), by an index: what ``cadenza runs trace`` reads.

        ``created_after`` is inclusive, ``created_before`` exclusive; ``text`` keeps runs
        whose id, workflow name or stored input contains it, ignoring case; ``after``
        continues from the last run of a previous page."""

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
    async def request_cancel(
        self, cancellations: Sequence[Cancellation], *, now: datetime
    ) -> RunRecord:
        """Apply the engine's plan for cancelling a run (the first cancellation) and its
        open descendants, in order, in one transaction; return the first run as it is
        afterwards. RunNotFound when the first run does not exist, RunStateError (nothing
        written) when it has already ended. Each :class:`Cancellation` ends its run at
        once when no worker holds it, else flags it for its worker."""

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

    @abstractmethod
    async def queue_stats(self, *, now: datetime) -> list[QueueStats]:
        """One :class:`QueueStats` per queue that has runnable, running or waiting runs at
        ``now``, and always one for ``default``, by name; ended runs are not counted.

        A cheap read, sampled periodically for metrics: it reads the indexes claims use,
        so its cost follows the open runs, never the ended ones."""

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

        On ``outcome`` the run ends; on ``suspend`` it becomes SUSPENDED until ``wake_at``
        — or PENDING, if a wake-up arrived since it was claimed. Other runs change only as
        ``children``, ``wake_ups`` and ``cancels`` say (a run's end reaches its parent
        because the engine puts the parent's WakeUp in the checkpoint).
        """

    @abstractmethod
    async def history(self, run_id: str, *, after_seq: int = 0) -> list[HistoryEvent]:
        """History events in order."""

    @abstractmethod
    async def append_history(self, run_id: str, events: Sequence[HistoryEvent]) -> None:
        """Append events to a run's history outside any checkpoint (the audit trail:
        who started, cancelled, retried, forked it or completed its callbacks), each taking
        the next ``seq``; RunNotFound when there is no such run. Needs no lease."""

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

    # --- API keys (the service) -------------------------------------------------------

    @abstractmethod
    async def put_api_key(self, key: ApiKeyRecord) -> None:
        """Store a new API key (its hash). RunAlreadyExists never applies: key ids are new."""

    @abstractmethod
    async def get_api_key(self, key_id: str) -> ApiKeyRecord | None:
        """The key, revoked or not; None when there is none."""

    @abstractmethod
    async def list_api_keys(self) -> list[ApiKeyRecord]:
        """Every key, oldest first."""

    @abstractmethod
    async def revoke_api_key(self, key_id: str, *, now: datetime) -> bool:
        """Revoke a key; False when there is none or it was revoked already."""

    # --- schedules ----------------------------------------------------------------------

    @abstractmethod
    async def put_schedule(self, schedule: Schedule) -> Schedule:
        """Create or replace a schedule, as given (progress fields included: the engine
        computed them). A replaced schedule keeps its ``created_at``; ``revision`` goes up
        by one either way. Returns the stored schedule."""

    @abstractmethod
    async def get_schedule(self, name: str) -> Schedule:
        """The schedule, or ScheduleNotFound."""

    @abstractmethod
    async def list_schedules(self) -> list[Schedule]:
        """All schedules, by name."""

    @abstractmethod
    async def delete_schedule(self, name: str) -> bool:
        """Delete a schedule; False when there was none. Runs it started are kept."""

    @abstractmethod
    async def pause_schedule(self, name: str, *, paused: bool, now: datetime) -> Schedule:
        """Pause or resume a schedule; ScheduleNotFound when there is none. Resuming a
        paused schedule sets ``resumed_at`` to ``now`` (ticks before it are not caught up).
        ``revision`` goes up by one."""

    @abstractmethod
    async def due_schedules(self, *, now: datetime, limit: int) -> list[Schedule]:
        """Up to ``limit`` schedules that are not paused and whose ``due_at`` has come,
        earliest first."""

    @abstractmethod
    async def next_schedule_due_at(self) -> datetime | None:
        """The earliest ``due_at`` of the schedules that are not paused."""

    @abstractmethod
    async def fire_schedule(self, firing: ScheduleFiring) -> bool:
        """Apply a :class:`ScheduleFiring` atomically: create its runs and move the
        schedule on, if and only if the schedule is still at ``expected_revision``. False,
        and nothing written, when it is not (or no longer exists)."""

    # --- retention ----------------------------------------------------------------------

    @abstractmethod
    async def ended_runs(
        self,
        *,
        updated_before: datetime,
        limit: int,
        workflow: str | None = None,
        after: tuple[datetime, str] | None = None,
    ) -> list[RunRecord]:
        """Up to ``limit`` ended runs (SUCCEEDED, FAILED, CANCELLED) last updated before
        ``updated_before``, least recently updated first (``updated_at``, then ``run_id``);
        ``after`` continues strictly after an (``updated_at``, ``run_id``) of a previous
        page. What the engine reads to decide which runs retention removes."""

    @abstractmethod
    async def prune_runs(self, run_ids: Sequence[str], *, ended_before: datetime) -> PrunedRuns:
        """Delete, in one transaction, each of ``run_ids`` that is still ended and was last
        updated before ``ended_before``, with its journal, history, callbacks and the
        delivered outbox entries it emitted. A run that is open again or was updated since
        (retried, redriven), or whose parent exists and has not ended, is left as it is;
        unknown ids are skipped. The engine decides (see ``Engine.prune``); the store only
        re-checks that the decision still holds."""

    @abstractmethod
    async def compact_history(self, compaction: HistoryCompaction) -> bool:
        """Apply a :class:`HistoryCompaction` atomically; False, and nothing written, when
        the run moved to another epoch or one of the events is gone."""
