"""The SQS-triggered worker driven the way Lambda's event-source mapping drives it:
duplicate messages, failing and killed invocations, the invocation deadline, timers and
the sweeper."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import pytest

from cadenza.aws import due_run_ids, handle_work, sweep
from cadenza.errors import ConfigurationError, StoreUnavailable
from cadenza.ports.run_store import RunStatus
from tests.aws.aws_workflows import EFFECTS, STARTED, greet, sleeper, slow
from tests.aws.conftest import Context, EventSourceMapping, pump

pytestmark = pytest.mark.timeout(120)


def _mapping(aws: Any, runtime: Any, millis: int = 60_000) -> EventSourceMapping:
    async def work(event: dict[str, Any]) -> dict[str, Any]:
        return (await handle_work(runtime, event, Context(millis))).response()

    return EventSourceMapping(aws.sqs, aws.work_url, work)


def _ended(runtime: Any, run_id: str) -> Any:
    async def check() -> bool:
        return (await runtime.engine.store.get_run(run_id)).status.terminal

    return check


async def test_a_run_goes_through_the_queue_and_its_events_reach_the_bus(
    aws: Any, runtime: Any
) -> None:
    engine = runtime.engine
    run = await engine.start(greet, "ada")
    await runtime.work_queue.enqueue([run.run_id])
    mapping = _mapping(aws, runtime)
    await pump([mapping], _ended(runtime, run.run_id))
    assert await engine.result(run.run_id) == "HELLO ADA"
    assert await engine.store.fetch_outbox(limit=10) == []  # Greeted went to the bus


async def test_duplicate_messages_activate_once(aws: Any, runtime: Any) -> None:
    engine = runtime.engine
    run = await engine.start(greet, "bob")
    for _ in range(3):  # SQS delivers at least once; the sweeper may add its own
        await runtime.work_queue.enqueue([run.run_id])
    mapping = _mapping(aws, runtime)

    async def drained() -> bool:
        attrs = aws.sqs.get_queue_attributes(
            QueueUrl=aws.work_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        ended = await _ended(runtime, run.run_id)()
        return ended and all(v == "0" for v in attrs.values())

    await pump([mapping], drained)
    assert EFFECTS[(run.run_id, "hello")] == 1 and EFFECTS[(run.run_id, "shout")] == 1
    assert mapping.crashes == 0


async def test_one_bad_message_is_retried_alone(aws: Any, runtime: Any) -> None:
    engine = runtime.engine
    good = await engine.start(greet, "cy")
    event = {
        "Records": [
            {"messageId": "m-good", "body": json.dumps({"run_id": good.run_id})},
            {"messageId": "m-bad", "body": "not json"},
        ]
    }
    report = await handle_work(runtime, event, Context())
    assert report.response() == {"batchItemFailures": [{"itemIdentifier": "m-bad"}]}
    assert report.activated == {"m-good": "SUCCEEDED"}
    with pytest.raises(ConfigurationError):
        from cadenza.aws._work import _run_id

        _run_id({"messageId": "x", "body": "{}"})


async def test_a_failing_invocation_leaves_the_message_for_redelivery(
    aws: Any, runtime: Any
) -> None:
    """The store refuses a checkpoint mid-activation (DynamoDB throttling, an outage): the
    invocation hands the run back and reports the message failed, SQS delivers it again,
    the run completes; the step checkpointed before did not run twice."""
    engine = runtime.engine
    store = engine.store
    run = await engine.start(greet, "dee")
    real_commit = store.commit
    commits = 0

    async def dying_commit(checkpoint: Any) -> Any:
        nonlocal commits
        commits += 1
        if commits == 3:  # after the first step's checkpoint
            raise StoreUnavailable("DynamoDB is not taking requests for now")
        return await real_commit(checkpoint)

    store.commit = dying_commit  # type: ignore[method-assign]
    try:
        await runtime.work_queue.enqueue([run.run_id])
        mapping = _mapping(aws, runtime)
        await pump([mapping], _ended(runtime, run.run_id))
    finally:
        del store.commit
    assert await engine.result(run.run_id) == "HELLO DEE"
    assert EFFECTS[(run.run_id, "hello")] == 1
    assert mapping.invocations >= 2 and commits > 3


async def test_an_invocation_killed_mid_step_is_resumed_after_its_lease(
    aws: Any, runtime: Any
) -> None:
    """The function is killed while a step runs (no cleanup at all): the message comes
    back, finds the run held by the dead invocation's lease, looks again when the lease
    has run out, and the run completes. The step that was cut off runs again
    (at-least-once); the one checkpointed before it does not."""
    engine = runtime.engine
    run = await engine.start(slow, 0.2)
    STARTED[run.run_id] = asyncio.Event()
    await runtime.work_queue.enqueue([run.run_id])
    reply = aws.sqs.receive_message(QueueUrl=aws.work_url, MaxNumberOfMessages=1, WaitTimeSeconds=1)
    [message] = reply["Messages"]
    event = {"Records": [{"messageId": message["MessageId"], "body": message["Body"]}]}
    killed = asyncio.create_task(handle_work(runtime, event, Context(millis=2_500)))
    await asyncio.wait_for(STARTED[run.run_id].wait(), 10)
    killed.cancel()  # Lambda kills the invocation: nothing is handed back, nothing deleted
    await asyncio.gather(killed, return_exceptions=True)
    held = await engine.store.get_run(run.run_id)
    assert held.status == RunStatus.RUNNING and held.lease_expires_at is not None
    mapping = _mapping(aws, runtime)
    await pump([mapping], _ended(runtime, run.run_id), timeout=40)
    assert await engine.result(run.run_id) == "done"
    assert EFFECTS[(run.run_id, "first")] == 1
    assert EFFECTS[(run.run_id, "long")] == 2


async def test_a_run_that_would_outlive_the_invocation_is_handed_back(
    aws: Any, runtime: Any
) -> None:
    engine = runtime.engine
    run = await engine.start(slow, 1.5)
    await runtime.work_queue.enqueue([run.run_id])
    reply = aws.sqs.receive_message(QueueUrl=aws.work_url, MaxNumberOfMessages=1, WaitTimeSeconds=1)
    [message] = reply["Messages"]
    aws.sqs.delete_message(QueueUrl=aws.work_url, ReceiptHandle=message["ReceiptHandle"])
    event = {"Records": [{"messageId": message["MessageId"], "body": message["Body"]}]}
    report = await handle_work(runtime, event, Context(millis=1_000))  # 0.7 s of budget
    assert report.handed_back == [message["MessageId"]] and report.failed == []
    back = await engine.store.get_run(run.run_id)
    assert back.status == RunStatus.PENDING and back.lease_owner is None
    mapping = _mapping(aws, runtime)  # re-enqueued: the next invocation has time
    await pump([mapping], _ended(runtime, run.run_id))
    assert await engine.result(run.run_id) == "done"
    assert EFFECTS[(run.run_id, "first")] == 1


async def test_a_short_timer_comes_back_as_a_delayed_message(aws: Any, runtime: Any) -> None:
    engine = runtime.engine
    run = await engine.start(sleeper, 1.0)
    await runtime.work_queue.enqueue([run.run_id])
    mapping = _mapping(aws, runtime)
    await pump([mapping], _ended(runtime, run.run_id))  # no sweeper involved
    assert await engine.result(run.run_id) == "after"
    assert EFFECTS[(run.run_id, "before")] == 1 and EFFECTS[(run.run_id, "after")] == 1


async def test_the_sweeper_enqueues_due_runs_only(aws: Any, runtime: Any) -> None:
    engine = runtime.engine
    long_wait = await engine.start(sleeper, 3600.0)
    short_wait = await engine.start(sleeper, 0.5)
    for run in (long_wait, short_wait):
        await runtime.work_queue.enqueue([run.run_id])
    mapping = _mapping(aws, runtime)

    async def both_suspended() -> bool:
        runs = [await engine.store.get_run(r.run_id) for r in (long_wait, short_wait)]
        return all(r.status == RunStatus.SUSPENDED for r in runs)

    await pump([mapping], both_suspended)
    # Lose the delayed message of the short timer: only the sweeper can find it now.
    await asyncio.sleep(1.0)
    aws.sqs.purge_queue(QueueUrl=aws.work_url)
    due = await due_run_ids(engine.store, engine.clock.now())
    assert due == [short_wait.run_id]
    report = await sweep(runtime)
    assert report.enqueued == 1
    await pump([mapping], _ended(runtime, short_wait.run_id))
    assert (await engine.store.get_run(long_wait.run_id)).status == RunStatus.SUSPENDED
    assert (
        timedelta(0) < (await engine.store.get_run(long_wait.run_id)).wake_at - engine.clock.now()
    )
