"""A unit of work: read what a write depends on, change it in memory, commit it at once.

DynamoDB has no read-modify-write transactions, only conditional writes. So every write
of the store is planned as a unit: the items it depends on are read (strongly consistent),
changed in memory by the same rules as the other stores, and written in one
``TransactWriteItems`` whose conditions say "each item is still as I read it" (a version
number on run heads and callbacks, absence for new items). If another writer got there
first, the transaction is cancelled with the failing item named, and the store either
reports what that means (a lost lease, a callback completed meanwhile) or plans again
from fresh reads. A unit touches each item once, as DynamoDB requires, however many
rules reach it (a run cancelled whose parent is woken by the same checkpoint).
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, TypeVar

from cadenza.adapters.dynamodb import _items as it
from cadenza.adapters.dynamodb._table import (
    STASH_ABOVE,
    Table,
    TransactionCancelled,
    Write,
    check,
    put,
    update,
)
from cadenza.errors import CallbackNotFound, StoreUnavailable
from cadenza.history import HistoryEvent
from cadenza.ports.run_store import (
    CallbackRecord,
    CallbackResolution,
    CallbackStatus,
    Cancellation,
    RunRecord,
    RunStatus,
    WakeUp,
)


@dataclass(slots=True)
class RunState:
    """A run as a unit read it, with the head's bookkeeping and what the unit changed."""

    run: RunRecord
    wake: bool = False  # a wake-up arrived since the last claim
    hseq: int = 0  # the last history seq
    writes: int = 0  # journal writes so far (orders journal records and pages)
    ver: int | None = None  # None: a new run
    head_dirty: bool = False
    body_dirty: bool = False
    has_body: bool = True  # False: only the head was read (a checkpoint that keeps the body)
    woken_only: bool = False  # the unit's only change to the head is a wake-up
    read_status: RunStatus | None = None  # the status a wake-up found
    history: list[HistoryEvent] = field(default_factory=list)


@dataclass(slots=True)
class CallbackState:
    callback: CallbackRecord
    ver: int | None = None  # None: a new callback
    dirty: bool = False


@dataclass(slots=True)
class Tagged:
    """A write and what it stands for, to read a cancelled transaction's reasons."""

    write: Write
    tag: tuple[str, str]


class Unit:
    def __init__(
        self, table: Table, finish: Callable[[str], Awaitable[bool]] | None = None
    ) -> None:
        self.table = table
        # Applies a run's committed but unfinished intents (see _intents); True if any.
        self.finish = finish
        self.runs: dict[str, RunState | None] = {}
        self.callbacks: dict[str, CallbackState | None] = {}
        self.extra: list[Tagged] = []
        self.checks: dict[str, int] = {}  # run heads a decision read but did not change

    # --- reads ----------------------------------------------------------------------------

    async def run(self, run_id: str, *, body: bool = True) -> RunState | None:
        """The run as read; ``body=False`` reads only its head (under 1 KB), enough to
        fence a checkpoint that changes nothing of the body."""
        if run_id not in self.runs:
            self.runs[run_id] = await read_run(self.table, run_id, body=body)
        state = self.runs[run_id]
        if body and state is not None and not state.has_body:
            item = await self.table.get(it.run_pk(run_id), it.BODY)
            if item is not None:
                doc = await load_doc(self.table, run_id, item)
                head = it.head_item(state.run, wake=False, hseq=0, writes=0, ver=0)
                state.run = it.run_of(head, doc)
                state.has_body = True
        return state

    async def callback(self, callback_id: str) -> CallbackState | None:
        if callback_id not in self.callbacks:
            self.callbacks[callback_id] = await read_callback(self.table, callback_id)
        return self.callbacks[callback_id]

    def add_run(self, run: RunRecord, started: HistoryEvent) -> None:
        self.runs[run.run_id] = RunState(run, head_dirty=True, body_dirty=True, history=[started])

    def add_callback(self, callback: CallbackRecord) -> None:
        self.callbacks[callback.callback_id] = CallbackState(callback, dirty=True)

    def add(self, write: Write, tag: tuple[str, str]) -> None:
        self.extra.append(Tagged(write, tag))

    # --- the rules every store shares ----------------------------------------------------

    def change(self, target: RunState, *, body: bool = False, **changes: Any) -> None:
        target.run = target.run.evolve(**changes)
        target.head_dirty = True
        target.body_dirty = target.body_dirty or body
        target.woken_only = False

    def append(self, state: RunState, events: list[HistoryEvent]) -> None:
        if events:
            state.history.extend(events)
            state.head_dirty = True

    def resolve(self, cb: CallbackState, res: CallbackResolution, now: datetime) -> bool:
        if cb.callback.status != CallbackStatus.PENDING:
            return False
        cb.callback = replace(
            cb.callback, status=res.status, result=res.result, error=res.error, completed_at=now
        )
        cb.dirty = True
        return True

    def wake(self, state: RunState, now: datetime) -> None:
        status = RunStatus.PENDING if state.run.status == RunStatus.SUSPENDED else state.run.status
        untouched = not state.head_dirty
        state.read_status = state.run.status
        state.wake = True
        self.change(state, status=status, updated_at=now)
        state.woken_only = untouched

    async def wake_up(self, wake_up: WakeUp, now: datetime) -> None:
        """Apply a WakeUp if it still applies: the run has not ended, the callback waits."""
        state = await self.run(wake_up.run_id, body=False)
        if state is None or state.run.status.terminal:
            return
        cb = await self.callback(wake_up.resolution.callback_id)
        if cb is None and self.finish is not None and await self.finish(wake_up.run_id):
            raise Again  # the callback was in a large checkpoint not yet finished: now it is
        if cb is None or cb.callback.run_id != wake_up.run_id:
            raise CallbackNotFound.to_wake(wake_up.run_id, wake_up.resolution.callback_id)
        if self.resolve(cb, wake_up.resolution, now):
            self.wake(state, now)

    async def cancel(self, cancel: Cancellation, now: datetime) -> None:
        state = await self.run(cancel.run_id, body=True)
        if state is None or state.run.status.terminal:
            return
        run = state.run
        if (
            run.status == RunStatus.RUNNING
            and run.lease_expires_at is not None
            and run.lease_expires_at > now
        ):
            # The worker sees the flag at its next checkpoint and stops the run itself.
            self.change(state, cancel_requested=True, updated_at=now)
            return
        self.change(
            state,
            body=True,
            status=RunStatus.CANCELLED,
            cancel_requested=True,
            error=cancel.error,
            lease_owner=None,
            lease_expires_at=None,
            wake_at=None,
            updated_at=now,
        )
        self.append(state, [cancel.event])
        if cancel.wake_up is not None:
            await self.wake_up(cancel.wake_up, now)

    # --- the write ------------------------------------------------------------------------

    async def writes(self) -> list[Tagged]:
        """Every write of the unit, conditioned on the items being as they were read."""
        out: list[Tagged] = []
        for run_id, state in self.runs.items():
            if state is None:
                continue
            if not state.head_dirty:
                if run_id in self.checks and state.ver is not None:
                    cond = check(it.run_pk(run_id), it.HEAD, "ver = :v", {":v": state.ver})
                    out.append(Tagged(cond, ("head", run_id)))
                continue
            out += await self._run_writes(state)
        for callback_id, cb in self.callbacks.items():
            if cb is None or not cb.dirty:
                continue
            item = it.callback_item(cb.callback, ver=(cb.ver or 0) + 1)
            if cb.ver is None:
                out.append(
                    Tagged(put(item, "attribute_not_exists(pk)"), ("new-callback", callback_id))
                )
                locator = {"pk": f"CB#{callback_id}", "sk": "CB", "run": cb.callback.run_id}
                out.append(
                    Tagged(put(locator, "attribute_not_exists(pk)"), ("new-callback", callback_id))
                )
            else:
                out.append(Tagged(put(item, "ver = :v", {":v": cb.ver}), ("callback", callback_id)))
        return out + self.extra

    async def _run_writes(self, state: RunState) -> list[Tagged]:
        run = state.run
        if state.woken_only and not state.history and state.ver is not None:
            was = state.read_status or run.status
            return [Tagged(_wake_write(run, was, state.ver), ("wake", run.run_id))]
        first = state.hseq + 1
        hseq = state.hseq + len(state.history)
        head = it.head_item(
            run, wake=state.wake, hseq=hseq, writes=state.writes, ver=(state.ver or 0) + 1
        )
        if state.ver is None:
            out = [Tagged(put(head, "attribute_not_exists(pk)"), ("new-run", run.run_id))]
        else:
            out = [Tagged(put(head, "ver = :v", {":v": state.ver}), ("head", run.run_id))]
        if state.body_dirty:
            assert state.has_body, "a run's body is written only after it was read"
            body = await self.stashed(
                run.run_id, {"pk": it.run_pk(run.run_id), "sk": it.BODY}, it.body_doc(run)
            )
            out.append(Tagged(put(body), ("body", run.run_id)))
        if state.history:
            page = {
                "pk": it.run_pk(run.run_id),
                "sk": it.history_sk(first),
                "n": len(state.history),
            }
            item = await self.stashed(run.run_id, page, [it.event_doc(e) for e in state.history])
            out.append(Tagged(put(item, "attribute_not_exists(pk)"), ("history", run.run_id)))
        return out

    async def stashed(self, run_id: str, item: it.Item, doc: Any) -> it.Item:
        """``item`` holding ``doc`` as JSON in ``d``, or a reference ``b`` when too large."""
        text = it.dumps(doc)
        if len(text.encode()) > STASH_ABOVE:
            return {**item, "b": await self.table.stash(run_id, text)}
        return {**item, "d": text}


def _wake_write(run: RunRecord, was: RunStatus, seen: int) -> Write:
    """A wake-up of another run as an UpdateItem conditioned on its status alone.

    Many children ending at once all wake their parent: conditioning on the head's
    version would make them retry one another; the status is all a wake-up depends on
    (SUSPENDED becomes PENDING, anything else keeps its status). The version still moves
    on, so that a checkpoint of the parent that read the head before the wake-up (and
    would suspend without seeing it) is refused and planned again.
    """
    values: dict[str, Any] = {":wk": True, ":up": it.iso(run.updated_at), ":one": 1}
    sets = ["wk = :wk", "up = :up"]
    if was == RunStatus.SUSPENDED:  # now it is runnable at once
        head = it.head_item(run, wake=True, hseq=0, writes=0, ver=seen)
        values.update(
            {
                ":st": str(RunStatus.PENDING),
                ":was": str(RunStatus.SUSPENDED),
                ":g1pk": head["g1pk"],
                ":g1sk": head["g1sk"],
            }
        )
        sets += ["st = :st", "g1pk = :g1pk", "g1sk = :g1sk"]
        condition = "st = :was"
    else:
        values[":st"] = str(was)
        condition = "st = :st"
    expression = f"SET {', '.join(sets)} ADD ver :one"
    return update(it.run_pk(run.run_id), it.HEAD, expression, values, condition=condition)


# --- reading the items units start from -----------------------------------------------------


async def read_run(table: Table, run_id: str, *, body: bool = True) -> RunState | None:
    if not body:
        head = await table.get(it.run_pk(run_id), it.HEAD)
        if head is None:
            return None
        state = state_of(head, {"input": ""})
        state.has_body = False
        return state
    items = await table.partition(it.run_pk(run_id), it.HEAD, it.BODY)
    head = next((i for i in items if i["sk"] == it.HEAD), None)
    found = next((i for i in items if i["sk"] == it.BODY), None)
    if head is None or found is None:
        return None
    return state_of(head, await load_doc(table, run_id, found))


async def read_runs(table: Table, heads: Sequence[it.Item]) -> list[RunRecord]:
    """Runs from index heads, re-read consistently (an index may lag the table); the
    ones gone meanwhile are left out."""
    keys = [(h["pk"], sk) for h in heads for sk in (it.HEAD, it.BODY)]
    items = await table.batch_get(keys)
    runs = []
    for head in heads:
        fresh = items.get((head["pk"], it.HEAD))
        body = items.get((head["pk"], it.BODY))
        if fresh is not None and body is not None:
            runs.append(it.run_of(fresh, await load_doc(table, head["pk"][2:], body)))
    return runs


def state_of(head: it.Item, body: dict[str, Any]) -> RunState:
    return RunState(
        it.run_of(head, body),
        wake=bool(head.get("wk", False)),
        hseq=head.get("hs", 0),
        writes=head.get("wc", 0),
        ver=head["ver"],
    )


async def load_doc(table: Table, run_id: str, item: it.Item) -> Any:
    text = item["d"] if "d" in item else await table.unstash(run_id, item["b"])
    return json.loads(text)


async def read_callback(table: Table, callback_id: str) -> CallbackState | None:
    locator = await table.get(f"CB#{callback_id}", "CB")
    if locator is None:
        return None
    item = await table.get(it.run_pk(locator["run"]), it.callback_sk(callback_id))
    if item is None:
        return None
    return CallbackState(it.callback_of(item), ver=item.get("ver", 0))


# --- committing a unit ---------------------------------------------------------------------

T = TypeVar("T")
_ATTEMPTS = 40


class Again(Exception):
    """A unit raced another writer on an item it did not mean to fence: plan it again."""


async def apply(table: Table, unit: Unit, extra: Sequence[Tagged] = ()) -> set[tuple[str, str]]:
    """Commit the unit; the tags of the items whose condition failed (empty: done)."""
    return await transact(table, [*await unit.writes(), *extra])


async def transact(table: Table, tagged: Sequence[Tagged]) -> set[tuple[str, str]]:
    """Commit tagged writes; the tags of the items whose condition failed (empty: done)."""
    try:
        await table.transact([t.write for t in tagged])
    except TransactionCancelled as refused:
        failed = {t.tag for i, t in enumerate(tagged) if refused.failed(i)}
        if not failed:
            raise Again from refused  # a conflict with a concurrent transaction
        return failed
    return set()


async def retrying(attempt: Callable[[], Awaitable[T]]) -> T:
    """Plan and commit a write until it commits or fails for a reason of its own."""
    for n in range(_ATTEMPTS):
        try:
            return await attempt()
        except Again:
            await asyncio.sleep(random.uniform(0, min(0.005 * 2**n, 0.25)))
    raise StoreUnavailable(
        f"DynamoDB: a write kept racing other writers ({_ATTEMPTS} attempts); try again"
    )
