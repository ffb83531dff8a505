"""The Lambda entry points as Lambda calls them: configured from the environment only,
one engine per container, the API through Mangum with an API Gateway (HTTP API) event."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from cadenza import aws as handlers
from cadenza.errors import ConfigurationError
from tests._aws import BUCKET, REGION
from tests.aws.aws_workflows import EFFECTS
from tests.aws.conftest import Context

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def lambda_env(aws_endpoint: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    sqs = boto3.client("sqs", region_name=REGION, endpoint_url=aws_endpoint)
    events = boto3.client("events", region_name=REGION, endpoint_url=aws_endpoint)
    tag = uuid.uuid4().hex[:8]
    queue = sqs.create_queue(QueueName=f"entry-work-{tag}")["QueueUrl"]
    events.create_event_bus(Name=f"entry-{tag}")
    table = f"entry-{tag}"
    for name, value in {
        "CADENZA_STORE": f"dynamodb://{table}?region={REGION}&endpoint_url={aws_endpoint}",
        "CADENZA_ARTIFACTS": f"s3://{BUCKET}/{tag}?region={REGION}&endpoint_url={aws_endpoint}",
        "CADENZA_SECRET": "a-deployment-secret-of-enough-length",
        "CADENZA_WORK_QUEUE_URL": queue,
        "CADENZA_EVENT_BUS": f"entry-{tag}",
        "CADENZA_WORKFLOWS": "tests.aws.aws_workflows:greet",
        "CADENZA_AWS_ENDPOINT_URL": aws_endpoint,
        "CADENZA_HOME": str(tmp_path),
        "CADENZA_RULES": json.dumps(
            [
                {
                    "name": "order-on-hello",
                    "pattern": {"detail-type": ["Hello"]},
                    "target": "start_workflow",
                    "params": {"workflow": "aws-order"},
                }
            ]
        ),
    }.items():
        monkeypatch.setenv(name, value)
    handlers.use_runtime(None)
    yield sqs, queue
    handlers.use_runtime(None)


def _records(sqs: Any, queue: str) -> dict[str, Any]:
    reply = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1)
    messages = reply.get("Messages", [])
    for m in messages:
        sqs.delete_message(QueueUrl=queue, ReceiptHandle=m["ReceiptHandle"])
    return {"Records": [{"messageId": m["MessageId"], "body": m["Body"]} for m in messages]}


def _http(method: str, path: str, body: Any = None, key: str | None = None) -> dict[str, Any]:
    headers = {"content-type": "application/json", "host": "api.example.com"}
    if key:
        headers["authorization"] = f"Bearer {key}"
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "",
        "headers": headers,
        "requestContext": {
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": "test",
            },
            "accountId": "123456789012",
            "apiId": "api",
            "domainName": "api.example.com",
            "requestId": "r",
            "routeKey": "$default",
            "stage": "$default",
            "time": "26/Nov/2026:10:00:00 +0000",
            "timeEpoch": 0,
        },
        "body": base64.b64encode(json.dumps(body).encode()).decode() if body is not None else "",
        "isBase64Encoded": body is not None,
    }


def test_the_handlers_from_the_environment(lambda_env: Any) -> None:
    sqs, queue = lambda_env
    from cadenza.security.api_keys import create_key

    runtime = handlers._lambda._current()
    loop = handlers._lambda._loop_of_container()
    _, key = loop.run_until_complete(
        create_key(
            runtime.engine,
            name="t",
            tenant="default",
            scopes=("admin",),
            now=runtime.engine.clock.now(),
        )
    )
    started = handlers.api_handler(
        _http("POST", "/api/v1/runs", {"workflow": "aws-greet", "input": "eve"}, key), None
    )
    assert started["statusCode"] == 201, started
    run_id = json.loads(started["body"])["run_id"]
    response = handlers.worker_handler(_records(sqs, queue), Context())  # the API enqueued it
    assert response == {"batchItemFailures": []}
    shown = handlers.api_handler(_http("GET", f"/api/v1/runs/{run_id}/result", key=key), None)
    assert json.loads(shown["body"])["result"] == "HELLO EVE"
    assert EFFECTS[(run_id, "hello")] == 1
    # The sweeper publishes the outbox (the run's events) and finds nothing else due.
    assert handlers.sweeper_handler({}, None)["enqueued"] == 0
    # A rule deployed with the template starts a run from a delivery, once per event id.
    delivery = {
        "version": "0",
        "id": "aws-1",
        "detail-type": "Hello",
        "source": "t",
        "account": "1",
        "time": "2026-11-26T10:00:00Z",
        "region": REGION,
        "resources": [],
        "detail": {"order": 5, "_cadenza": {"id": "ev-1", "tenant": "default"}},
    }
    records = {"Records": [{"messageId": m, "body": json.dumps(delivery)} for m in ("a", "b")]}
    assert handlers.rules_handler(records, None) == {"batchItemFailures": []}
    response = handlers.worker_handler(_records(sqs, queue), Context())
    assert response == {"batchItemFailures": []}
    [run] = loop.run_until_complete(runtime.engine.store.list_runs(workflow="aws-order"))
    assert run.idempotency_key == "rule:order-on-hello:ev-1"
    assert run.status == "SUSPENDED"  # reserved, waiting for the payment event
    assert EFFECTS[(run.run_id, "reserve")] == 1
    assert handlers.waiters_handler({"Records": [{"messageId": "x", "body": "{"}]}, None) == {
        "batchItemFailures": [{"itemIdentifier": "x"}]
    }


def test_a_missing_queue_url_is_a_clear_error(
    lambda_env: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CADENZA_WORK_QUEUE_URL")
    with pytest.raises(ConfigurationError, match="CADENZA_WORK_QUEUE_URL is not set"):
        handlers.sweeper_handler({}, None)
