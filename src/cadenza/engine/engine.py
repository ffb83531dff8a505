"""The Engine: what every shape of cadenza runs — start runs, activate them, complete
callbacks, cancel, publish events — over whichever store and artifact store it is given.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from cadenza._callbacks import check_payload
from cadenza.clock import Clock, iso, parse_iso
from cadenza.engine import (
    _cancellation,
    _compaction,
    _export,
    _recovery,
    _replay_check,
    _retention,
)
from cadenza.engine._instrumentation import Instrumentation, Instruments
from cadenza.engine.activation import Activation, ActivationResult
from cadenza.errors import (
    CallbackAlreadyCompleted,
    CallbackNotFound,
    CallbackTokenExpired,
    CheckpointConflict,
    ConfigurationError,
    ErrorInfo,
    InvalidCallbackToken,
    InvalidInput,
    RunAlreadyExists,
    RunFailed,
    RunStateError,
    WorkflowNotFound,
)
from cadenza.history import HistoryEvent, HistoryEventType
from cadenza.journal import OpRecord
from cadenza.ports.artifact_store import ArtifactStore
from cadenza.ports.run_store import (
    DEFAULT_TENANT,
    CallbackKind,
    CallbackRecord,
    CallbackResolution,
    CallbackStatus,
    Checkpoint,
    RunRecord,
    RunStatus,
    RunStore,
)
from cadenza.retry import RetryPolicy, RetryStrategy
from cadenza.security.tokens import CallbackTokens
from cadenza.serde import PayloadCodec, convert
from cadenza.state import new_state_document
from cadenza.telemetry._logging import log_context
from cadenza.workflow import WorkflowDefinition, load, lookup

if TYPE_CHECKING:
    from cadenza.client import Client
    from cadenza.telemetry._costs import SpendGuard

log = logging.getLogger("cadenza.engine")

#: Inputs, results and callback payloads larger than this are refused outright; anything
#: above the claim-check threshold (64 KiB) but below this goes to the artifact store.
MAX_PAYLOAD_BYTES = 16 * 1024 * 1024

Listener = Callable[[RunRecord, Checkpoint], None]
StreamListener = Callable[[str, str, str], None]
ActivityListener = Callable[[RunRecord, HistoryEvent], None]


@dataclass(frozen=True, slots=True)
class PendingCallback:
    """Something a run waits on from outside: a callback (with the ``token`` that
    completes it) or an event matching ``pattern``."""

    run_id: str
    op_id: str
    name: str
    kind: CallbackKind
    expires_at: datetime | None = None
    token: str | None = None
    payload_schema: dict[str, Any] | None = None
    pattern: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        """The wait as ``cadenza runs show --json`` lists it (absent fields left out)."""
        data: dict[str, Any] = {
            "run_id": self.run_id,
            "op_id": self.op_id,
            "name": self.name,
            "kind": str(self.kind),
            "expires_at": self.expires_at,
        }
        for key in ("token", "payload_schema", "pattern"):
            if (value := getattr(self, key)) is not None:
                data[key] = value
        return data


class Engine:
    def __init__(
        self,
        store: RunStore,
        *,
        secret: bytes,
        artifacts: ArtifactStore | None = None,
        clock: Clock | None = None,
        owner: str | None = None,
        default_retry: RetryPolicy | RetryStrategy | None = None,
        lease: timedelta = timedelta(seconds=30),
        claim_check_bytes: int = 64 * 1024,
        spend_guard: SpendGuard | None = None,
        instrumentation: Iterable[Instrumentation] | Instrumentation | None = None,
        retention: timedelta | None = _retention.DEFAULT_RETENTION,
        history_bound: int | None = 1000,
    ) -> None:
        self.store = store
        # How long ended runs are kept when their workflow does not say (None: forever).
        self.retention = retention
        # Past this many events an open run's older history is folded into a summary
        # (None: never); see engine/_compaction.py.
        self.history_bound = history_bound
        # Hooks for live work (cadenza.Instrumentation); empty, they cost a truth test.
        self.instruments = Instruments(instrumentation)
        # The deployment's budgets per workflow and tenant, checked in each model call.
        self.spend_guard = spend_guard
        self.artifacts = artifacts
        self.clock = clock or Clock()
        self.codec = PayloadCodec(artifacts, threshold=claim_check_bytes)
        self.tokens = CallbackTokens(secret)
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        if default_retry is not None and not callable(default_retry):
            raise ConfigurationError(
                f"default_retry must be a RetryPolicy or a retry strategy function"
                f" (error, attempt) -> RetryDecision; got {type(default_retry).__name__}"
            )
        # Either form: steps without their own retry= ask it through retry.decide.
        self.default_retry: RetryPolicy | RetryStrategy = default_retry or RetryPolicy()
        self.lease = lease
        self._listeners: list[Listener] = []
        self._stream_listeners: list[StreamListener] = []
        self._activity_listeners: list[ActivityListener] = []
        self._wakeups: list[asyncio.Event] = []
        self._step_client: Client | None = None

    async def close(self) -> None:
        await self.store.close()

    # --- observers ----------------------------------------------------------------------

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(run, checkpoint)`` after every committed checkpoint."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def subscribe_stream(self, listener: StreamListener) -> Callable[[], None]:
        """Call ``listener(run_id, op_id, text)`` for each piece of a streamed model reply.
        Streams never enter the journal, which records the final reply."""
        self._stream_listeners.append(listener)
        return lambda: self._stream_listeners.remove(listener)

    def subscribe_activity(self, listener: ActivityListener) -> Callable[[], None]:
        """Call ``listener(run, event)`` for each history event as an activation notes it,
        before it is committed (a step starting, say): for live displays, not records."""
        self._activity_listeners.append(listener)
        return lambda: self._activity_listeners.remove(listener)

    @property
    def has_activity_listeners(self) -> bool:
        return bool(self._activity_listeners)

    def activity(self, run: RunRecord, event: HistoryEvent) -> None:
        for listener in list(self._activity_listeners):
            try:
                listener(run, event)
            except Exception:  # an observer must never break a run
                log.exception("activity listener failed")

    @property
    def has_stream_listeners(self) -> bool:
        return bool(self._stream_listeners)

    def stream(self, run_id: str, op_id: str, text: str) -> None:
        for listener in list(self._stream_listeners):
            try:
                listener(run_id, op_id, text)
            except Exception:
                log.exception("stream listener failed")

    def step_client(self) -> Client:
        """The :class:`~cadenza.Client` over this engine that step functions are handed
        (``StepContext.client``): one per engine, made when a step first asks."""
        if self._step_client is None:
            # The client is a layer above the engine and imports it: import it late.
            from cadenza.client import Client

            self._step_client = Client(self)
        return self._step_client

    def wakeup_event(self) -> asyncio.Event:
        """An event set whenever something may have become runnable in this process;
        hand it back with ``drop_wakeup_event`` when done."""
        event = asyncio.Event()
        self._wakeups.append(event)
        return event

    def drop_wakeup_event(self, event: asyncio.Event) -> None:
        self._wakeups.remove(event)

    def poke(self) -> None:
        for event in self._wakeups:
            event.set()

    def committed(self, run: RunRecord, checkpoint: Checkpoint) -> None:
        for listener in list(self._listeners):
            try:
                listener(run, checkpoint)
            except Exception:  # an observer must never break a run
                log.exception("checkpoint listener failed")
        if checkpoint.children or checkpoint.events or checkpoint.releases:
            self.poke()

    # --- starting runs ------------------------------------------------------------------

    def initial_document(self, run_id: str, now: datetime) -> dict[str, Any]:
        return new_state_document(run_id, iso(now))

    def initial_state(self, run: RunRecord, metadata: dict[str, Any]) -> dict[str, Any]:
        document = self.initial_document(run.run_id, run.created_at)
        if run.origin is not None and run.origin.state:  # a fork given a document to start from
            for key, value in run.origin.state.items():
                if key == "metadata" and isinstance(value, dict):
                    document["metadata"].update(value)
                elif key != "agentId":
                    document[key] = value
        document["metadata"].update(metadata)
        return document

    async def encode_input(self, definition: WorkflowDefinition, value: Any, *, run_id: str) -> str:
        """The stored text of ``run_id``'s input (a large one goes to its artifacts)."""
        if definition.takes_input:
            value = convert(
                value, definition.input_type, what=f"input of workflow {definition.name!r}"
            )
        elif value is not None:
            raise InvalidInput(f"workflow {definition.name!r} takes no input")
        return await self.codec.encode(
            value, run_id=run_id, what="the input", limit=MAX_PAYLOAD_BYTES
        )

    async def start(
        self,
        workflow: WorkflowDefinition,
        input: Any = None,
        *,
        run_id: str | None = None,
        idempotency_key: str | None = None,
        priority: int = 0,
        queue: str | None = None,
        trace_id: str | None = None,
        causation_id: str | None = None,
        tenant: str = DEFAULT_TENANT,
    ) -> RunRecord:
        """Create a run of ``workflow`` for ``tenant``; a worker (or ``drive``) executes it."""
        run_id = run_id or f"r-{uuid.uuid4().hex[:12]}"
        encoded = await self.encode_input(workflow, input, run_id=run_id)
        now = self.clock.now()
        state = self.initial_document(run_id, now)
        if causation_id:  # "RUN/OP": the emit whose event started this run (traces link it)
            state["metadata"]["causationId"] = causation_id
        run = RunRecord(
            run_id=run_id,
            workflow=workflow.name,
            version=workflow.version,
            status=RunStatus.PENDING,
            input=encoded,
            created_at=now,
            updated_at=now,
            module=workflow.module,
            queue=queue or workflow.queue,
            priority=priority,
            state=state,
            trace_id=trace_id or uuid.uuid4().hex,
            idempotency_key=idempotency_key,
            tenant=tenant,
        )
        started = HistoryEvent(
            seq=0,
            type=HistoryEventType.EXECUTION_STARTED,
            timestamp=now,
            details={"workflow": workflow.name, "version": workflow.version},
        )
        created = await self.store.create_run(run, started)
        if idempotency_key is not None and created != run:  # the key named an earlier run
            await self._check_repeated_start(created, run)
        self.poke()
        return created

    async def _check_repeated_start(self, existing: RunRecord, asked: RunRecord) -> None:
        """An idempotency key that names a run answers a repeated request with that run,
        and refuses a different request (another workflow or input) under the same key."""
        values = []
        for run in (existing, asked):
            text = await self.codec.expand(run.input, run_id=run.run_id, what="the input")
            values.append(json.loads(text))
        if existing.workflow != asked.workflow or values[0] != values[1]:
            raise RunAlreadyExists(
                f"idempotency key {asked.idempotency_key!r} already started run"
                f" {existing.run_id} ({existing.workflow}) with another input; see it with"
                f" 'cadenza runs show {existing.run_id}', or use another key for a new run",
                run_id=existing.run_id,
            )

    # --- executing ----------------------------------------------------------------------

    def resolve(self, run: RunRecord) -> WorkflowDefinition | None:
        definition = lookup(run.workflow, run.version)
        if definition is None and run.module:
            try:
                load(run.module)
            except WorkflowNotFound as exc:
                log.warning("run %s: cannot import %s: %s", run.run_id, run.module, exc)
            definition = lookup(run.workflow, run.version)
        return definition

    async def activate(self, run: RunRecord) -> ActivationResult:
        """Run one claimed run until it ends or suspends (replaying its journal first)."""
        # Every log line written while it runs names the run (--log-format json).
        with log_context(run_id=run.run_id, trace_id=run.trace_id, workflow=run.workflow):
            return await self._activate(run)

    async def _activate(self, run: RunRecord) -> ActivationResult:
        definition = self.resolve(run)
        if definition is None:
            return await self._park_unknown(run)
        for attempt in range(10):
            journal: list[OpRecord] = []
            callbacks: list[CallbackRecord] = []
            # On its first claim nothing has checkpointed under a lease yet, so the journal
            # and callbacks are empty and need no read (a fork, which starts from copied
            # records, has an origin; a retried run claims at a later epoch).
            if attempt > 0 or run.lease_epoch != 1 or run.origin is not None:
                journal, callbacks = await self.store.load_activation(run.run_id)
            activation = Activation(self, run, definition, journal, callbacks)
            if self.instruments:
                info = self.instruments.invocation_started(activation)
                try:
                    result = await activation.execute()
                except BaseException:  # e.g. the task was cancelled: the activation ended
                    aborted = ActivationResult(
                        run.run_id, None, replayed=activation.replayed, executed=activation.executed
                    )
                    self.instruments.invocation_ended(activation, info, aborted)
                    raise
                self.instruments.invocation_ended(activation, info, result)
            else:
                result = await activation.execute()
            if not isinstance(result.aborted, CheckpointConflict):
                if result.aborted is not None:
                    log.warning("run %s: activation aborted: %s", run.run_id, result.aborted)
                elif result.status == RunStatus.SUSPENDED:
                    await _compaction.after_activation(self, run)
                return result
            # A callback was completed while we ran: replay with the fresh outcome.
        return result

    async def _park_unknown(self, run: RunRecord) -> ActivationResult:
        """A run this process cannot execute: hand it back for a worker that can."""
        log.warning(
            "run %s needs workflow %s version %s, which this process does not have;"
            " keep that version registered (and importable) until its runs end",
            run.run_id,
            run.workflow,
            run.version,
        )
        now = self.clock.now()
        retry_at = now + timedelta(seconds=60)
        # The parked claim ended on purpose: the next activation must not take it for a
        # worker that died (see Activation._lost_attempt).
        parked = HistoryEvent(
            0,
            HistoryEventType.INVOCATION_COMPLETED,
            now,
            details={
                "epoch": run.lease_epoch,
                "worker": run.lease_owner,
                "parked": f"workflow {run.workflow} v{run.version} is not registered here",
            },
        )
        await self.store.commit(
            Checkpoint(
                run.run_id,
                run.lease_owner or "",
                run.lease_epoch,
                now,
                history=[parked],
                suspend=True,
                wake_at=retry_at,
            )
        )
        return ActivationResult(run.run_id, RunStatus.SUSPENDED, wake_at=retry_at)

    async def result(self, run_id: str, tp: Any = None) -> Any:
        """The result of an ended run; RunFailed if it failed."""
        run = await self.store.get_run(run_id)
        if run.status == RunStatus.SUCCEEDED:
            return await self.codec.decode(run.result, tp, run_id=run_id, what="the result")
        if run.status in (RunStatus.FAILED, RunStatus.CANCELLED):
            raise RunFailed(run_id, run.error or ErrorInfo("Unknown", "no error recorded"))
        raise RunStateError(f"run {run_id} has not ended yet (it is {run.status})")

    async def input_of(self, run: RunRecord, tp: Any = None) -> Any:
        """The input ``run`` was started with (a claim-checked one fetched)."""
        return await self.codec.decode(run.input, tp, run_id=run.run_id, what="the input")

    async def readable(self, run: RunRecord) -> RunRecord:
        """``run`` with its input and result as the JSON text of the values, claim-checked
        ones fetched: for showing a run to a person, never for storing it back."""
        codec = self.codec
        return replace(
            run,
            input=await codec.expand(run.input, run_id=run.run_id, what="the input"),
            result=None
            if run.result is None
            else await codec.expand(run.result, run_id=run.run_id, what="the result"),
        )

    # --- callbacks ----------------------------------------------------------------------

    async def callback_for(self, token: str) -> CallbackRecord:
        """The pending callback a token may complete, or the error saying why not.

        Whether its run has ended is not read here: completing a callback checks that in
        the same statement that resolves it (RunStateError), which a read before could
        only race with."""
        now = self.clock.now()
        claims = self.tokens.verify(token, now=now)
        try:
            callback = await self.store.get_callback(claims.callback_id)
        except CallbackNotFound:
            raise InvalidCallbackToken(
                f"the token names callback {claims.callback_id}, which this deployment does"
                " not have (another store?)"
            ) from None
        if callback.run_id != claims.run_id or callback.op_id != claims.op_id:
            raise InvalidCallbackToken("the token is bound to another run or operation")
        if callback.status != CallbackStatus.PENDING:
            raise CallbackAlreadyCompleted(
                f"callback {claims.op_id} of run {claims.run_id} already ended"
                f" ({callback.status}); a token completes its callback once"
            )
        deadline = callback.deadline()
        if deadline is not None and now >= deadline:
            raise CallbackTokenExpired(
                f"callback token expired at {deadline:%Y-%m-%dT%H:%M:%SZ} (run"
                f" {claims.run_id}, op {claims.op_id}); the run has moved on or will time"
                f" out: see 'cadenza runs show {claims.run_id}'"
            )
        return callback

    async def succeed_callback(self, token: str, payload: Any = None) -> CallbackRecord:
        """Complete a callback with ``payload``; InvalidInput (and the callback stays open)
        when it does not fit the ``payload_type`` the workflow declared."""
        callback = await self.callback_for(token)
        check_payload(callback, payload)
        # Encoded on behalf of the run the callback belongs to: a large payload is stored
        # in that run's artifacts, where its replays look for it.
        text = await self.codec.encode(
            payload, run_id=callback.run_id, what="the callback payload", limit=MAX_PAYLOAD_BYTES
        )
        return await self._complete(callback, CallbackStatus.SUCCEEDED, result=text)

    async def fail_callback(
        self, token: str, *, error: str = "CallbackFailed", message: str = ""
    ) -> CallbackRecord:
        callback = await self.callback_for(token)
        info = ErrorInfo(type=error, message=message or f"{error} (from the callback)")
        return await self._complete(callback, CallbackStatus.FAILED, error=info)

    async def pending_callbacks(self, run: RunRecord | str) -> list[PendingCallback]:
        """What a run and its open child runs wait on from outside, oldest run first; each
        callback with a fresh token for it (a token is a signature, so issuing one again
        stores nothing and completes the same callback)."""
        waits: list[PendingCallback] = []
        runs = [await self.store.get_run(run) if isinstance(run, str) else run]
        while runs:
            current = runs.pop(0)
            if current.status.terminal:
                continue
            journal = {op.op_id: op for op in await self.store.load_journal(current.run_id)}
            for cb in await self.store.load_callbacks(current.run_id):
                if cb.status != CallbackStatus.PENDING or cb.kind == CallbackKind.INVOKE:
                    continue  # a child run's end completes an INVOKE: its own waits are listed
                op = journal.get(cb.op_id)
                token = None
                if cb.kind == CallbackKind.CALLBACK and op is not None:
                    expires = parse_iso(op.data["token_expires_at"])
                    token = self.tokens.issue(cb.callback_id, current.run_id, cb.op_id, expires)
                waits.append(
                    PendingCallback(
                        run_id=current.run_id,
                        op_id=cb.op_id,
                        name=op.name if op else cb.op_id,
                        kind=cb.kind,
                        expires_at=cb.deadline(),
                        token=token,
                        payload_schema=cb.payload_schema,
                        pattern=cb.pattern,
                    )
                )
            runs.extend(await self.store.list_runs(parent_run_id=current.run_id, limit=1000))
        return waits

    async def heartbeat_callback(self, token: str) -> CallbackRecord:
        callback = await self.callback_for(token)
        run = await self.store.get_run(callback.run_id)
        if run.status.terminal:  # e.g. cancelled: its callbacks are closed, heartbeats too
            raise RunStateError(
                f"run {run.run_id} already ended ({run.status}); its callbacks are closed"
            )
        if not await self.store.heartbeat_callback(callback.callback_id, now=self.clock.now()):
            raise CallbackAlreadyCompleted(f"callback {callback.op_id} already ended")
        return callback

    async def _complete(
        self,
        callback: CallbackRecord,
        status: CallbackStatus,
        *,
        result: str | None = None,
        error: ErrorInfo | None = None,
    ) -> CallbackRecord:
        resolution = CallbackResolution(callback.callback_id, status, result, error)
        if not await self.store.complete_callback(resolution, now=self.clock.now()):
            raise CallbackAlreadyCompleted(
                f"callback {callback.op_id} of run {callback.run_id} was completed meanwhile;"
                " a token completes its callback once"
            )
        self.poke()
        return callback

    # --- recovery -----------------------------------------------------------------------

    async def retry(
        self, run_id: str, *, version: str | None = None, by: str | None = None
    ) -> RunRecord:
        """Put a FAILED or CANCELLED run back to work from the operation that failed.

        Every recorded success is kept; the failed operation (and the enclosing contexts
        that failed with it) run again, a step with a fresh attempt count. ``version`` lets
        another registered version of the workflow take the run over: its code replays
        the journal, and a NonDeterminismError fails the run again without losing
        anything. RunStateError when the run has not ended or succeeded. The run is
        PENDING afterwards: a worker, or :func:`cadenza.engine.worker.drive`, runs it.
        ``by`` says who asked, in the run's history (default: this engine).
        """
        return await _recovery.retry(self, run_id, version, by or self.owner)

    async def replay_check(
        self, workflow: WorkflowDefinition, *, limit: int = 50
    ) -> list[_replay_check.ReplayCheckResult]:
        """Replay the journals of ``workflow``'s newest runs against the current code,
        without executing or writing anything, and tell which would hit non-determinism."""
        return await _replay_check.replay_check(self, workflow, limit=limit)

    async def export_run(self, run_id: str) -> _export.RunExport:
        """``run_id`` in one self-contained document (record, journal, callbacks, history
        and the artifacts its values live in), for ``cadenza runs export`` and
        :meth:`cadenza.testing.TestEnvironment.replay_export`."""
        return await _export.export_run(self, run_id)

    async def fork(
        self,
        run_id: str,
        *,
        from_op: str,
        input: Any = _recovery.KEEP_INPUT,
        state: dict[str, Any] | None = None,
        version: str | None = None,
    ) -> RunRecord:
        """A new run that replays ``run_id``'s journal up to operation ``from_op`` and runs
        live from there, with ``input`` (default: the same) and, when given, ``state`` as
        the agent state document it starts from. See docs/recovering.md."""
        return await _recovery.fork(self, run_id, from_op, input, state, version)

    # --- control ------------------------------------------------------------------------

    async def cancel(self, run_id: str) -> RunRecord:
        now = self.clock.now()
        run = await self.store.request_cancel(
            await _cancellation.plan(self.store, run_id, now), now=now
        )
        self.poke()
        return run

    async def prune(
        self,
        *,
        older_than: timedelta | None = None,
        workflow: str | None = None,
        limit: int | None = None,
        batch: int = 100,
        dry_run: bool = False,
    ) -> _retention.PruneReport:
        """Delete the ended runs whose retention has passed, with their journal, history,
        callbacks, delivered events and artifacts, ``batch`` runs per transaction, up to
        ``limit`` (all when None). ``older_than`` replaces every workflow's retention but
        ``None`` (kept forever); ``dry_run`` counts without deleting. See
        docs/retention.md."""
        return await _retention.prune(
            self,
            older_than=older_than,
            workflow=workflow,
            limit=limit,
            batch=batch,
            dry_run=dry_run,
        )

    async def publish(self, events: list[dict[str, Any]]) -> None:
        await self.store.publish(events, now=self.clock.now())
        self.poke()
