"""InMemoryRunStore: the run store port held in Python dictionaries, for fast tests.

It keeps the promises of the SQLite and PostgreSQL stores (the contract suite in
tests/contract runs over all three): a checkpoint is checked whole — its lease, its
conditional resolutions, the ids it inserts — before anything of it is written, and what
it does to other runs (wake-ups, cancellations), which can only be checked as it goes, is
undone if a later part is refused, so a refused checkpoint leaves no trace. Documents go
in and come out as JSON copies, as they would through a database: a caller that changes
a record it read, or one it wrote, does not change what is stored, and a value JSON cannot
hold fails at once, as it would in production.

Nothing survives the process. Several engines (or a test's own second "process") may share
one instance: each method runs to completion without yielding to the event loop, and a lock
guards it against other threads.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from cadenza.errors import (
    CallbackNotFound,
    CheckpointConflict,
    ErrorInfo,
    LeaseLost,
    RunAlreadyExists,
    RunNotFound,
    RunStateError,
    StoreError,
)
from cadenza.history import HistoryEvent
from cadenza.journal import OpRecord
from cadenza.ports.run_store import (
    ApiKeyRecord,
    CallbackKind,
    CallbackRecord,
    CallbackResolution,
    CallbackStatus,
    Cancellation,
    Checkpoint,
    ChildRun,
    CommitResult,
    OutboxEntry,
    QueueConfig,
    Redrive,
    Rule,
    RunOrigin,
    RunOutcome,
    RunPage,
    RunRecord,
    RunStatus,
    RunStore,
    Schedule,
    WakeUp,
    refill_tokens,
)
from cadenza.testing._memory_queues import MemoryQueues
from cadenza.testing._memory_retention import MemoryRetention
from cadenza.testing._memory_schedules import MemorySchedules

_LONG_AGO = datetime.fromtimestamp(0, UTC)  # what next_wake_at says for a PENDING run


def _doc(value: Any) -> Any:
    """A copy of a JSON document, made the way a database would store and return it."""
    return json.loads(json.dumps(value))


def _error(error: ErrorInfo | None) -> ErrorInfo | None:
    return ErrorInfo.from_dict(_doc(error.to_dict())) if error is not None else None


def _run_copy(run: RunRecord) -> RunRecord:
    origin = run.origin
    if origin is not None:
        origin = RunOrigin(origin.run_id, origin.op_id, _doc(origin.state))
    return run.evolve(state=_doc(run.state), error=_error(run.error), origin=origin)


def _op_copy(op: OpRecord) -> OpRecord:
    return op.evolve(data=_doc(op.data) if op.data else {}, error=_error(op.error))


def _callback_copy(cb: CallbackRecord) -> CallbackRecord:
    return replace(
        cb,
        pattern=_doc(cb.pattern) if cb.pattern is not None else None,
        payload_schema=_doc(cb.payload_schema) if cb.payload_schema is not None else None,
        error=_error(cb.error),
    )


def _entry_copy(entry: OutboxEntry) -> OutboxEntry:
    return replace(entry, event=_doc(entry.event))


def _rule_copy(rule: Rule) -> Rule:
    return replace(rule, pattern=_doc(rule.pattern), params=_doc(rule.params))


class InMemoryRunStore(MemoryQueues, MemoryRetention, MemorySchedules, RunStore):
    """A run store that lives in this process only, for tests that need no file:
    ``TestEnvironment(store=InMemoryRunStore())``."""

    def __init__(self) -> None:
        self.url = "memory://"
        self._lock = threading.RLock()
        self._runs: dict[str, RunRecord] = {}
        self._keys: dict[str, str] = {}  # idempotency key -> run id
        self._woken: set[str] = set()  # runs woken since their last claim
        self._ops: dict[str, dict[str, OpRecord]] = {}
        self._history: dict[str, list[HistoryEvent]] = {}
        self._callbacks: dict[str, CallbackRecord] = {}
        self._outbox: dict[int, OutboxEntry] = {}
        self._event_ids: set[str] = set()
        self._rules: dict[str, Rule] = {}
        self._queues: dict[str, QueueConfig] = {}
        self._buckets: dict[str, tuple[float, datetime]] = {}  # tokens left, when counted
        self._api_keys: dict[str, ApiKeyRecord] = {}
        self._schedules: dict[str, Schedule] = {}

    # --- runs ---------------------------------------------------------------------------

    async def create_run(self, run: RunRecord, started: HistoryEvent) -> RunRecord:
        with self._lock:
            if run.idempotency_key is not None and run.idempotency_key in self._keys:
                return _run_copy(self._runs[self._keys[run.idempotency_key]])
            if run.run_id in self._runs:
                raise RunAlreadyExists.id_taken(run.run_id)
            stored, event = _run_copy(run), self._event(started)
            self._insert_run(stored)
            self._append(run.run_id, [event])
            return _run_copy(stored)

    async def get_run(self, run_id: str) -> RunRecord:
        with self._lock:
            return _run_copy(self._run(run_id))

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
        needle = text.lower() if text else None
        with self._lock:
            runs = [
                r
                for r in self._runs.values()
                if (status is None or r.status == status)
                and (workflow is None or r.workflow == workflow)
                and (parent_run_id is None or r.parent_run_id == parent_run_id)
                and (tenant is None or r.tenant == tenant)
                and (trace_id is None or r.trace_id == trace_id)
                and (created_after is None or r.created_at >= created_after)
                and (created_before is None or r.created_at < created_before)
                and (after is None or (r.created_at, r.run_id) < (after.created_at, after.run_id))
                and (needle is None or needle in f"{r.run_id} {r.workflow} {r.input}".lower())
            ]
            runs.sort(key=lambda r: (r.created_at, r.run_id), reverse=True)
            return [_run_copy(r) for r in runs[: max(limit, 0)]]

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
        with self._lock:
            candidates = [
                r
                for r in self._matching(workflows, queues)
                if _runnable(r, now)
                and (run_id is None or r.run_id == run_id)
                and (trace_id is None or r.trace_id == trace_id)
            ]
            candidates.sort(key=lambda r: (-r.priority, r.created_at))
            budgets, tokens = self._budgets(now)
            chosen: list[RunRecord] = []
            for run in candidates:
                if len(chosen) >= limit:
                    break
                if run.queue in budgets:
                    if budgets[run.queue] <= 0:
                        continue
                    budgets[run.queue] -= 1
                chosen.append(run)
            charged: dict[str, int] = {}
            for run in chosen:
                if run.queue in tokens:
                    charged[run.queue] = charged.get(run.queue, 0) + 1
            for queue, count in charged.items():
                self._buckets[queue] = (tokens[queue] - count, now)
            claimed = []
            for run in chosen:
                leased = run.evolve(
                    status=RunStatus.RUNNING,
                    lease_owner=owner,
                    lease_epoch=run.lease_epoch + 1,
                    lease_expires_at=lease_until,
                    updated_at=now,
                )
                self._runs[run.run_id] = leased
                self._woken.discard(run.run_id)
                claimed.append(_run_copy(leased))
            return claimed

    async def renew_lease(
        self, run_id: str, *, owner: str, epoch: int, lease_until: datetime
    ) -> bool:
        with self._lock:
            run = self._runs.get(run_id)
            if run is None or run.lease_owner != owner or run.lease_epoch != epoch:
                return False
            self._runs[run_id] = run.evolve(lease_expires_at=lease_until)
            return True

    async def release_lease(self, run_id: str, *, owner: str, epoch: int) -> None:
        with self._lock:
            run = self._runs.get(run_id)
            if (
                run is not None
                and run.lease_owner == owner
                and run.lease_epoch == epoch
                and run.status == RunStatus.RUNNING
            ):
                self._runs[run_id] = run.evolve(
                    status=RunStatus.PENDING, lease_owner=None, lease_expires_at=None
                )

    async def next_wake_at(
        self,
        *,
        workflows: Sequence[tuple[str, str]] | None = None,
        queues: Sequence[str] | None = None,
    ) -> datetime | None:
        with self._lock:
            times = []
            for run in self._matching(workflows, queues):
                if run.status == RunStatus.PENDING:
                    times.append(_LONG_AGO)
                elif run.status == RunStatus.SUSPENDED and run.wake_at is not None:
                    times.append(run.wake_at)
                elif run.status == RunStatus.RUNNING and run.lease_expires_at is not None:
                    times.append(run.lease_expires_at)
            return min(times, default=None)

    async def request_cancel(
        self, cancellations: Sequence[Cancellation], *, now: datetime
    ) -> RunRecord:
        with self._lock:
            if not cancellations:
                raise ValueError("request_cancel needs at least the run to cancel")
            run_id = cancellations[0].run_id
            run = self._run(run_id)
            if run.status.terminal:
                raise RunStateError(
                    f"run {run_id} already ended ({run.status}); there is nothing to cancel"
                )
            prepared = [self._cancellation_copy(c) for c in cancellations]
            undo = self._undo_log()
            try:
                for cancel in prepared:
                    self._cancel(cancel, now)
            except BaseException:
                undo()
                raise
            return _run_copy(self._runs[run_id])

    async def redrive_runs(self, redrives: Sequence[Redrive], *, now: datetime) -> list[RunRecord]:
        with self._lock:
            seen: set[str] = set()
            for rd in redrives:  # every run is checked before any is touched
                run = self._run(rd.run_id)
                planned = rd.run_id not in seen and run.lease_epoch == rd.expected_epoch
                if run.status not in (RunStatus.FAILED, RunStatus.CANCELLED) or not planned:
                    raise RunStateError(
                        f"run {rd.run_id} changed since the retry was planned (it is"
                        f" {run.status} now); see 'cadenza runs show {rd.run_id}'"
                    )
                seen.add(rd.run_id)
            prepared = [
                (rd, [_op_copy(op) for op in rd.reset], self._event(rd.event), _doc(rd.state))
                for rd in redrives
            ]
            redriven = []
            for rd, reset, event, state in prepared:
                ops = self._ops.setdefault(rd.run_id, {})
                for op_id in rd.drop:
                    ops.pop(op_id, None)
                self._upsert_ops(rd.run_id, reset)
                for callback_id in rd.reopen:
                    cb = self._callbacks.get(callback_id)
                    if cb is not None and cb.run_id == rd.run_id:
                        self._callbacks[callback_id] = replace(
                            cb,
                            status=CallbackStatus.PENDING,
                            result=None,
                            error=None,
                            completed_at=None,
                        )
                run = self._runs[rd.run_id]
                run = run.evolve(
                    status=RunStatus.PENDING,
                    result=None,
                    error=None,
                    wake_at=None,
                    lease_owner=None,
                    lease_expires_at=None,
                    lease_epoch=run.lease_epoch + 1,
                    cancel_requested=False,
                    updated_at=now,
                    version=rd.version if rd.version is not None else run.version,
                    module=rd.module if rd.module is not None else run.module,
                    state=state if state is not None else run.state,
                )
                self._runs[rd.run_id] = run
                self._woken.discard(rd.run_id)
                self._append(rd.run_id, [event])
                redriven.append(_run_copy(run))
            return redriven

    async def fork_run(
        self, run: RunRecord, events: Sequence[HistoryEvent], journal: Sequence[OpRecord]
    ) -> RunRecord:
        with self._lock:
            self._check_new_runs([run])
            stored = _run_copy(run)
            prepared = [self._event(e) for e in events]
            ops = [_op_copy(op) for op in journal]
            self._insert_run(stored)
            self._append(run.run_id, prepared)
            self._upsert_ops(run.run_id, ops)
            return _run_copy(stored)

    # --- queues -------------------------------------------------------------------------

    async def put_queue(self, config: QueueConfig) -> None:
        with self._lock:
            # The bucket stays as it was: changing a limit does not hand out fresh tokens.
            self._queues[config.name] = config

    async def list_queues(self) -> list[QueueConfig]:
        with self._lock:
            return [self._queues[name] for name in sorted(self._queues)]

    # --- activations --------------------------------------------------------------------

    async def load_journal(self, run_id: str) -> list[OpRecord]:
        with self._lock:
            return [_op_copy(op) for op in self._ops.get(run_id, {}).values()]

    async def load_callbacks(self, run_id: str) -> list[CallbackRecord]:
        with self._lock:
            return [_callback_copy(c) for c in self._callbacks.values() if c.run_id == run_id]

    async def commit(self, checkpoint: Checkpoint) -> CommitResult:
        with self._lock:
            cp = checkpoint
            run = self._fenced(cp)
            # Everything is checked and copied first, so a refusal leaves no trace.
            self._check_resolutions(cp)
            self._check_new_callbacks(cp.callbacks)
            self._check_new_runs([c.run for c in cp.children])
            ops = [_op_copy(op) for op in cp.ops]
            history = [self._event(e) for e in cp.history]
            callbacks = [_callback_copy(c) for c in cp.callbacks]
            children = [ChildRun(_run_copy(c.run), self._event(c.started)) for c in cp.children]
            events = [(str(e["id"]), _doc(e)) for e in cp.events]
            state = _doc(cp.state) if cp.state is not None else None
            resolutions = [replace(r, error=_error(r.error)) for r in cp.resolutions]
            wake_ups = [_wake_up_copy(w) for w in cp.wake_ups]
            cancels = [self._cancellation_copy(c) for c in cp.cancels]
            outcome = cp.outcome
            if outcome is not None:
                outcome = replace(outcome, error=_error(outcome.error))

            undo = self._undo_log() if wake_ups or cancels else None
            if state is not None or cp.outcome is not None or cp.suspend:
                self._runs[cp.run_id] = self._advanced(run, cp, state, outcome)
            for res in resolutions:
                self._set_callback(res, cp.now)
            self._upsert_ops(cp.run_id, ops)
            self._append(cp.run_id, history)
            for cb in callbacks:
                self._callbacks[cb.callback_id] = cb
            for child in children:
                self._insert_run(child.run)
                self._append(child.run.run_id, [child.started])
            self._insert_events(events, cp.now)
            try:
                for wake_up in wake_ups:
                    self._wake_up(wake_up, cp.now)
                for cancel in cancels:
                    self._cancel(cancel, cp.now)
            except BaseException:
                if undo is not None:
                    undo()
                raise
            return CommitResult(cancel_requested=run.cancel_requested)

    async def history(self, run_id: str, *, after_seq: int = 0) -> list[HistoryEvent]:
        with self._lock:
            return [
                replace(e, details=_doc(e.details))
                for e in self._history.get(run_id, [])
                if e.seq > after_seq
            ]

    async def append_history(self, run_id: str, events: Sequence[HistoryEvent]) -> None:
        with self._lock:
            self._run(run_id)
            self._append(run_id, [self._event(e) for e in events])

    # --- callbacks ----------------------------------------------------------------------

    async def get_callback(self, callback_id: str) -> CallbackRecord:
        with self._lock:
            cb = self._callbacks.get(callback_id)
            if cb is None:
                raise CallbackNotFound(f"no callback {callback_id!r}")
            return _callback_copy(cb)

    async def complete_callback(self, resolution: CallbackResolution, *, now: datetime) -> bool:
        with self._lock:
            self._check_resolvable(resolution.callback_id)
            return self._resolve(replace(resolution, error=_error(resolution.error)), now)

    async def heartbeat_callback(self, callback_id: str, *, now: datetime) -> bool:
        with self._lock:
            cb = self._callbacks.get(callback_id)
            if cb is None or cb.status != CallbackStatus.PENDING:
                return False
            self._callbacks[callback_id] = replace(cb, heartbeat_at=now)
            return True

    async def open_event_waiters(self) -> list[CallbackRecord]:
        with self._lock:
            waiting = [
                c
                for c in self._callbacks.values()
                if c.kind == CallbackKind.EVENT and c.status == CallbackStatus.PENDING
            ]
            return [_callback_copy(c) for c in sorted(waiting, key=lambda c: c.created_at)]

    # --- events -------------------------------------------------------------------------

    async def publish(self, events: Sequence[dict[str, Any]], *, now: datetime) -> None:
        with self._lock:
            self._insert_events([(str(e["id"]), _doc(e)) for e in events], now)

    async def fetch_outbox(self, *, limit: int) -> list[OutboxEntry]:
        with self._lock:
            waiting = [e for e in self._outbox.values() if e.delivered_at is None]
            return [_entry_copy(e) for e in waiting[: max(limit, 0)]]

    async def mark_delivered(self, seqs: Sequence[int], *, now: datetime) -> None:
        with self._lock:
            for seq in seqs:
                if seq in self._outbox:
                    self._outbox[seq] = replace(self._outbox[seq], delivered_at=now)

    async def list_events(self, *, limit: int = 50) -> list[OutboxEntry]:
        with self._lock:
            recent = list(reversed(self._outbox.values()))[: max(limit, 0)]
            return [_entry_copy(e) for e in recent]

    async def put_rule(self, rule: Rule) -> None:
        with self._lock:
            stored = _rule_copy(rule)
            if rule.name in self._rules:  # a replaced rule keeps the time it was created
                stored = replace(stored, created_at=self._rules[rule.name].created_at)
            self._rules[rule.name] = stored

    async def list_rules(self) -> list[Rule]:
        with self._lock:
            return [_rule_copy(self._rules[name]) for name in sorted(self._rules)]

    async def delete_rule(self, name: str) -> bool:
        with self._lock:
            return self._rules.pop(name, None) is not None

    # --- API keys -----------------------------------------------------------------------

    async def put_api_key(self, key: ApiKeyRecord) -> None:
        with self._lock:
            self._api_keys[key.key_id] = key

    async def get_api_key(self, key_id: str) -> ApiKeyRecord | None:
        with self._lock:
            return self._api_keys.get(key_id)

    async def list_api_keys(self) -> list[ApiKeyRecord]:
        with self._lock:
            return sorted(self._api_keys.values(), key=lambda k: (k.created_at, k.key_id))

    async def revoke_api_key(self, key_id: str, *, now: datetime) -> bool:
        with self._lock:
            key = self._api_keys.get(key_id)
            if key is None or key.revoked_at is not None:
                return False
            self._api_keys[key_id] = replace(key, revoked_at=now)
            return True

    # --- checks: they read and raise, and never write ------------------------------------

    def _run(self, run_id: str) -> RunRecord:
        run = self._runs.get(run_id)
        if run is None:
            raise RunNotFound(run_id)
        return run

    def _matching(
        self, workflows: Sequence[tuple[str, str]] | None, queues: Sequence[str] | None
    ) -> Iterable[RunRecord]:
        pairs = set(workflows) if workflows is not None else None
        names = set(queues) if queues is not None else None
        return (
            r
            for r in self._runs.values()
            if (pairs is None or (r.workflow, r.version) in pairs)
            and (names is None or r.queue in names)
        )

    def _budgets(self, now: datetime) -> tuple[dict[str, float], dict[str, float]]:
        """How many runs each limited queue may start now, and the tokens in its bucket."""
        budgets: dict[str, float] = {}
        tokens: dict[str, float] = {}
        for config in self._queues.values():
            if not config.limited:
                continue
            budget = math.inf
            if config.concurrency is not None:
                active = sum(
                    1
                    for r in self._runs.values()
                    if r.queue == config.name
                    and r.status == RunStatus.RUNNING
                    and r.lease_expires_at is not None
                    and r.lease_expires_at > now
                )
                budget = config.concurrency - active
            if config.rate_limit is not None:
                held, counted_at = self._buckets.get(config.name, (None, None))
                tokens[config.name] = refill_tokens(config, held, counted_at, now)
                budget = min(budget, math.floor(tokens[config.name]))
            budgets[config.name] = budget
        return budgets, tokens

    def _fenced(self, cp: Checkpoint) -> RunRecord:
        run = self._run(cp.run_id)
        if run.lease_owner != cp.owner or run.lease_epoch != cp.expected_epoch:
            raise LeaseLost(
                f"run {cp.run_id}: lease epoch {cp.expected_epoch} of {cp.owner} is no longer"
                f" current (now {run.lease_epoch} of {run.lease_owner}); checkpoint rejected"
            )
        return run

    def _check_resolutions(self, cp: Checkpoint) -> None:
        seen: set[str] = set()
        for res in cp.resolutions:
            cb = self._callbacks.get(res.callback_id)
            if cb is None or cb.status != CallbackStatus.PENDING or res.callback_id in seen:
                raise CheckpointConflict(
                    f"run {cp.run_id}: callback {res.callback_id} was completed meanwhile"
                )
            seen.add(res.callback_id)

    def _check_new_callbacks(self, callbacks: Sequence[CallbackRecord]) -> None:
        seen: set[str] = set()
        for cb in callbacks:
            if cb.callback_id in self._callbacks or cb.callback_id in seen:
                raise StoreError(
                    f"callback {cb.callback_id!r} already exists; nothing of this write was stored",
                    retryable=False,
                )
            seen.add(cb.callback_id)

    def _check_new_runs(self, runs: Sequence[RunRecord]) -> None:
        ids: set[str] = set()
        keys: set[str] = set()
        for run in runs:
            key = run.idempotency_key
            if run.run_id in self._runs or run.run_id in ids:
                what = f"run id {run.run_id!r}"
            elif key is not None and (key in self._keys or key in keys):
                what = f"idempotency key {key!r}"
            else:
                ids.add(run.run_id)
                if key is not None:
                    keys.add(key)
                continue
            raise StoreError(
                f"the {what} is taken; nothing of this write was stored", retryable=False
            )

    def _check_resolvable(self, callback_id: str) -> None:
        """Refuse what resolving the callback from outside its run would refuse."""
        cb = self._callbacks.get(callback_id)
        if cb is None:
            raise CallbackNotFound(f"no callback {callback_id!r}")
        run = self._runs[cb.run_id]
        if run.status.terminal:
            raise RunStateError(
                f"run {run.run_id} already ended ({run.status}); its callbacks are closed"
            )

    def _cancellation_copy(self, cancel: Cancellation) -> Cancellation:
        wake_up = _wake_up_copy(cancel.wake_up) if cancel.wake_up is not None else None
        error = ErrorInfo.from_dict(_doc(cancel.error.to_dict()))
        return replace(cancel, error=error, event=self._event(cancel.event), wake_up=wake_up)

    def _undo_log(self) -> Callable[[], None]:
        """What puts the store back as it is now. For the writes to other runs, whose
        later parts can only be checked once the earlier ones are applied (a cancelled
        parent no longer waits for the child cancelled after it)."""
        runs, keys, woken = dict(self._runs), dict(self._keys), set(self._woken)
        history = {run_id: list(events) for run_id, events in self._history.items()}
        ops = {run_id: dict(journal) for run_id, journal in self._ops.items()}
        callbacks, outbox = dict(self._callbacks), dict(self._outbox)
        event_ids = set(self._event_ids)

        def undo() -> None:
            self._runs, self._keys, self._woken = runs, keys, woken
            self._history, self._ops = history, ops
            self._callbacks, self._outbox, self._event_ids = callbacks, outbox, event_ids

        return undo

    # --- writes: called only once every check has passed ----------------------------------

    def _event(self, event: HistoryEvent) -> HistoryEvent:
        details = json.loads(json.dumps(event.details, default=str)) if event.details else {}
        return replace(event, details=details)

    def _insert_run(self, run: RunRecord) -> None:
        self._runs[run.run_id] = run
        if run.idempotency_key is not None:
            self._keys[run.idempotency_key] = run.run_id

    def _append(self, run_id: str, events: Sequence[HistoryEvent]) -> None:
        history = self._history.setdefault(run_id, [])
        for event in events:
            history.append(replace(event, seq=(history[-1].seq if history else 0) + 1))

    def _upsert_ops(self, run_id: str, ops: Sequence[OpRecord]) -> None:
        journal = self._ops.setdefault(run_id, {})
        for op in ops:
            known = journal.get(op.op_id)
            # As in the SQL stores, a record keeps its place, parent, type and name.
            journal[op.op_id] = (
                op
                if known is None
                else known.evolve(
                    status=op.status,
                    attempt=op.attempt,
                    result=op.result,
                    error=op.error,
                    started_at=op.started_at,
                    ended_at=op.ended_at,
                    data=op.data,
                )
            )

    def _insert_events(self, events: Sequence[tuple[str, dict[str, Any]]], now: datetime) -> None:
        for event_id, event in events:
            if event_id in self._event_ids:
                continue
            self._event_ids.add(event_id)
            seq = max(self._outbox, default=0) + 1  # pruning leaves gaps
            self._outbox[seq] = OutboxEntry(seq=seq, event=event, published_at=now)

    def _advanced(
        self,
        run: RunRecord,
        cp: Checkpoint,
        state: dict[str, Any] | None,
        outcome: RunOutcome | None,
    ) -> RunRecord:
        run = run.evolve(updated_at=cp.now)
        if state is not None:
            run = run.evolve(state=state)
        if outcome is not None:
            return run.evolve(
                status=outcome.status,
                result=outcome.result,
                error=outcome.error,
                lease_owner=None,
                lease_expires_at=None,
                wake_at=None,
            )
        if cp.suspend:
            # The wake-up rule: one that came in since the claim is not lost by suspending.
            woken = run.run_id in self._woken
            return run.evolve(
                status=RunStatus.PENDING if woken else RunStatus.SUSPENDED,
                wake_at=cp.wake_at,
                lease_owner=None,
                lease_expires_at=None,
            )
        return run

    def _set_callback(self, res: CallbackResolution, now: datetime) -> bool:
        cb = self._callbacks.get(res.callback_id)
        if cb is None or cb.status != CallbackStatus.PENDING:
            return False
        self._callbacks[res.callback_id] = replace(
            cb, status=res.status, result=res.result, error=res.error, completed_at=now
        )
        return True

    def _resolve(self, res: CallbackResolution, now: datetime) -> bool:
        """Resolve a callback from outside its run and wake the run (checked beforehand)."""
        if not self._set_callback(res, now):
            return False
        run_id = self._callbacks[res.callback_id].run_id
        run = self._runs[run_id]
        self._woken.add(run_id)
        status = RunStatus.PENDING if run.status == RunStatus.SUSPENDED else run.status
        self._runs[run_id] = run.evolve(status=status, updated_at=now)
        return True

    def _wake_up(self, wake_up: WakeUp, now: datetime) -> None:
        """Apply a WakeUp if it still applies: the run has not ended, the callback waits."""
        run = self._runs.get(wake_up.run_id)
        if run is None or run.status.terminal:
            return
        cb = self._callbacks.get(wake_up.resolution.callback_id)
        if cb is None or cb.run_id != run.run_id:
            raise CallbackNotFound.to_wake(run.run_id, wake_up.resolution.callback_id)
        self._resolve(wake_up.resolution, now)

    def _cancel(self, cancel: Cancellation, now: datetime) -> None:
        run = self._runs.get(cancel.run_id)
        if run is None or run.status.terminal:
            return
        if _held(run, now):
            # The worker sees the flag at its next checkpoint and stops the run itself.
            self._runs[run.run_id] = run.evolve(cancel_requested=True, updated_at=now)
            return
        self._runs[run.run_id] = run.evolve(
            status=RunStatus.CANCELLED,
            cancel_requested=True,
            error=cancel.error,
            lease_owner=None,
            lease_expires_at=None,
            wake_at=None,
            updated_at=now,
        )
        self._append(run.run_id, [cancel.event])
        if cancel.wake_up is not None:
            self._wake_up(cancel.wake_up, now)


def _wake_up_copy(wake_up: WakeUp) -> WakeUp:
    resolution = wake_up.resolution
    return replace(wake_up, resolution=replace(resolution, error=_error(resolution.error)))


def _runnable(run: RunRecord, now: datetime) -> bool:
    if run.status == RunStatus.PENDING:
        return True
    if run.status == RunStatus.SUSPENDED:
        return run.wake_at is not None and run.wake_at <= now
    if run.status == RunStatus.RUNNING:
        return run.lease_expires_at is not None and run.lease_expires_at <= now
    return False


def _held(run: RunRecord, now: datetime) -> bool:
    return (
        run.status == RunStatus.RUNNING
        and run.lease_expires_at is not None
        and run.lease_expires_at > now
    )
