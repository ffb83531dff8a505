"""What one research-report run asks of each AWS service in the serverless shape, and what
a month of them costs at three sizes.

    python benchmarks/bench_aws_shape.py            # counts, and the S / M / L table
    python benchmarks/bench_aws_shape.py --json out.json

The run goes through the shape's own code paths on moto's server on loopback: the HTTP API
(``api_app``) starts it, the SQS worker handler activates it from the work queue, the
editor approves through the API, events are relayed to an EventBridge bus. Every AWS
request any client sends is counted per service and operation, and DynamoDB's write
capacity is counted from the items written (as ``bench_dynamodb.py`` counts it: 1 WCU
per started KB, twice inside a transaction). Lambda invocations are counted by function
and timed here (moto on loopback: a ceiling for AWS, where requests are faster but cold
starts exist). Bedrock tokens are not priced: they depend on the model, and cadenza
accounts them per run (docs/costs.md).

Prices: us-east-1 list prices, on-demand, as published in 2026 (change ``PRICES``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import socket
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PRICES = {
    "dynamodb_wru": 0.625 / 1e6,  # per write request unit
    "dynamodb_rru": 0.125 / 1e6,  # per read request unit
    "lambda_request": 0.20 / 1e6,
    "lambda_gb_s": 0.0000166667,  # x86
    "sqs_request": 0.40 / 1e6,  # standard queue, per 64 KB chunk
    "eventbridge_event": 1.00 / 1e6,  # custom events published
    "apigw_request": 1.00 / 1e6,  # HTTP API
    "s3_put": 0.005 / 1000,
    "s3_get": 0.0004 / 1000,
    "sns_publish": 0.50 / 1e6,
    "secret_month": 0.40,
}
SIZES = {"S": 100, "M": 2_000, "L": 20_000}
SWEEPS_PER_MONTH = 30 * 24 * 60  # rate(1 minute)
MEMORY_GB = 1.0  # the template's MemorySize (1024 MB)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Meter:
    """Counts every AWS request by service and operation, and DynamoDB capacity."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.wcu = 0.0
        self.rcu = 0.0

    def before(self, model: Any, params: dict[str, Any], **_: Any) -> None:
        service = model.service_model.service_name
        self.calls[f"{service}:{model.name}"] += 1
        if service == "dynamodb":
            self._capacity(model.name, params)

    def _capacity(self, operation: str, params: dict[str, Any]) -> None:
        def size(item: dict[str, Any]) -> int:
            return len(json.dumps(item))

        if operation in ("PutItem", "UpdateItem", "DeleteItem"):
            body = params.get("Item") or params.get("ExpressionAttributeValues") or {}
            self.wcu += max(1, math.ceil(size(body) / 1024))
        elif operation == "TransactWriteItems":
            for entry in params["TransactItems"]:
                [(_, body)] = entry.items()
                item = body.get("Item") or body.get("ExpressionAttributeValues") or {}
                self.wcu += 2 * max(1, math.ceil(size(item) / 1024))
        elif operation == "BatchWriteItem":
            for requests in params["RequestItems"].values():
                for request in requests:
                    item = request.get("PutRequest", {}).get("Item", {})
                    self.wcu += max(1, math.ceil(size(item) / 1024))
        elif operation in ("GetItem", "Query", "BatchGetItem"):
            self.rcu += 1  # a small strongly consistent read; queries of a run's partition


async def one_report(endpoint: str, meter: Meter, home: Path) -> dict[str, Any]:
    import boto3
    import httpx
    from tests.scenarios.test_research_report import editorial_model

    import cadenza.examples.research_report as scenario
    from cadenza.adapters.dynamodb import DynamoDbRunStore
    from cadenza.adapters.s3 import S3ArtifactStore
    from cadenza.agents import register_model
    from cadenza.aws import AwsRuntime, EventBridgePublisher, SqsWorkQueue, api_app, handle_work
    from cadenza.engine.engine import Engine
    from cadenza.patterns import HashingEmbedder
    from cadenza.security.api_keys import create_key

    scenario._embedder = lambda: HashingEmbedder(256)  # type: ignore[assignment]
    register_model("scripted:editorial", editorial_model())
    region = "us-east-1"
    tag = uuid.uuid4().hex[:8]
    s3 = boto3.client("s3", region_name=region, endpoint_url=endpoint)
    s3.create_bucket(Bucket=f"b-{tag}")
    sqs = boto3.client("sqs", region_name=region, endpoint_url=endpoint)
    queue = sqs.create_queue(QueueName=f"work-{tag}")["QueueUrl"]
    boto3.client("events", region_name=region, endpoint_url=endpoint).create_event_bus(
        Name=f"bus-{tag}"
    )
    artifacts = S3ArtifactStore(f"b-{tag}", "cadenza", region=region, endpoint_url=endpoint)
    store = DynamoDbRunStore(f"t-{tag}", region=region, endpoint_url=endpoint, artifacts=artifacts)
    await store.open()
    engine = Engine(store, secret=b"s" * 32, artifacts=artifacts)
    runtime = AwsRuntime(
        engine,
        SqsWorkQueue(queue, region=region, endpoint_url=endpoint),
        EventBridgePublisher(f"bus-{tag}", region=region, endpoint_url=endpoint),
    )
    _, key = await create_key(
        engine, name="b", tenant="default", scopes=("admin",), now=engine.clock.now()
    )
    headers = {"Authorization": f"Bearer {key}"}
    invocations: Counter[str] = Counter()
    seconds: Counter[str] = Counter()

    class Ctx:
        def get_remaining_time_in_millis(self) -> int:
            return 900_000

    async def work_until(done: Any) -> None:
        while not await done():
            reply = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1)
            messages = reply.get("Messages", [])
            if not messages:
                continue
            records = [{"messageId": m["MessageId"], "body": m["Body"]} for m in messages]
            started = time.perf_counter()
            await handle_work(runtime, {"Records": records}, Ctx())
            seconds["worker"] += time.perf_counter() - started
            invocations["worker"] += 1
            for m in messages:
                sqs.delete_message(QueueUrl=queue, ReceiptHandle=m["ReceiptHandle"])

    before = Counter(meter.calls)
    before_wcu, before_rcu = meter.wcu, meter.rcu
    app = api_app(runtime)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
        started = time.perf_counter()
        request = {"model": "scripted:editorial", "sources": 2}
        body = {"workflow": "research-report", "input": request}
        reply = await http.post("/api/v1/runs", headers=headers, json=body)
        seconds["api"] += time.perf_counter() - started
        invocations["api"] += 1
        run_id = reply.json()["run_id"]

        async def waiting() -> bool:
            return (await store.get_run(run_id)).status == "SUSPENDED"

        await work_until(waiting)
        [pending] = await engine.pending_callbacks(run_id)
        started = time.perf_counter()
        await http.post(
            f"/api/v1/callbacks/{pending.token}/succeed",
            headers=headers,
            json={"payload": {"decision": "approve"}},
        )
        seconds["api"] += time.perf_counter() - started
        invocations["api"] += 1

        async def ended() -> bool:
            return (await store.get_run(run_id)).status.terminal

        await work_until(ended)
    journal = await store.load_journal(run_id)
    history = await store.history(run_id)
    events = [e for e in await store.list_events(limit=200) if e.event.get("run_id") == run_id]
    status = str((await store.get_run(run_id)).status)
    await store.close()
    calls = Counter(meter.calls)
    calls.subtract(before)
    return {
        "run": run_id,
        "status": status,
        "journal_records": len(journal),
        "history_events": len(history),
        "events": len(events),
        "calls": {k: v for k, v in sorted(calls.items()) if v},
        "wcu": meter.wcu - before_wcu,
        "rcu": meter.rcu - before_rcu,
        "invocations": dict(invocations),
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
    }


def monthly(per_run: dict[str, Any], runs: int) -> dict[str, float]:
    calls = per_run["calls"]

    def n(prefix: str) -> int:
        return sum(v for k, v in calls.items() if k.startswith(prefix))

    sqs = n("sqs:")  # sends, receives (the poller's too) and deletes
    invocations = sum(per_run["invocations"].values())
    gb_s = sum(per_run["seconds"].values()) * MEMORY_GB
    cost = {
        "dynamodb": per_run["wcu"] * PRICES["dynamodb_wru"]
        + per_run["rcu"] * PRICES["dynamodb_rru"],
        "lambda": invocations * PRICES["lambda_request"] + gb_s * PRICES["lambda_gb_s"],
        "sqs": sqs * PRICES["sqs_request"],
        "eventbridge": n("events:PutEvents") and per_run["events"] * PRICES["eventbridge_event"],
        "api_gateway": per_run["invocations"].get("api", 0) * PRICES["apigw_request"],
        "s3": n("s3:PutObject") * PRICES["s3_put"]
        + (n("s3:GetObject") + n("s3:HeadObject")) * PRICES["s3_get"],
    }
    month = {k: v * runs for k, v in cost.items()}
    # Fixed: the sweeper every minute (a short invocation, a query, a receive-nothing
    # relay), idle SQS long polls by the event-source mappings, and the secret.
    sweep = SWEEPS_PER_MONTH * (
        PRICES["lambda_request"]
        + 0.3 * MEMORY_GB * PRICES["lambda_gb_s"]
        + 3 * PRICES["dynamodb_rru"]
    )
    idle_polls = 3 * 30 * 24 * 3600 / 20 * PRICES["sqs_request"]  # 3 queues, 20 s long polls
    month["fixed"] = sweep + idle_polls + PRICES["secret_month"]
    month["total"] = sum(month.values())
    return {k: round(v, 2) for k, v in month.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json")
    args = parser.parse_args()
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1"
    )
    os.environ["CADENZA_HOME"] = tempfile.mkdtemp()
    import logging

    logging.disable(logging.WARNING)
    import boto3
    from moto.server import ThreadedMotoServer
    from tests._aws import _serialize_dynamodb_calls

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    undo = _serialize_dynamodb_calls()
    server.start()
    meter = Meter()
    boto3.setup_default_session()
    boto3.DEFAULT_SESSION.events.register("provide-client-params", meter.before)  # type: ignore[union-attr]
    try:
        result = asyncio.run(
            one_report(f"http://127.0.0.1:{port}", meter, Path(os.environ["CADENZA_HOME"]))
        )
    finally:
        server.stop()
        undo()
    result["monthly"] = {size: monthly(result, runs) for size, runs in SIZES.items()}
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
