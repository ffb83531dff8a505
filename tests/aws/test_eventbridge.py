"""The outbox relay publishing to an EventBridge bus; rules deployed on the bus with SQS
targets; deliveries starting workflows and resuming waiters, once per event id."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from cadenza.aws import (
    EventBridgePublisher,
    apply_rules,
    bus_entry,
    bus_pattern,
    deploy_rules,
    deploy_waiter_rule,
    event_from_bus,
    handle_deliveries,
    handle_work,
    relay_to_eventbridge,
    resume_waiters,
)
from cadenza.errors import ConfigurationError, InvalidEventPattern
from cadenza.events.envelope import Event
from cadenza.ports.run_store import Rule, RunStatus
from tests.aws import aws_workflows
from tests.aws.aws_workflows import EFFECTS
from tests.aws.conftest import Context, EventSourceMapping, pump

pytestmark = pytest.mark.timeout(120)


def _drain(aws: Any, url: str) -> list[dict[str, Any]]:
    bodies: list[dict[str, Any]] = []
    for _ in range(5):
        reply = aws.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)
        for m in reply.get("Messages", []):
            bodies.append(json.loads(m["Body"]))
            aws.sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
        if not reply.get("Messages") and bodies:
            break
    return bodies


def test_envelope_round_trips_across_the_bus() -> None:
    event = Event.new(
        "OrderPlaced", {"order": 7}, source="shop", run_id="r-1", trace_id="t-1"
    ).to_dict()
    entry = bus_entry({**event, "tenant": "acme"}, "bus")
    detail = json.loads(entry["Detail"])
    assert detail["_cadenza"] == {
        "id": event["id"],
        "run_id": "r-1",
        "trace_id": "t-1",
        "tenant": "acme",
    }
    # What EventBridge delivers: its own id, the detail as published.
    delivered = {**event, "id": "aws-id", "detail": detail, "account": "1", "region": "eu-west-1"}
    back = event_from_bus(delivered)
    assert back["id"] == event["id"] and back["detail"] == {"order": 7}
    assert back["run_id"] == "r-1" and back["tenant"] == "acme"


def test_bus_pattern_moves_envelope_fields_and_scopes_the_tenant() -> None:
    rule = Rule(
        "r",
        {
            "source": ["shop"],
            "run_id": [{"prefix": "r-"}],
            "$or": [{"trace_id": ["t"]}, {"detail": {"x": [1]}}],
        },
        "start_workflow",
        {"workflow": "aws-order"},
        tenant="acme",
    )
    pattern = bus_pattern(rule)
    assert pattern["detail"]["_cadenza"] == {"run_id": [{"prefix": "r-"}], "tenant": ["acme"]}
    assert pattern["$or"][0] == {"detail": {"_cadenza": {"trace_id": ["t"]}}}
    with pytest.raises(InvalidEventPattern):
        bus_pattern(
            Rule(
                "bad", {"detail": {"n": [{"numeric": [">"]}]}}, "start_workflow", {"workflow": "w"}
            )
        )
    with pytest.raises(ConfigurationError):
        bus_pattern(Rule("bad", {"source": ["x"]}, "start_workflow", {}))


class _FlakyEvents:
    """An EventBridge client whose PutEvents refuses chosen entries a number of times."""

    def __init__(self, refusals: dict[str, list[str]]) -> None:
        self.refusals = refusals
        self.calls: list[list[str]] = []

    def put_events(self, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        ids = [json.loads(e["Detail"])["_cadenza"]["id"] for e in Entries]
        self.calls.append(ids)
        results = []
        for i in ids:
            codes = self.refusals.get(i, [])
            if codes:
                results.append({"ErrorCode": codes.pop(0), "ErrorMessage": "no"})
            else:
                results.append({"EventId": f"aws-{i}"})
        return {"FailedEntryCount": sum("ErrorCode" in r for r in results), "Entries": results}


async def test_publish_batches_of_ten_and_retries_refused_entries_alone() -> None:
    events = [Event.new("E", {"n": n}, source="t", id=f"e{n:02d}").to_dict() for n in range(23)]
    client = _FlakyEvents(
        {"e03": ["ThrottlingException"], "e15": ["InternalFailure"] * 5, "e20": ["MalformedDetail"]}
    )
    publisher = EventBridgePublisher("bus", client=client, attempts=3, backoff=0.001)
    report = await publisher.publish(events)
    assert [len(c) for c in client.calls[:1]] == [10]
    assert sorted(len(c) for c in client.calls) == [1, 1, 1, 3, 10, 10]  # retries one by one
    assert ["e03"] in client.calls
    assert set(report.refused) == {"e15", "e20"}  # transient past its attempts; malformed
    assert client.calls.count(["e20"]) == 0  # a malformed entry is not sent again
    assert len(report.published) == 21 and "e03" in report.published


async def test_relay_publishes_to_the_bus_and_a_rule_delivers_to_sqs(
    aws: Any, runtime: Any
) -> None:
    engine = runtime.engine
    [name] = await deploy_rules(
        [
            Rule(
                "big-orders",
                {"source": ["shop"], "detail": {"total": [{"numeric": [">", 100]}]}},
                "start_workflow",
                {"workflow": "aws-order"},
            )
        ],
        bus=aws.bus,
        queue_arn=aws.arn(aws.rules_url),
        client=aws.events,
    )
    await deploy_waiter_rule(bus=aws.bus, queue_arn=aws.arn(aws.waiters_url), client=aws.events)
    small = Event.new("OrderPlaced", {"order": 1, "total": 5}, source="shop").to_dict()
    big = Event.new("OrderPlaced", {"order": 2, "total": 500}, source="shop").to_dict()
    await engine.publish([small, big])
    report = await relay_to_eventbridge(engine, runtime.publisher)
    assert sorted(report.published) == sorted([small["id"], big["id"]])
    assert await engine.store.fetch_outbox(limit=10) == []  # marked delivered
    ruled = [event_from_bus(b) for b in _drain(aws, aws.rules_url)]
    assert [e["id"] for e in ruled] == [big["id"]]  # the cadenza id survives the bus
    assert ruled[0]["detail"] == {"order": 2, "total": 500}
    waited = {event_from_bus(b)["id"] for b in _drain(aws, aws.waiters_url)}
    assert waited == {small["id"], big["id"]}
    assert name.startswith("cadenza-")


async def test_rule_delivery_starts_once_and_waiter_resumes_once(aws: Any, runtime: Any) -> None:
    """Duplicate EventBridge deliveries start no second run and cause no second effect."""
    engine = runtime.engine
    await engine.store.put_rule(
        Rule(
            "orders",
            {"detail-type": ["OrderPlaced"]},
            "start_workflow",
            {"workflow": "aws-order", "module": "tests.aws.aws_workflows"},
        )
    )
    await deploy_rules(
        await engine.store.list_rules(),
        bus=aws.bus,
        queue_arn=aws.arn(aws.rules_url),
        client=aws.events,
    )
    await deploy_waiter_rule(bus=aws.bus, queue_arn=aws.arn(aws.waiters_url), client=aws.events)
    placed = Event.new("OrderPlaced", {"order": 41}, source="shop").to_dict()
    await engine.publish([placed])
    await relay_to_eventbridge(engine, runtime.publisher)
    # EventBridge delivers at least once: the same event lands twice on the rules queue.
    [body] = _drain(aws, aws.rules_url)
    aws.sqs.send_message(QueueUrl=aws.rules_url, MessageBody=json.dumps(body))
    aws.sqs.send_message(QueueUrl=aws.rules_url, MessageBody=json.dumps(body))

    async def rules(event: dict[str, Any]) -> dict[str, Any]:
        return await handle_deliveries(runtime, event, apply_rules)

    async def waiters(event: dict[str, Any]) -> dict[str, Any]:
        return await handle_deliveries(runtime, event, resume_waiters)

    async def work(event: dict[str, Any]) -> dict[str, Any]:
        return (await handle_work(runtime, event, Context())).response()

    mappings = [
        EventSourceMapping(aws.sqs, aws.rules_url, rules),
        EventSourceMapping(aws.sqs, aws.work_url, work),
        EventSourceMapping(aws.sqs, aws.waiters_url, waiters),
    ]

    async def runs() -> list[Any]:
        return [r for r in await engine.store.list_runs(workflow="aws-order")]

    async def waiting() -> bool:
        found = await runs()
        return len(found) == 1 and found[0].status == RunStatus.SUSPENDED

    await pump(mappings, waiting)
    [run] = await runs()
    assert run.idempotency_key == f"rule:orders:{placed['id']}"
    _drain(aws, aws.waiters_url)  # OrderPlaced itself, seen by no waiter

    paid = Event.new("PaymentReceived", {"order": 41, "amount": 12}, source="pay").to_dict()
    await engine.publish([paid])
    await relay_to_eventbridge(engine, runtime.publisher)
    [body] = _drain(aws, aws.waiters_url)
    for _ in range(2):  # delivered twice
        aws.sqs.send_message(QueueUrl=aws.waiters_url, MessageBody=json.dumps(body))

    async def ended() -> bool:
        return (await engine.store.get_run(run.run_id)).status.terminal

    await pump(mappings, ended)
    assert await engine.result(run.run_id) == {"order": 41, "amount": 12, "status": "shipped"}
    assert EFFECTS[(run.run_id, "reserve")] == 1
    assert EFFECTS[(run.run_id, "ship")] == 1
    assert len(await runs()) == 1
    await asyncio.sleep(0)
    assert aws_workflows.order is not None
