"""The serverless shape on moto: a bus, queues with dead-letter queues, a runtime over a
DynamoDB run store and S3, and a driver that plays Lambda's SQS event-source mapping."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest

from cadenza.aws import AwsRuntime, EventBridgePublisher, SqsWorkQueue
from cadenza.engine.engine import Engine
from tests._aws import REGION

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


@dataclass
class Aws:
    endpoint: str
    events: Any
    sqs: Any
    bus: str
    work_url: str
    rules_url: str
    waiters_url: str

    def arn(self, url: str) -> str:
        reply = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
        return str(reply["Attributes"]["QueueArn"])


@pytest.fixture
def aws(aws_endpoint: str) -> Aws:
    import boto3

    events = boto3.client("events", region_name=REGION, endpoint_url=aws_endpoint)
    sqs = boto3.client("sqs", region_name=REGION, endpoint_url=aws_endpoint)
    tag = uuid.uuid4().hex[:8]
    bus = f"cadenza-{tag}"
    events.create_event_bus(Name=bus)
    urls = {}
    for name in ("work", "rules", "waiters"):
        dlq = sqs.create_queue(QueueName=f"{name}-dlq-{tag}")["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        urls[name] = sqs.create_queue(
            QueueName=f"{name}-{tag}",
            Attributes={
                "VisibilityTimeout": "1",
                "RedrivePolicy": json.dumps(
                    {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 20}
                ),
            },
        )["QueueUrl"]
    return Aws(aws_endpoint, events, sqs, bus, urls["work"], urls["rules"], urls["waiters"])


@pytest.fixture
async def runtime(aws: Aws, dynamodb_store: Callable[..., Any]) -> AsyncIterator[AwsRuntime]:
    store = dynamodb_store()
    await store.open()
    engine = Engine(store, secret=b"s" * 32, artifacts=store.table.artifacts)
    yield AwsRuntime(
        engine=engine,
        work_queue=SqsWorkQueue(aws.work_url, region=REGION, endpoint_url=aws.endpoint),
        publisher=EventBridgePublisher(aws.bus, region=REGION, endpoint_url=aws.endpoint),
        margin=timedelta(milliseconds=300),
    )
    await store.close()


class Context:
    """Lambda's context: the time an invocation has left."""

    def __init__(self, millis: int = 60_000) -> None:
        self.millis = millis

    def get_remaining_time_in_millis(self) -> int:
        return self.millis


class EventSourceMapping:
    """Plays Lambda's SQS event-source mapping: receive a batch, invoke the handler,
    delete the messages it did not report failed. A crashed invocation deletes none."""

    def __init__(self, sqs: Any, url: str, handler: Handler) -> None:
        self.sqs, self.url, self.handler = sqs, url, handler
        self.invocations = 0
        self.crashes = 0

    async def poll(self, *, wait: float = 0) -> int:
        reply = await asyncio.to_thread(
            self.sqs.receive_message,
            QueueUrl=self.url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=int(wait),
            AttributeNames=["ApproximateReceiveCount"],
        )
        messages = reply.get("Messages", [])
        if not messages:
            return 0
        event = {
            "Records": [
                {
                    "messageId": m["MessageId"],
                    "receiptHandle": m["ReceiptHandle"],
                    "body": m["Body"],
                    "attributes": m.get("Attributes", {}),
                    "eventSource": "aws:sqs",
                }
                for m in messages
            ]
        }
        self.invocations += 1
        try:
            response = await self.handler(event)
        except Exception:
            self.crashes += 1
            return len(messages)
        failed = {f["itemIdentifier"] for f in response.get("batchItemFailures", [])}
        for m in messages:
            if m["MessageId"] not in failed:
                await asyncio.to_thread(
                    self.sqs.delete_message, QueueUrl=self.url, ReceiptHandle=m["ReceiptHandle"]
                )
        return len(messages)


async def pump(
    mappings: list[EventSourceMapping],
    done: Callable[[], Awaitable[bool]],
    *,
    timeout: float = 30.0,
) -> None:
    """Poll every mapping until ``done()`` holds (or fail after ``timeout`` seconds)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not await done():
        if loop.time() > end:
            raise AssertionError("the queues did not settle in time")
        if not sum([await m.poll() for m in mappings]):
            await asyncio.sleep(0.2)
