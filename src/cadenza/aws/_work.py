"""The serverless worker: runs activated from SQS messages, inside Lambda's time limit.

A message on the work queue names a run (``{"run_id": …}``); it says "look at this run",
not "execute it". The handler claims that one run with a lease that ends when the
invocation must have ended, activates it, and acknowledges the message. Claiming is what
makes duplicates harmless: a message for a run that is not runnable (already advanced by
the first copy, ended, waiting) is acknowledged without doing anything, and of two
handlers racing for one run exactly one claims it.

What the activation changes is put back on the queue: the run itself when it suspends
on a timer due within SQS's longest delay (15 minutes), the children it started and the
runs it woke. Longer timers, and anything a lost message left behind, are found by the
sweeper, which enqueues every run that is runnable now.

**The 15-minute limit.** An activation may not outlive its invocation: it runs under a
deadline of the invocation's remaining time less a margin. At the deadline it is
cancelled, its lease handed back (the run becomes PENDING, its journal keeps every
checkpoint it committed) and the run put on the queue again, so the next invocation
replays to where this one stopped and goes on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, Protocol

from cadenza.aws._clients import LazyClient
from cadenza.aws._eventbridge import EventBridgePublisher, relay_to_eventbridge
from cadenza.errors import (
    CadenzaError,
    ConfigurationError,
    RunNotFound,
    StoreError,
    StoreUnavailable,
)
from cadenza.ports.run_store import Checkpoint, RunPage, RunRecord, RunStatus, RunStore

if TYPE_CHECKING:
    from cadenza.engine.engine import Engine

log = logging.getLogger("cadenza.aws")

MAX_DELAY: Final = timedelta(minutes=15)  # SQS DelaySeconds
#: A runnable run its queue's limits keep waiting is looked at again this much later.
CAPPED_RETRY: Final = timedelta(seconds=10)
_BATCH: Final = 10  # SendMessageBatch takes at most ten


class LambdaContext(Protocol):
    """The part of Lambda's context object the handlers use."""

    def get_remaining_time_in_millis(self) -> int: ...


class SqsWorkQueue:
    """The SQS queue of runs to look at: one message per run id, optionally delayed."""

    def __init__(
        self,
        url: str,
        *,
        region: str | None = None,
        endpoint_url: str | None = None,
        client: Any = None,
    ) -> None:
        if not url:
            raise ConfigurationError("the work queue needs its SQS queue URL")
        self.url = url
        self._client = LazyClient("sqs", client=client, region=region, endpoint_url=endpoint_url)

    @property
    def client(self) -> Any:
        return self._client.get()

    async def enqueue(self, run_ids: Sequence[str], *, delay: timedelta = timedelta(0)) -> None:
        """Put each run on the queue, visible after ``delay`` (at most 15 minutes)."""
        seconds = min(max(math.ceil(delay.total_seconds()), 0), int(MAX_DELAY.total_seconds()))
        unique = list(dict.fromkeys(run_ids))
        for start in range(0, len(unique), _BATCH):
            entries = [
                {
                    "Id": str(n),
                    "MessageBody": json.dumps({"run_id": run_id}),
                    "DelaySeconds": seconds,
                }
                for n, run_id in enumerate(unique[start : start + _BATCH])
            ]
            reply = await asyncio.to_thread(
                self.client.send_message_batch, QueueUrl=self.url, Entries=entries
            )
            if reply.get("Failed"):
                reasons = "; ".join(f"{f.get('Code')}: {f.get('Message')}" for f in reply["Failed"])
                # The runs stay runnable in the store: the sweeper finds them.
                raise StoreUnavailable(f"SQS did not take {len(reply['Failed'])} runs: {reasons}")


@dataclass
class AwsRuntime:
    """What the handlers of one Lambda container share across invocations."""

    engine: Engine
    work_queue: SqsWorkQueue
    publisher: EventBridgePublisher | None = None
    #: Kept back at the end of an invocation to hand an unfinished run back.
    margin: timedelta = timedelta(seconds=10)


@dataclass
class WorkReport:
    """What one worker invocation did with each message (by SQS message id)."""

    activated: dict[str, str] = field(default_factory=dict)  # message -> run status
    skipped: list[str] = field(default_factory=list)  # not runnable: acknowledged
    handed_back: list[str] = field(default_factory=list)  # deadline reached: re-enqueued
    failed: list[str] = field(default_factory=list)  # left on the queue for redelivery

    def response(self) -> dict[str, Any]:
        """Lambda's partial batch response: only the failed messages are retried."""
        return {"batchItemFailures": [{"itemIdentifier": m} for m in self.failed]}


async def handle_work(
    runtime: AwsRuntime, event: Mapping[str, Any], context: LambdaContext
) -> WorkReport:
    """Activate the runs named by an SQS batch, each alone: one failing message is
    reported in ``batchItemFailures`` and retried by SQS, the others are acknowledged."""
    engine = runtime.engine
    deadline = engine.clock.now() + timedelta(milliseconds=context.get_remaining_time_in_millis())
    report = WorkReport()
    followers: set[str] = set()

    def committed(run: RunRecord, checkpoint: Checkpoint) -> None:
        followers.update(child.run.run_id for child in checkpoint.children)
        followers.update(wake.run_id for wake in checkpoint.wake_ups)
        followers.update(cancel.run_id for cancel in checkpoint.cancels)

    unsubscribe = engine.subscribe(committed)
    try:
        records = list(event.get("Records", []))
        outcomes = await asyncio.gather(
            *(_one(runtime, record, deadline, report) for record in records),
            return_exceptions=True,
        )
    finally:
        unsubscribe()
    for record, outcome in zip(records, outcomes, strict=True):
        if isinstance(outcome, BaseException):
            if not isinstance(outcome, Exception):
                raise outcome
            log.error(
                "message %s failed; SQS delivers it again",
                record.get("messageId"),
                exc_info=outcome,
            )
            report.failed.append(record["messageId"])
    if followers:
        await _enqueue_runnable(runtime, followers)
    await relay_quietly(runtime)
    return report


async def relay_quietly(runtime: AwsRuntime) -> None:
    """Publish the outbox after work; when the bus refuses, the events stay in the outbox
    for the sweeper, and the work already done is not reported failed for it."""
    if runtime.publisher is None:
        return
    try:
        await relay_to_eventbridge(runtime.engine, runtime.publisher)
    except CadenzaError as exc:
        log.warning("outbox not published now (the sweeper publishes it): %s", exc)


async def _one(
    runtime: AwsRuntime, record: Mapping[str, Any], deadline: datetime, report: WorkReport
) -> None:
    engine, queue = runtime.engine, runtime.work_queue
    message = record["messageId"]
    run_id = _run_id(record)
    now = engine.clock.now()
    budget = (deadline - runtime.margin - now).total_seconds()
    if budget <= 0:  # no time left to do anything useful: look again in a new invocation
        await queue.enqueue([run_id])
        report.handed_back.append(message)
        return
    claimed = await engine.store.claim_runs(
        owner=engine.owner, now=now, lease_until=deadline, limit=1, run_id=run_id
    )
    if not claimed:
        await _not_runnable(runtime, run_id, now)
        report.skipped.append(message)
        return
    run = claimed[0]
    task = asyncio.create_task(engine.activate(run), name=f"run {run_id}")
    try:
        done, _ = await asyncio.wait([task], timeout=budget)
    except BaseException:
        # The invocation itself is being torn down: the activation goes with it, and its
        # lease runs out when the invocation would have ended (a later message resumes it).
        task.cancel()
        raise
    crash = task.exception() if done else None
    if crash is not None:  # the activation broke: hand the run back, SQS redelivers
        await _release(runtime, run)
        raise crash
    if not done:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await engine.store.release_lease(run_id, owner=engine.owner, epoch=run.lease_epoch)
        await queue.enqueue([run_id])
        log.info("run %s: handed back at the invocation's deadline, enqueued again", run_id)
        report.handed_back.append(message)
        return
    result = task.result()
    if isinstance(result.aborted, StoreError) and result.aborted.retryable:
        # The store refused a checkpoint (throttled, unavailable): nothing after it was
        # written. Hand the run back and let SQS deliver the message again.
        await _release(runtime, run)
        raise result.aborted
    after = await engine.store.get_run(run_id)
    await _follow_up(runtime, after)
    report.activated[message] = str(after.status)


async def _release(runtime: AwsRuntime, run: RunRecord) -> None:
    engine = runtime.engine
    try:
        await engine.store.release_lease(run.run_id, owner=engine.owner, epoch=run.lease_epoch)
    except StoreError as exc:  # its lease runs out instead
        log.warning("run %s: not handed back: %s", run.run_id, exc)


async def _not_runnable(runtime: AwsRuntime, run_id: str, now: datetime) -> None:
    """A message for a run that cannot be claimed now. Held by a live lease (another
    invocation, or one that died holding it): look again when the lease runs out. Else
    it has moved on already (a duplicate message) and the message is done."""
    try:
        run = await runtime.engine.store.get_run(run_id)
    except RunNotFound:
        log.warning("message for unknown run %s dropped", run_id)
        return
    if run.status == RunStatus.RUNNING and run.lease_expires_at is not None:
        await runtime.work_queue.enqueue([run_id], delay=run.lease_expires_at - now)
    elif run.status == RunStatus.PENDING:  # its queue is at its concurrency or rate cap
        await runtime.work_queue.enqueue([run_id], delay=CAPPED_RETRY)


async def _follow_up(runtime: AwsRuntime, run: RunRecord) -> None:
    """Enqueue a run again after its activation if it will be runnable soon."""
    now = runtime.engine.clock.now()
    if run.status == RunStatus.PENDING:
        await runtime.work_queue.enqueue([run.run_id])
    elif run.status == RunStatus.SUSPENDED and run.wake_at is not None:
        wait = max(run.wake_at - now, timedelta(0))
        if wait <= MAX_DELAY:
            await runtime.work_queue.enqueue([run.run_id], delay=wait)


async def _enqueue_runnable(runtime: AwsRuntime, run_ids: set[str]) -> None:
    ready = []
    for run_id in sorted(run_ids):
        try:
            run = await runtime.engine.store.get_run(run_id)
        except RunNotFound:
            continue
        if run.status == RunStatus.PENDING:
            ready.append(run_id)
        elif run.status == RunStatus.SUSPENDED:
            await _follow_up(runtime, run)
    if ready:
        await runtime.work_queue.enqueue(ready)


def _run_id(record: Mapping[str, Any]) -> str:
    try:
        body = json.loads(record["body"])
        run_id = body["run_id"]
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigurationError(
            f'work message {record.get("messageId")} is not {{"run_id": …}}: {exc}'
        ) from exc
    if not isinstance(run_id, str) or not run_id:
        raise ConfigurationError(f"work message {record.get('messageId')} names no run")
    return run_id


# --- the sweeper ------------------------------------------------------------------------


@dataclass
class SweepReport:
    relayed: int = 0
    fired: int = 0
    enqueued: int = 0


async def sweep(runtime: AwsRuntime, *, limit: int = 1000) -> SweepReport:
    """One round of the scheduled sweeper: publish the outbox, fire due schedules, and
    put every run that is runnable now on the work queue (timers past their wake time,
    runs whose message was lost, runs whose worker died holding them)."""
    from cadenza.schedules import fire_due_schedules

    engine = runtime.engine
    report = SweepReport()
    if runtime.publisher is not None:
        report.relayed = len((await relay_to_eventbridge(engine, runtime.publisher)).published)
    report.fired = await fire_due_schedules(engine)
    due = await due_run_ids(engine.store, engine.clock.now(), limit=limit)
    await runtime.work_queue.enqueue(due)
    report.enqueued = len(due)
    return report


async def due_run_ids(store: RunStore, now: datetime, *, limit: int = 1000) -> list[str]:
    """Runs that are runnable at ``now``: PENDING, SUSPENDED and due, or RUNNING with an
    expired lease. On DynamoDB one query of the sparse runnable index; elsewhere a
    listing by status."""
    from cadenza.adapters.dynamodb import DynamoDbRunStore

    if isinstance(store, DynamoDbRunStore):
        from cadenza.adapters.dynamodb._claims import _runnable, runnable_heads

        heads = await runnable_heads(store.table, now)
        return [h["pk"][2:] for h in heads if _runnable(h, now)][:limit]
    due: list[str] = []
    for status in (RunStatus.PENDING, RunStatus.SUSPENDED, RunStatus.RUNNING):
        after: RunPage | None = None
        while len(due) < limit:
            page = await store.list_runs(status=status, limit=200, after=after)
            for run in page:
                when = {RunStatus.SUSPENDED: run.wake_at, RunStatus.RUNNING: run.lease_expires_at}
                at = when.get(status, now)
                if at is not None and at <= now:
                    due.append(run.run_id)
            if len(page) < 200:
                break
            after = RunPage(page[-1].created_at, page[-1].run_id)
    return due[:limit]


def new_owner() -> str:
    """A lease owner for one Lambda container."""
    return f"lambda:{uuid.uuid4().hex[:12]}"
