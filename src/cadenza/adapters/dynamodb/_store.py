"""DynamoDbRunStore: the run store port on one DynamoDB table (``dynamodb://TABLE``).

The layout is in ``_items``; how a write is read, planned and committed in ``_unit``. A
checkpoint is one ``TransactWriteItems``: the run's head at the version read (which is
the fence: a claim by another worker changes owner and epoch, and the store answers
LeaseLost), resolutions on callbacks at the version read while PENDING (CheckpointConflict
when one was completed meanwhile), journal records, one history page, new callbacks,
children, outbox entries, and the other runs the engine's wake-ups and cancellations
reach. A write that raced another writer on an item it did not mean to fence is planned
again from fresh reads. Nothing is ever half applied.

Durability is DynamoDB's: a write is acknowledged once stored in several availability
zones. Reads the port's guarantees depend on are strongly consistent; only the two
indexes (claims and listings) are eventually consistent, which can delay a claim or a
listing by the index's lag, never break a lease.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlparse

from cadenza.adapters.dynamodb import _items as it
from cadenza.adapters.dynamodb._claims import claim_runs, queue_stats
from cadenza.adapters.dynamodb._events import DynamoDbEvents
from cadenza.adapters.dynamodb._intents import INTENT, apply_intent, finish_intent, fits, intent
from cadenza.adapters.dynamodb._journal import journal_writes, op_writes, read_activation, tombstone
from cadenza.adapters.dynamodb._retention import DynamoDbRetention
from cadenza.adapters.dynamodb._schedules import DynamoDbSchedules
from cadenza.adapters.dynamodb._table import (
    ConditionFailed,
    Table,
    put,
)
from cadenza.adapters.dynamodb._unit import (
    Again,
    RunState,
    Tagged,
    Unit,
    apply,
    load_doc,
    read_callback,
    read_run,
    read_runs,
    retrying,
    transact,
)
from cadenza.errors import (
    CallbackNotFound,
    CheckpointConflict,
    ConfigurationError,
    LeaseLost,
    RunAlreadyExists,
    RunNotFound,
    RunStateError,
    StoreError,
)
from cadenza.history import HistoryEvent
from cadenza.journal import OpRecord
from cadenza.ports.artifact_store import ArtifactStore
from cadenza.ports.run_store import (
    CallbackKind,
    CallbackRecord,
    CallbackResolution,
    CallbackStatus,
    Cancellation,
    Checkpoint,
    CommitResult,
    QueueConfig,
    QueueStats,
    Redrive,
    RunPage,
    RunRecord,
    RunStatus,
    RunStore,
)

T = TypeVar("T")
_LONG_AGO = datetime.fromtimestamp(0, UTC)
_ATTEMPTS = 12


class DynamoDbRunStore(DynamoDbEvents, DynamoDbSchedules, DynamoDbRetention, RunStore):
    """Run store on one DynamoDB table: ``dynamodb://TABLE?region=eu-west-1``.

    ``endpoint_url`` points it at another endpoint (DynamoDB Local, a moto server).
    ``artifacts`` is where records too large for an item go; without one they are split
    into chunks inside the run's own partition.
    """

    def __init__(
        self,
        table: str,
        *,
        region: str | None = None,
        endpoint_url: str | None = None,
        artifacts: ArtifactStore | None = None,
    ) -> None:
        if not table:
            raise ConfigurationError("a DynamoDB run store needs a table: dynamodb://TABLE")
        self.table = Table(table, region=region, endpoint_url=endpoint_url, artifacts=artifacts)
        query = "&".join(
            f"{k}={v}" for k, v in (("region", region), ("endpoint_url", endpoint_url)) if v
        )
        self.url = f"dynamodb://{table}" + (f"?{query}" if query else "")

    @classmethod
    def from_url(cls, url: str, *, artifacts: ArtifactStore | None = None) -> DynamoDbRunStore:
        parsed = urlparse(url)
        options = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
        unknown = set(options) - {"region", "endpoint_url"}
        if unknown:
            raise ConfigurationError(
                f"{url!r}: unknown option(s) {', '.join(sorted(unknown))};"
                " use dynamodb://TABLE?region=...&endpoint_url=..."
            )
        return cls(
            parsed.netloc + parsed.path.rstrip("/"),
            region=options.get("region"),
            endpoint_url=options.get("endpoint_url"),
            artifacts=artifacts,
        )

    async def open(self) -> None:
        await self.table.create()

    async def close(self) -> None:
        client, self.table._client = self.table._client, None
        if client is not None and hasattr(client, "close"):
            await asyncio.to_thread(client.close)

    # --- runs ---------------------------------------------------------------------------

    async def create_run(self, run: RunRecord, started: HistoryEvent) -> RunRecord:
        async def attempt() -> RunRecord:
            key = run.idempotency_key
            if key is not None:
                known = await self.table.get(f"IK#{key}", "IK")
                if known is not None:
                    return await self.get_run(known["run"])
            unit = Unit(self.table)
            unit.add_run(run, started)
            failed = await apply(self.table, unit, _key_writes([run]))
            if ("new-run", run.run_id) in failed:
                raise RunAlreadyExists.id_taken(run.run_id)
            if failed:
                raise Again  # the key was taken meanwhile: return that run
            return _echo(run)

        return await retrying(attempt)

    async def get_run(self, run_id: str) -> RunRecord:
        state = await read_run(self.table, run_id)
        if state is None:
            raise RunNotFound(run_id)
        return state.run

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
        if limit <= 0:
            return []
        bounds = ["\uffff"]
        if after is not None:
            bounds.append(f"{it.time_key(after.created_at)}#{after.run_id}")
        if created_before is not None:
            bounds.append(it.time_key(created_before))
        lowest = it.time_key(created_after) if created_after is not None else None
        needle = text.lower() if text else None
        found: list[RunRecord] = []
        start: dict[str, Any] | None = None
        while len(found) < limit:
            params: dict[str, Any] = {
                "TableName": self.table.name,
                "IndexName": "gsi2",
                "KeyConditionExpression": "g2pk = :p AND g2sk < :before",
                "ExpressionAttributeValues": it.to_item({":p": it.RUNS, ":before": min(bounds)}),
                "ScanIndexForward": False,
                "Limit": 100,
            }
            if start is not None:
                params["ExclusiveStartKey"] = start
            reply = await self.table.call("query", **params)
            heads = [it.from_item(raw) for raw in reply.get("Items", [])]
            done = False
            matching = []
            for head in heads:
                if lowest is not None and head["g2sk"] < lowest:
                    done = True
                    break
                if (
                    (status is None or head["st"] == status)
                    and (workflow is None or head["wf"] == workflow)
                    and (parent_run_id is None or head.get("pa") == parent_run_id)
                    and (tenant is None or head.get("tn") == tenant)
                    and (trace_id is None or head.get("tr") == trace_id)
                ):
                    matching.append(head)
            runs = await read_runs(self.table, matching)
            for run in runs:
                if needle is None or needle in f"{run.run_id} {run.workflow} {run.input}".lower():
                    found.append(run)
            start = reply.get("LastEvaluatedKey")
            if done or not start:
                break
        return found[:limit]

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
        return await claim_runs(
            self.table,
            owner=owner,
            now=now,
            lease_until=lease_until,
            limit=limit,
            workflows=workflows,
            queues=queues,
            run_id=run_id,
            trace_id=trace_id,
        )

    async def renew_lease(
        self, run_id: str, *, owner: str, epoch: int, lease_until: datetime
    ) -> bool:
        try:
            await self.table.call(
                "update_item",
                TableName=self.table.name,
                Key=it.key(it.run_pk(run_id), it.HEAD),
                UpdateExpression="SET lx = :lx, g1sk = :due ADD ver :one",
                ConditionExpression="ow = :ow AND ep = :ep AND st = :running",
                ExpressionAttributeValues=it.to_item(
                    {
                        ":lx": it.iso(lease_until),
                        ":due": f"{it.time_key(lease_until)}#{run_id}",
                        ":one": 1,
                        ":ow": owner,
                        ":ep": epoch,
                        ":running": str(RunStatus.RUNNING),
                    }
                ),
            )
        except ConditionFailed:
            return False
        return True

    async def release_lease(self, run_id: str, *, owner: str, epoch: int) -> None:
        try:
            await self.table.call(
                "update_item",
                TableName=self.table.name,
                Key=it.key(it.run_pk(run_id), it.HEAD),
                UpdateExpression="SET st = :pending, g1sk = :due ADD ver :one REMOVE ow, lx",
                ConditionExpression="ow = :ow AND ep = :ep AND st = :running",
                ExpressionAttributeValues=it.to_item(
                    {
                        ":pending": str(RunStatus.PENDING),
                        ":due": f"{it.time_key(_LONG_AGO)}#{run_id}",
                        ":one": 1,
                        ":ow": owner,
                        ":ep": epoch,
                        ":running": str(RunStatus.RUNNING),
                    }
                ),
            )
        except ConditionFailed:
            pass  # the run moved on without us: nothing to hand back

    async def next_wake_at(
        self,
        *,
        workflows: Sequence[tuple[str, str]] | None = None,
        queues: Sequence[str] | None = None,
    ) -> datetime | None:
        pairs = {tuple(p) for p in workflows} if workflows is not None else None
        names = set(queues) if queues is not None else None
        start: dict[str, Any] | None = None
        while True:
            params: dict[str, Any] = {
                "TableName": self.table.name,
                "IndexName": "gsi1",
                "KeyConditionExpression": "g1pk = :p",
                "ExpressionAttributeValues": it.to_item({":p": it.RUNNABLE}),
                "Limit": 200,
            }
            if start is not None:
                params["ExclusiveStartKey"] = start
            reply = await self.table.call("query", **params)
            for head in map(it.from_item, reply.get("Items", [])):
                if (pairs is None or (head["wf"], head["wv"]) in pairs) and (
                    names is None or head["q"] in names
                ):
                    due = head["g1sk"].rsplit("#", 1)[0]
                    return datetime.strptime(due, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
            start = reply.get("LastEvaluatedKey")
            if not start:
                return None

    async def request_cancel(
        self, cancellations: Sequence[Cancellation], *, now: datetime
    ) -> RunRecord:
        if not cancellations:
            raise ValueError("request_cancel needs at least the run to cancel")
        run_id = cancellations[0].run_id

        async def attempt() -> RunRecord:
            unit = Unit(self.table, self._finish_run)
            state = await unit.run(run_id)
            if state is None:
                raise RunNotFound(run_id)
            if state.run.status.terminal:
                raise RunStateError(
                    f"run {run_id} already ended ({state.run.status}); there is nothing to cancel"
                )
            for cancel in cancellations:
                await unit.cancel(cancel, now)
            if await apply(self.table, unit):
                raise Again
            return state.run

        return await retrying(attempt)

    async def redrive_runs(self, redrives: Sequence[Redrive], *, now: datetime) -> list[RunRecord]:
        async def attempt() -> list[RunRecord]:
            unit = Unit(self.table)
            states: list[RunState] = []
            for rd in redrives:  # every run is checked before any is touched
                state = await unit.run(rd.run_id)
                if state is None:
                    raise RunNotFound(rd.run_id)
                run = state.run
                planned = state not in states and run.lease_epoch == rd.expected_epoch
                if run.status not in (RunStatus.FAILED, RunStatus.CANCELLED) or not planned:
                    raise RunStateError(
                        f"run {rd.run_id} changed since the retry was planned (it is"
                        f" {run.status} now); see 'cadenza runs show {rd.run_id}'"
                    )
                states.append(state)
            extra: list[Tagged] = []
            for rd, state in zip(redrives, states, strict=True):
                reset = {op.op_id for op in rd.reset}
                if rd.drop:
                    state.writes += 1  # tombstones come after every earlier write
                    extra += [
                        Tagged(tombstone(state, op_id), ("op", op_id))
                        for op_id in rd.drop
                        if op_id not in reset
                    ]
                extra += [Tagged(w, ("op", "")) for w in await op_writes(unit, state, rd.reset)]
                for callback_id in rd.reopen:
                    cb = await unit.callback(callback_id)
                    if cb is not None and cb.callback.run_id == rd.run_id:
                        cb.callback = CallbackRecord(
                            **{
                                **_fields(cb.callback),
                                "status": CallbackStatus.PENDING,
                                "result": None,
                                "error": None,
                                "completed_at": None,
                            }
                        )
                        cb.dirty = True
                run = state.run
                state.wake = False
                unit.change(
                    state,
                    body=True,
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
                    state=rd.state if rd.state is not None else run.state,
                )
                unit.append(state, [rd.event])
            if await apply(self.table, unit, extra):
                raise Again
            return [_echo(state.run) for state in states]

        return await retrying(attempt)

    async def fork_run(
        self, run: RunRecord, events: Sequence[HistoryEvent], journal: Sequence[OpRecord]
    ) -> RunRecord:
        async def attempt() -> RunRecord:
            unit = Unit(self.table)
            if not events:
                raise StoreError("a fork needs its first history event", retryable=False)
            unit.add_run(run, events[0])
            state = unit.runs[run.run_id]
            assert state is not None
            unit.append(state, list(events[1:]))
            keys = _key_writes([run])
            others = [t.write for t in [*await unit.writes(), *keys]]
            ops = await journal_writes(unit, state, journal, others)
            failed = await apply(self.table, unit, [*keys, *(Tagged(w, ("op", "")) for w in ops)])
            if failed & {("new-run", run.run_id), ("key", run.idempotency_key or "")}:
                raise _taken(run.run_id)
            if failed:
                raise Again
            return _echo(run)

        return await retrying(attempt)

    # --- queues -------------------------------------------------------------------------

    async def put_queue(self, config: QueueConfig) -> None:
        # The bucket and lease list stay as they are: a new limit hands out no fresh tokens.
        await self.table.call(
            "update_item",
            TableName=self.table.name,
            Key=it.key(it.QUEUES, config.name),
            UpdateExpression="SET d = :d",
            ExpressionAttributeValues=it.to_item({":d": it.dumps(it.queue_doc(config))}),
        )

    async def list_queues(self) -> list[QueueConfig]:
        return [it.queue_of(i) for i in await self.table.query("pk = :p", {":p": it.QUEUES})]

    async def queue_stats(self, *, now: datetime) -> list[QueueStats]:
        return await queue_stats(self.table, now)

    # --- activations --------------------------------------------------------------------

    async def load_journal(self, run_id: str) -> list[OpRecord]:
        return (await self.load_activation(run_id))[0]

    async def load_callbacks(self, run_id: str) -> list[CallbackRecord]:
        return (await self.load_activation(run_id))[1]

    async def load_activation(self, run_id: str) -> tuple[list[OpRecord], list[CallbackRecord]]:
        ops, callbacks, intents = await read_activation(self.table, run_id)
        if not intents:
            return ops, callbacks
        for item in intents:  # a large checkpoint whose writer died before finishing it
            await self._finish(run_id, item)
        ops, callbacks, _ = await read_activation(self.table, run_id)
        return ops, callbacks

    async def _finish_run(self, run_id: str) -> bool:
        """Apply the unfinished intents of ``run_id``; whether there were any."""
        intents = await self.table.partition(it.run_pk(run_id), INTENT, INTENT + "~")
        for item in intents:
            await self._finish(run_id, item)
        return bool(intents)

    async def _finish(self, run_id: str, item: it.Item) -> None:
        events = await apply_intent(self.table, run_id, item)
        if events:
            await self.publish(events, now=datetime.fromisoformat(item["at"]))
        await finish_intent(self.table, item)

    async def commit(self, checkpoint: Checkpoint) -> CommitResult:
        cp = checkpoint

        async def attempt() -> CommitResult:
            unit = Unit(self.table, self._finish_run)
            # Most checkpoints (a step's result) leave the body alone: read only the head.
            body = cp.state is not None or cp.outcome is not None
            state = await unit.run(cp.run_id, body=body)
            if state is None:
                raise RunNotFound(cp.run_id)
            run = state.run
            if run.lease_owner != cp.owner or run.lease_epoch != cp.expected_epoch:
                raise _lease_lost(cp, run)
            resolved = await self._resolutions(unit, cp)
            _check_new(cp)
            state.head_dirty = True  # the fence: the head at the version read
            if cp.state is not None or cp.outcome is not None or cp.suspend:
                _advance(unit, state, cp)
            for cb in cp.callbacks:
                unit.add_callback(cb)
            unit.append(state, list(cp.history))
            for child in cp.children:
                unit.add_run(child.run, child.started)
            extra = _key_writes([c.run for c in cp.children])
            extra += await self._outbox(cp.events, cp.now)
            for wake_up in cp.wake_ups:
                await unit.wake_up(wake_up, cp.now)
            for cancel in cp.cancels:
                await unit.cancel(cancel, cp.now)
            others = [t.write for t in [*await unit.writes(), *extra]]
            ops = await journal_writes(unit, state, cp.ops, others)
            tagged = [*await unit.writes(), *extra, *(Tagged(w, ("op", "")) for w in ops)]
            if not fits(tagged):
                children = {c.run.run_id for c in cp.children}
                tagged, deferred = await intent(
                    unit, cp.run_id, tagged, children, cp.events, cp.now
                )
                await self._check_free(deferred)
            failed = await transact(self.table, tagged)
            if not failed:
                for t in tagged:
                    if t.tag[0] == "intent":
                        item = it.from_item(t.write.entry["Put"]["Item"])
                        await self._finish(cp.run_id, item)
                return CommitResult(cancel_requested=run.cancel_requested)
            if failed & {("callback", r) for r in resolved}:
                raise CheckpointConflict(
                    f"run {cp.run_id}: a callback it resolves was completed meanwhile"
                )
            for kind, name in failed:
                if kind == "new-callback":
                    raise StoreError(
                        f"callback {name!r} already exists; nothing of this write was stored",
                        retryable=False,
                    )
                if kind in ("new-run", "key"):
                    raise _taken(name, key=kind == "key")
            raise Again  # the head (a renewal, a wake-up) or a counter moved: plan again

        return await retrying(attempt)

    async def _check_free(self, deferred: Sequence[Tagged]) -> None:
        """Refuse, as the transaction would have, new items whose keys are taken."""
        keys: dict[tuple[str, str], tuple[str, str]] = {}
        for t in deferred:
            if t.tag[0] in ("new-callback", "new-run", "key"):
                item = t.write.entry["Put"]["Item"]
                keys[(item["pk"]["S"], item["sk"]["S"])] = t.tag
        for key in await self.table.batch_get(list(keys)):
            kind, name = keys[key]
            if kind == "new-callback":
                raise StoreError(
                    f"callback {name!r} already exists; nothing of this write was stored",
                    retryable=False,
                )
            raise _taken(name, key=kind == "key")

    async def _resolutions(self, unit: Unit, cp: Checkpoint) -> set[str]:
        seen: set[str] = set()
        for res in cp.resolutions:
            cb = await unit.callback(res.callback_id)
            if (
                cb is None
                or cb.callback.status != CallbackStatus.PENDING
                or res.callback_id in seen
            ):
                raise CheckpointConflict(
                    f"run {cp.run_id}: callback {res.callback_id} was completed meanwhile"
                )
            unit.resolve(cb, res, cp.now)
            seen.add(res.callback_id)
        return seen

    async def history(self, run_id: str, *, after_seq: int = 0) -> list[HistoryEvent]:
        pages = await self.table.partition(it.run_pk(run_id), "H#", "H#~")
        events = []
        for page in pages:
            first = int(page["sk"][2:])
            if first + page["n"] - 1 <= after_seq:
                continue  # a page never holds a seq past first + n - 1, even compacted
            for index, doc in enumerate(await load_doc(self.table, run_id, page)):
                seq = doc.get("seq", first + index)
                if seq > after_seq:
                    events.append(it.event_of(seq, doc))
        return events

    async def append_history(self, run_id: str, events: Sequence[HistoryEvent]) -> None:
        async def attempt() -> None:
            unit = Unit(self.table)
            state = await unit.run(run_id, body=False)
            if state is None:
                raise RunNotFound(run_id)
            unit.append(state, list(events))
            if await apply(self.table, unit):
                raise Again

        await retrying(attempt)

    # --- callbacks ----------------------------------------------------------------------

    async def get_callback(self, callback_id: str) -> CallbackRecord:
        cb = await read_callback(self.table, callback_id)
        if cb is None:
            raise CallbackNotFound(f"no callback {callback_id!r}")
        return cb.callback

    async def complete_callback(self, resolution: CallbackResolution, *, now: datetime) -> bool:
        async def attempt() -> bool:
            unit = Unit(self.table)
            cb = await unit.callback(resolution.callback_id)
            if cb is None:
                raise CallbackNotFound(f"no callback {resolution.callback_id!r}")
            state = await unit.run(cb.callback.run_id, body=False)
            if state is None or state.run.status.terminal:
                status = state.run.status if state is not None else RunStatus.CANCELLED
                raise RunStateError(
                    f"run {cb.callback.run_id} already ended ({status}); its callbacks are closed"
                )
            if not unit.resolve(cb, resolution, now):
                return False
            unit.wake(state, now)
            if await apply(self.table, unit):
                raise Again  # re-read: if another completion won, we answer False
            return True

        return await retrying(attempt)

    async def heartbeat_callback(self, callback_id: str, *, now: datetime) -> bool:
        async def attempt() -> bool:
            unit = Unit(self.table)
            cb = await unit.callback(callback_id)
            if cb is None or cb.callback.status != CallbackStatus.PENDING:
                return False
            cb.callback = CallbackRecord(**{**_fields(cb.callback), "heartbeat_at": now})
            cb.dirty = True
            if await apply(self.table, unit):
                raise Again
            return True

        return await retrying(attempt)

    async def open_event_waiters(self) -> list[CallbackRecord]:
        items = await self.table.query("g1pk = :p", {":p": it.WAITING}, index="gsi1")
        waiting = [it.callback_of(i) for i in items]
        return [
            c
            for c in waiting
            if c.kind == CallbackKind.EVENT and c.status == CallbackStatus.PENDING
        ]


# --- helpers ---------------------------------------------------------------------------------


def _fields(record: Any) -> dict[str, Any]:
    return {name: getattr(record, name) for name in record.__slots__}


def _echo(run: RunRecord) -> RunRecord:
    """The run as the table now holds it (documents through JSON, as a read returns it)."""
    head = it.head_item(run, wake=False, hseq=0, writes=0, ver=0)
    return it.run_of(head, json.loads(it.dumps(it.body_doc(run))))


def _key_writes(runs: Sequence[RunRecord]) -> list[Tagged]:
    return [
        Tagged(
            put(
                {"pk": f"IK#{r.idempotency_key}", "sk": "IK", "run": r.run_id},
                "attribute_not_exists(pk)",
            ),
            ("key", r.idempotency_key),
        )
        for r in runs
        if r.idempotency_key is not None
    ]


def _taken(name: str, *, key: bool = False) -> StoreError:
    what = f"idempotency key {name!r}" if key else f"run id {name!r}"
    return StoreError(f"the {what} is taken; nothing of this write was stored", retryable=False)


def _check_new(cp: Checkpoint) -> None:
    """Refuse ids a checkpoint repeats within itself (the table refuses the ones it has)."""
    callbacks = [c.callback_id for c in cp.callbacks]
    if len(set(callbacks)) != len(callbacks):
        raise StoreError(
            "a callback id repeats in one checkpoint; nothing of this write was stored",
            retryable=False,
        )
    runs = [c.run.run_id for c in cp.children]
    keys = [c.run.idempotency_key for c in cp.children if c.run.idempotency_key is not None]
    for values, what in ((runs, "run id"), (keys, "idempotency key")):
        repeated = {v for v in values if values.count(v) > 1}
        if repeated:
            raise StoreError(
                f"the {what} {sorted(repeated)[0]!r} is taken; nothing of this write was stored",
                retryable=False,
            )


def _advance(unit: Unit, state: RunState, cp: Checkpoint) -> None:
    changes: dict[str, Any] = {"updated_at": cp.now}
    if cp.state is not None:
        changes["state"] = json.loads(json.dumps(cp.state))
    if cp.outcome is not None:
        changes.update(
            status=cp.outcome.status,
            result=cp.outcome.result,
            error=cp.outcome.error,
            lease_owner=None,
            lease_expires_at=None,
            wake_at=None,
        )
    elif cp.suspend:
        # The wake-up rule: one that came in since the claim is not lost by suspending.
        changes.update(
            status=RunStatus.PENDING if state.wake else RunStatus.SUSPENDED,
            wake_at=cp.wake_at,
            lease_owner=None,
            lease_expires_at=None,
        )
    unit.change(state, body=cp.state is not None or cp.outcome is not None, **changes)


def _lease_lost(cp: Checkpoint, run: RunRecord) -> LeaseLost:
    return LeaseLost(
        f"run {cp.run_id}: lease epoch {cp.expected_epoch} of {cp.owner} is no longer"
        f" current (now {run.lease_epoch} of {run.lease_owner}); checkpoint rejected"
    )
