"""One activation: run a workflow function from the top over its journal, until it ends or
suspends.

Operations find their outcome in the journal (replay) or execute live and add records to a
buffer. ``flush()`` turns the buffer into one Checkpoint; while one commit is in flight the
records of concurrent branches accumulate and go out together in the next, and every
branch that waits for that next commit wakes when it is durable (a map's items share their
commits). A commit the store rejects (the lease was lost, a callback raced) aborts the
activation with a BaseException that workflow code cannot swallow.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from cadenza._callbacks import expire_callbacks, next_callback_deadline
from cadenza._runtime import Runtime
from cadenza._signals import Abort, ContinueAsNew, Fatal, ReplayEnd, Suspend
from cadenza.clock import iso
from cadenza.context import Context
from cadenza.engine._cancellation import cancellation
from cadenza.engine._continue_as_new import continued
from cadenza.engine._instrumentation import attempt_scope as _attempt_scope
from cadenza.errors import (
    CadenzaError,
    ErrorInfo,
    LeaseLost,
    NonDeterminismError,
    RunCancelled,
    RunStateError,
    SerializationError,
    StoreError,
)
from cadenza.history import HistoryEvent, HistoryEventType
from cadenza.journal import OpRecord, OpType
from cadenza.ports.artifact_store import RunArtifacts
from cadenza.ports.run_store import (
    CallbackKind,
    CallbackRecord,
    CallbackResolution,
    CallbackStatus,
    Cancellation,
    Checkpoint,
    ChildRun,
    RunOutcome,
    RunRecord,
    RunStatus,
    WakeUp,
)
from cadenza.serde import preview
from cadenza.state import AgentState, AgentStatus
from cadenza.workflow import WorkflowDefinition

if TYPE_CHECKING:
    from cadenza.client import Client
    from cadenza.engine.engine import Engine

# The signals live in a leaf module that the context's machinery shares; importing them
# from here still works.
__all__ = ["Abort", "Activation", "ActivationResult", "Fatal", "ReplayEnd", "Suspend"]


# In flight, these only read what the journal and the callbacks hold (a container replays
# its children; a timer or callback applies its stored outcome): a check replays through.
_REPLAY_IN_FLIGHT = frozenset(
    {OpType.CONTEXT, OpType.MAP, OpType.PARALLEL, OpType.WAIT, OpType.CALLBACK, OpType.EVENT_WAIT}
)


# The state document's JSON: one encoder, not one built per call as json.dumps does when
# given options.
_state_json = json.JSONEncoder(default=str).encode


@dataclass
class ActivationResult:
    run_id: str
    status: RunStatus | None  # None when aborted
    wake_at: datetime | None = None
    replayed: int = 0
    executed: int = 0
    aborted: CadenzaError | None = None
    error: ErrorInfo | None = None


@dataclass(slots=True)
class _Buffer:
    ops: dict[str, OpRecord] = field(default_factory=dict)
    history: list[HistoryEvent] = field(default_factory=list)
    callbacks: list[CallbackRecord] = field(default_factory=list)
    resolutions: list[CallbackResolution] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    children: list[ChildRun] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(
            self.ops
            or self.history
            or self.callbacks
            or self.resolutions
            or self.events
            or self.children
        )


class Activation(Runtime):
    """One replay of a run: the :class:`~cadenza._runtime.Runtime` its Context runs on."""

    def __init__(
        self,
        engine: Engine,
        run: RunRecord,
        definition: WorkflowDefinition,
        journal: list[OpRecord],
        callbacks: list[CallbackRecord],
        *,
        check_only: bool = False,
    ) -> None:
        self.engine = engine
        # A replay check replays the journal against the current code and stops at the
        # first operation it would have to execute live; it never writes to the store.
        self.check_only = check_only
        self.divergence: tuple[str, str, str] | None = None  # op id, recorded, asked
        self.outcome: RunOutcome | None = None
        self.run = run
        self.definition = definition
        self.journal = {op.op_id: op for op in journal}
        self.callbacks = {cb.callback_id: cb for cb in callbacks}
        self.codec = engine.codec.for_run(run.run_id)
        self.tokens = engine.tokens
        self.default_retry = engine.default_retry
        # Replay rebuilds the document from scratch; only the count of activations carries
        # over (everything else, error counts and usage included, is recounted by replay).
        stored = run.state.get("metadata", {}) if run.state else {}
        invocations = int(stored.get("invocationCount", 0)) + 1
        carried: dict[str, Any] = {"invocationCount": invocations}
        # How often the run was retried (set by Engine.retry): what a retry runs again
        # gets new ids for what leaves the run (events), so nothing downstream drops them.
        self.redrives = int(stored.get("redriveCount") or 0)
        if self.redrives:
            carried["redriveCount"] = self.redrives
        # The lease epoch of the last activation that checkpointed its end: when it is not
        # the epoch before this one, an attempt in between may have died (see _lost_attempt).
        self._ended_epoch = stored.get("leaseEpoch")
        if self._ended_epoch is not None:
            carried["leaseEpoch"] = self._ended_epoch
        # Patch markers (ctx.patched) take no journal position, so they live in the state
        # and carry over: replay alone could not tell a marked run from an old one.
        self.patches: set[str] = set(stored.get("patches") or ())
        self.patch_memo: dict[str, bool] = {}
        if self.patches:
            carried["patches"] = sorted(self.patches)
        # What started the run (a schedule's tick) is set at its creation, not by replay.
        if stored.get("schedule"):
            carried["schedule"] = stored["schedule"]
        if stored.get("causationId"):  # the emit ("RUN/OP") whose event started the run
            carried["causationId"] = stored["causationId"]
        self.state = AgentState(self.engine.initial_state(run, carried))
        # The JSON of the document as last stored; None until this activation stores it,
        # which its first checkpoint always does (the count of activations went up).
        self._stored_state: str | None = None
        self._buffer = _Buffer()
        # One commit of the run is in flight at a time, so checkpoints apply in order.
        # ``_inflight`` resolves when it is done; ``_next`` when the commit that takes what
        # is buffered now is done (it follows the one in flight).
        self._inflight: asyncio.Future[None] | None = None
        self._next: asyncio.Future[None] | None = None
        self._broken: BaseException | None = None  # a commit failed in an unforeseen way
        self._follower: asyncio.Task[None] | None = None  # referenced while it runs
        self._failure: Abort | None = None
        self._wake_times: list[datetime | None] = []
        self.cancel_requested = run.cancel_requested and not check_only
        self.replayed = 0
        self.executed = 0
        # The order in which child contexts finish, across activations: replay gives back
        # the state changes of a batch's finished items in that order (Context._run_child).
        self.invocation = invocations
        self.children_finished = 0
        self.check_value: Any = None
        self.check_completed = False

    # --- used by operations -------------------------------------------------------------

    def now(self) -> datetime:
        return self.engine.clock.now()

    def record(self, op: OpRecord) -> None:
        self.journal[op.op_id] = op
        self._buffer.ops[op.op_id] = op

    def note(self, type: HistoryEventType, op: OpRecord | None = None, **details: Any) -> None:
        event = HistoryEvent(
            seq=0,
            type=type,
            timestamp=self.now(),
            op_id=op.op_id if op else None,
            parent_id=op.parent_id if op else None,
            name=op.name if op else None,
            details={k: v for k, v in details.items() if v is not None},
        )
        self._buffer.history.append(event)
        if self.engine.has_activity_listeners:
            self.engine.activity(self.run, event)
        if op is not None and self.engine.instruments:  # live work only: replay notes nothing
            self.engine.instruments.noted(self, event, op)

    def add_callback(self, callback: CallbackRecord) -> None:
        self.callbacks[callback.callback_id] = callback
        self._buffer.callbacks.append(callback)

    def resolve(self, resolution: CallbackResolution) -> None:
        self._buffer.resolutions.append(resolution)

    def add_event(self, event: dict[str, Any]) -> None:
        self._buffer.events.append(event)

    def add_child(self, child: RunRecord) -> None:
        details = {"parent_run_id": self.run.run_id, "parent_op_id": child.parent_op_id}
        started = HistoryEvent(
            seq=0, type=HistoryEventType.EXECUTION_STARTED, timestamp=self.now(), details=details
        )
        self._buffer.children.append(ChildRun(child, started))

    async def start_child_run(
        self, definition: WorkflowDefinition, input: Any, *, run_id: str, op_id: str
    ) -> None:
        now = self.now()
        self.add_child(
            RunRecord(
                run_id=run_id,
                workflow=definition.name,
                version=definition.version,
                status=RunStatus.PENDING,
                input=await self.engine.encode_input(definition, input, run_id=run_id),
                created_at=now,
                updated_at=now,
                module=definition.module,
                parent_run_id=self.run.run_id,
                parent_op_id=op_id,
                queue=definition.queue,
                trace_id=self.run.trace_id,
                state=self.engine.initial_document(run_id, now),
                tenant=self.run.tenant,
            )
        )

    def attempt_scope(self, op: OpRecord) -> AbstractContextManager[object]:
        return _attempt_scope(self, op)

    def run_artifacts(self) -> RunArtifacts | None:
        store = self.engine.artifacts
        return store.for_run(self.run.run_id) if store is not None else None

    def control_client(self) -> Client:
        return self.engine.step_client()

    def model_stream(self) -> Callable[[str, str], None] | None:
        if not self.engine.has_stream_listeners:
            return None
        run_id, stream = self.run.run_id, self.engine.stream
        return lambda op_id, text: stream(run_id, op_id, text)

    async def check_spend(self, op_id: str) -> None:
        guard = self.engine.spend_guard
        if guard is not None:
            await guard.check(
                self.engine,
                run_id=self.run.run_id,
                op_id=op_id,
                workflow=self.definition.name,
                tenant=self.run.tenant,
                trace_id=self.run.trace_id,
            )

    def count_error(self) -> None:
        metadata = self.state.to_dict().setdefault("metadata", {})
        metadata["errorCount"] = int(metadata.get("errorCount", 0)) + 1

    def suspend_until(self, when: datetime | None) -> Suspend:
        self._wake_times.append(when)
        return Suspend()

    def deterministic_id(self, *parts: str) -> str:
        digest = hashlib.sha256("/".join((self.run.run_id, *parts)).encode()).digest()
        return str(uuid.UUID(bytes=digest[:16], version=4))

    def check_stop(self, op_id: str, rec: OpRecord | None) -> None:
        """In a replay check, stop before anything that would run live: an operation
        without a record, or one in flight that would run something live (a step)."""
        if not self.check_only:
            return
        if rec is None or (not rec.status.terminal and rec.type not in _REPLAY_IN_FLIGHT):
            raise ReplayEnd()

    def nondeterminism(self, op_id: str, recorded: OpRecord, type: str, name: str) -> Fatal:
        self.divergence = (op_id, f"{recorded.type} '{recorded.name}'", f"{type} '{name}'")
        return Fatal(
            NonDeterminismError(
                f"run {self.run.run_id}, operation {op_id}: the journal recorded"
                f" {recorded.type} '{recorded.name}' here but the workflow now asks for"
                f" {type} '{name}'. The code of {self.definition.name} v"
                f"{self.definition.version} changed in a way that breaks replay: deploy the"
                " change as a new workflow version and keep this one for its running runs, or"
                " guard it with ctx.patched; 'cadenza replay-check' finds the runs it breaks"
            )
        )

    def nondeterminism_in_finished(
        self, context_id: str, op_id: str | None = None, asked: str | None = None
    ) -> Fatal:
        what = f"asks for {asked} at {op_id}" if asked else "waits"
        self.divergence = (op_id or context_id, "nothing (finished context)", asked or "a wait")
        return Fatal(
            NonDeterminismError(
                f"run {self.run.run_id}: child context {context_id} finished in an earlier"
                f" activation, but replaying it now {what}, which its journal does not"
                f" hold. The code of {self.definition.name} v{self.definition.version}"
                " changed in a way that breaks replay: deploy the change as a new workflow"
                " version"
            )
        )

    async def flush(self) -> None:
        """Commit everything buffered so far (and whatever concurrent branches add)."""
        if self._failure is not None:
            raise self._failure
        if not self.check_only:
            await self._durable()
        if self._failure is not None:
            raise self._failure
        if self._broken is not None:
            raise self._broken
        if self.cancel_requested:
            raise RunCancelled()

    async def _durable(self) -> None:
        """Return once what this branch recorded so far is committed (or refused)."""
        if self._inflight is None:
            if self._buffer:
                await self._lead()
        elif self._buffer:
            # Join the commit that follows the one in flight: the branches that buffer
            # meanwhile all go out in it, and all wake when it is durable.
            if self._next is None:
                self._next = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._next)
        else:
            await asyncio.shield(self._inflight)  # it may carry this branch's records

    async def _lead(self) -> None:
        """Commit the buffer here and now (no commit is in flight), then hand what was
        buffered meanwhile to a task that commits it, so this branch goes on at once."""
        inflight = self._inflight = asyncio.get_running_loop().create_future()
        try:
            await self._commit(self._checkpoint())
        finally:
            self._inflight = None
            inflight.set_result(None)
            if self._next is not None:
                self._inflight, self._next = self._next, None
                self._follower = asyncio.get_running_loop().create_task(
                    self._follow(self._inflight)
                )

    async def _follow(self, done: asyncio.Future[None]) -> None:
        """Commit what the waiting branches buffered, until none is waiting any more."""
        while True:
            try:
                if self._failure is None and self._buffer:
                    await self._commit(self._checkpoint())
            except Abort:
                pass  # kept as self._failure: each waiting branch raises it
            except BaseException as exc:  # each waiting branch raises it, as if it committed
                self._broken = exc
            self._inflight = None
            done.set_result(None)
            if self._next is None:
                return
            done = self._inflight = self._next
            self._next = None

    async def _settle(self) -> None:
        """Wait until no commit is in flight (nor due to follow one)."""
        while self._inflight is not None:
            await asyncio.shield(self._inflight)

    # --- the activation itself ----------------------------------------------------------

    async def execute(self) -> ActivationResult:
        started = time.perf_counter()
        ctx = Context(self, "")
        outcome: RunOutcome | None = None
        try:
            if self.cancel_requested:
                raise RunCancelled()
            if not self.check_only:
                await self._lost_attempt()
                expire_callbacks(self)
            if self.definition.takes_input:
                value = await self.codec.decode(
                    self.run.input, self.definition.input_type, what="the run's input"
                )
                result = await self.definition.fn(ctx, value)
            else:
                result = await self.definition.fn(ctx)
            if self.definition.output_type not in (None, type(None)):
                from cadenza.serde import convert

                result = convert(result, self.definition.output_type, what="the result")
            if self.check_only:  # encoding could write an artifact: keep the value
                self.check_value, self.check_completed = result, True
                raise ReplayEnd()
            text = await self.codec.encode(result, what="the workflow's result")
            outcome = RunOutcome(RunStatus.SUCCEEDED, result=text)
            self.state.status = self.state.get("status") or AgentStatus.COMPLETED
        except ContinueAsNew as signal:
            outcome = await continued(self, signal)
        except Suspend:
            outcome = None
        except Abort as abort:
            return self._aborted(abort.cause)
        except Fatal as fatal:
            outcome = self._failed(fatal.cause)
        except RunCancelled:
            error = ErrorInfo(type="RunCancelled", message=f"run {self.run.run_id} was cancelled")
            outcome = RunOutcome(RunStatus.CANCELLED, error=error)
        except (Exception, SerializationError) as exc:
            outcome = self._failed(exc)

        self.outcome = outcome
        if self.check_only:
            return ActivationResult(
                self.run.run_id,
                outcome.status if outcome else None,
                replayed=self.replayed,
                executed=self.executed,
                error=outcome.error if outcome else None,
            )
        wake_at = None
        if outcome is None:
            # A callback the workflow has not awaited yet still times out on time.
            known = [t for t in (*self._wake_times, next_callback_deadline(self)) if t]
            wake_at = min(known) if known else None
        self.note(
            HistoryEventType.INVOCATION_COMPLETED,
            replayed=self.replayed,
            executed=self.executed,
            duration_ms=round((time.perf_counter() - started) * 1000, 3),
            epoch=self.run.lease_epoch,
            worker=self.run.lease_owner,
        )
        if outcome is not None:  # as in AWS's history, the terminal Execution event is last
            self._note_outcome(outcome)
        self.state.to_dict().setdefault("metadata", {})["leaseEpoch"] = self.run.lease_epoch
        await self._settle()
        if self._failure is not None:
            return self._aborted(self._failure.cause)
        # The last commit: nothing may follow it (a branch still flushing is told so).
        last = self._inflight = asyncio.get_running_loop().create_future()
        checkpoint = self._checkpoint()
        checkpoint.outcome = outcome
        checkpoint.suspend = outcome is None
        if outcome is not None:
            checkpoint.wake_ups = self._parent_wake_ups(outcome)
            checkpoint.cancels = self._open_children_cancels(outcome, checkpoint.now)
        checkpoint.wake_at = wake_at
        try:
            await self._commit(checkpoint)
        except Abort as abort:
            return self._aborted(abort.cause)
        finally:
            if self._failure is None:
                ended = RunStateError(f"run {self.run.run_id}: its activation has ended")
                self._failure = Abort(ended)
            last.set_result(None)
            if self._next is not None:
                self._next.set_result(None)
        status = outcome.status if outcome else RunStatus.SUSPENDED
        return ActivationResult(
            self.run.run_id,
            status,
            wake_at=wake_at,
            replayed=self.replayed,
            executed=self.executed,
            error=outcome.error if outcome else None,
        )

    # --- internals ----------------------------------------------------------------------

    async def _lost_attempt(self) -> None:
        """Record the end of an earlier attempt that never recorded it (its worker died or
        lost the run mid-way), so the history says why work after its last checkpoint runs
        again. Every activation ends with an InvocationCompleted naming its lease epoch; the
        history is read only when the stored document says the previous epoch did not."""
        epoch = self.run.lease_epoch
        if epoch <= 1 or self._ended_epoch == epoch - 1:
            return
        history = await self.engine.store.history(self.run.run_id)
        ended = [e for e in history if e.type == HistoryEventType.INVOCATION_COMPLETED]
        if ended and "epoch" not in ended[-1].details:
            return  # recorded before activations named their epoch: nothing to compare
        since = ended[-1].seq if ended else 0
        later = [e for e in history if e.seq > since]
        # Claims and retries (a redrive) are what move the epoch on; a claim whose end is
        # not recorded is a lost attempt.
        redrives = sum(1 for e in later if e.type == HistoryEventType.EXECUTION_REDRIVEN)
        lost = epoch - 1 - redrives - (int(ended[-1].details["epoch"]) if ended else 0)
        if lost <= 0:
            return
        worker = next(
            (str(e.details["worker"]) for e in reversed(later) if e.details.get("worker")), None
        )
        who = f"the worker {worker}" if worker else "the worker that held the run"
        error = ErrorInfo(
            "LeaseLost",
            f"{who} stopped without checkpointing (lease epoch {epoch - 1}): its lease"
            f" expired, or was handed back, before {self.run.lease_owner} claimed the run"
            f" at {iso(self.now())}; what it had not checkpointed runs again. That worker's"
            " logs tell why it stopped",
        )
        self.note(
            HistoryEventType.INVOCATION_COMPLETED,
            epoch=epoch - 1,
            worker=worker,
            lost_attempts=lost if lost > 1 else None,
            error={"type": error.type, "message": error.message},
        )

    def _failed(self, exc: BaseException) -> RunOutcome:
        error = ErrorInfo.from_exception(exc)
        self.state.status = AgentStatus.FAILED
        return RunOutcome(RunStatus.FAILED, error=error)

    def _note_outcome(self, outcome: RunOutcome) -> None:
        if outcome.status == RunStatus.SUCCEEDED:
            self.note(HistoryEventType.EXECUTION_SUCCEEDED, result=preview(outcome.result or ""))
        elif outcome.status == RunStatus.CANCELLED:
            self.note(HistoryEventType.EXECUTION_CANCELLED)
        else:
            error = outcome.error.to_dict() if outcome.error else None
            self.note(HistoryEventType.EXECUTION_FAILED, error=error)

    def _parent_wake_ups(self, outcome: RunOutcome) -> list[WakeUp]:
        """A child run's end resolves its parent's INVOKE callback (named after the child)
        and wakes the parent; the store skips it if the parent no longer waits."""
        parent = self.run.parent_run_id
        if parent is None:
            return []
        succeeded = outcome.status == RunStatus.SUCCEEDED
        status = CallbackStatus.SUCCEEDED if succeeded else CallbackStatus.FAILED
        resolution = CallbackResolution(self.run.run_id, status, outcome.result, outcome.error)
        return [WakeUp(parent, resolution)]

    def _open_children_cancels(self, outcome: RunOutcome, now: datetime) -> list[Cancellation]:
        """A cancelled run cancels the child runs it still waits for, those started after
        the cancellation was requested included. Its own end needs no word from them."""
        if outcome.status != RunStatus.CANCELLED:
            return []
        return [
            cancellation(cb.callback_id, None, now)
            for cb in self.callbacks.values()
            if cb.kind == CallbackKind.INVOKE and cb.status == CallbackStatus.PENDING
        ]

    def _aborted(self, cause: CadenzaError) -> ActivationResult:
        return ActivationResult(
            self.run.run_id, None, replayed=self.replayed, executed=self.executed, aborted=cause
        )

    def _checkpoint(self) -> Checkpoint:
        buffer, self._buffer = self._buffer, _Buffer()
        now = self.now()
        checkpoint = Checkpoint(
            run_id=self.run.run_id,
            owner=self.run.lease_owner or "",
            expected_epoch=self.run.lease_epoch,
            now=now,
            ops=list(buffer.ops.values()),
            history=buffer.history,
            callbacks=buffer.callbacks,
            resolutions=buffer.resolutions,
            events=buffer.events,
            children=buffer.children,
        )
        # The document is mutated in place between operations; comparing its JSON with
        # what was last stored is the cheapest reliable way to know whether it changed.
        document = self.state.to_dict()
        if self._stored_state is None or _state_json(document) != self._stored_state:
            document.setdefault("metadata", {})["lastUpdated"] = iso(now)
            text = _state_json(document)
            checkpoint.state = json.loads(text)  # a snapshot: the workflow goes on mutating
            self._stored_state = text
        return checkpoint

    async def _commit(self, checkpoint: Checkpoint) -> None:
        try:
            result = await self.engine.store.commit(checkpoint)
        except (LeaseLost, StoreError) as exc:
            self._failure = Abort(exc)
            raise self._failure from exc
        except CadenzaError as exc:  # e.g. CheckpointConflict, RunNotFound
            self._failure = Abort(exc)
            raise self._failure from exc
        if result.cancel_requested:
            self.cancel_requested = True
        self.engine.committed(self.run, checkpoint)
