"""What one durable step costs on DynamoDB, next to SQLite (and PostgreSQL when reachable).

    python benchmarks/bench_dynamodb.py            # full sizes
    python benchmarks/bench_dynamodb.py --quick    # smaller, for a smoke check
    python benchmarks/bench_dynamodb.py --json out.json

DynamoDB here is moto's server on loopback (``moto[server]``), so its times measure the
adapter's round trips and work over HTTP on this machine, not AWS's latency (a
``TransactWriteItems`` in a region is typically 10-20 ms). The figure that carries over to
AWS unchanged is the **write capacity** a step consumes, counted from every write the
store sends: 1 WCU per started KB of each item written (an UpdateItem is charged for the
larger of the item before and after), twice that inside a transaction (a ConditionCheck
included), plus one write per KB to each index whose keys or projected attributes change.
That is what the on-demand bill charges as write request units.

Per step = (run of N steps - run of 1 step) / (N - 1), so a run's fixed costs (start,
claim, end) are left out; medians of several repetitions, all stores in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import socket
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from cadenza import Context, drive, workflow
from cadenza.config import open_engine
from cadenza.engine.engine import Engine
from cadenza.ports.run_store import RunStatus

PAYLOAD = {"text": "x" * 160, "n": 12345, "ok": True}  # ~200 bytes as JSON
WRU_PRICE = 0.625 / 1e6  # USD per on-demand write request unit, us-east-1 (Nov 2024 on)
REGION = "us-east-1"


async def make_payload(i: int) -> dict[str, object]:
    return {**PAYLOAD, "i": i}


@workflow(name="bench-ddb-chain")
async def chain(ctx: Context, steps: int) -> int:
    for i in range(steps):
        await ctx.step(make_payload, i, name=f"s{i}")
    return steps


# --- counting write capacity -----------------------------------------------------------------


def _size(value: dict[str, Any]) -> int:
    [(kind, v)] = value.items()
    if kind == "S":
        return len(v.encode())
    if kind == "N":
        return len(str(v)) // 2 + 2
    if kind == "BOOL" or kind == "NULL":
        return 1
    if kind == "L":
        return 3 + sum(1 + _size(x) for x in v)
    if kind == "M":
        return 3 + sum(len(k.encode()) + 1 + _size(x) for k, x in v.items())
    return len(json.dumps(v).encode())


def item_size(item: dict[str, Any]) -> int:
    return sum(len(name.encode()) + _size(value) for name, value in item.items())


def _view(image: dict[str, Any] | None, n: int, names: tuple[str, ...]) -> dict[str, Any]:
    """What index ``n`` holds of an item: nothing, unless the item has the index's key."""
    if image is None or f"g{n}pk" not in image:
        return {}
    return {k: image[k] for k in names if k in image}


class CapacityMeter:
    """Counts write capacity units from the requests a DynamoDB store sends.

    It keeps the last written image of every item (the benchmark runs one run at a time),
    so an update is charged for the larger of the item before and after, and an index
    write only when one of the index's keys or projected attributes changes.
    """

    def __init__(self, projected: dict[int, tuple[str, ...]]) -> None:
        self.projected = projected
        self.images: dict[tuple[str, str], dict[str, Any]] = {}
        self.wcu = 0.0
        self.requests: Counter[str] = Counter()

    def _key(self, item: dict[str, Any]) -> tuple[str, str]:
        return item["pk"]["S"], item["sk"]["S"]

    def _index_units(self, old: dict[str, Any] | None, new: dict[str, Any] | None) -> float:
        units = 0.0
        for n, attrs in self.projected.items():
            names = ("pk", "sk", f"g{n}pk", f"g{n}sk", *attrs)
            before, after = _view(old, n, names), _view(new, n, names)
            if before != after:
                units += max(1, math.ceil(item_size(after or before) / 1024))
        return units

    def _write(self, key: tuple[str, str], new: dict[str, Any] | None, factor: int) -> None:
        old = self.images.get(key)
        size = max(item_size(old) if old else 0, item_size(new) if new else 0)
        self.wcu += factor * max(1, math.ceil(size / 1024)) + self._index_units(old, new)
        if new is None:
            self.images.pop(key, None)
        else:
            self.images[key] = new

    def _updated(self, key: tuple[str, str], params: dict[str, Any]) -> dict[str, Any]:
        """The image after an update: every value it sets, on the image before."""
        image = dict(self.images.get(key, {"pk": {"S": key[0]}, "sk": {"S": key[1]}}))
        expression: str = params["UpdateExpression"]
        values = params.get("ExpressionAttributeValues", {})
        for clause in expression.replace(" ADD ", " SET ").replace("REMOVE", "SET").split("SET"):
            for part in clause.split(","):
                name, _, value = part.partition("=")
                name, value = name.strip(), value.strip()
                if not name:
                    continue
                if not value:  # REMOVE, or ADD name :value
                    head, _, added = name.partition(" ")
                    if added and head in image and "N" in image[head]:
                        image[head] = {"N": str(int(image[head]["N"]) + 1)}
                    elif not added:
                        image.pop(head, None)
                    continue
                token = value.split("(")[-1].split(",")[-1].strip(" )")
                if value.startswith("if_not_exists") and name in image:
                    continue
                if token in values:
                    image[name] = values[token]
        return image

    def record(self, operation: str, params: dict[str, Any]) -> None:
        self.requests[operation] += 1
        if operation == "put_item":
            self._write(self._key(params["Item"]), params["Item"], 1)
        elif operation == "update_item":
            key = self._key(params["Key"])
            self._write(key, self._updated(key, params), 1)
        elif operation == "delete_item":
            self._write(self._key(params["Key"]), None, 1)
        elif operation == "batch_write_item":
            for requests in params["RequestItems"].values():
                for request in requests:
                    if "PutRequest" in request:
                        item = request["PutRequest"]["Item"]
                        self._write(self._key(item), item, 1)
        elif operation == "transact_write_items":
            for entry in params["TransactItems"]:
                [(kind, body)] = entry.items()
                if kind == "Put":
                    self._write(self._key(body["Item"]), body["Item"], 2)
                elif kind == "Update":
                    key = self._key(body["Key"])
                    self._write(key, self._updated(key, body), 2)
                elif kind == "Delete":
                    self._write(self._key(body["Key"]), None, 2)
                else:  # ConditionCheck: charged like a write of the item, writes nothing
                    image = self.images.get(self._key(body["Key"]))
                    self.wcu += 2 * max(1, math.ceil(item_size(image or {}) / 1024))


# --- the runs --------------------------------------------------------------------------------


async def run_chain(engine: Engine, steps: int) -> float:
    run = await engine.start(chain, steps)
    start = time.perf_counter()
    done = await drive(engine, run.run_id)
    elapsed = time.perf_counter() - start
    assert done.status == RunStatus.SUCCEEDED, done.error
    return elapsed


async def per_step(engine: Engine, steps: int, repeats: int) -> float:
    """Median seconds of one more durable step: (N-step run - 1-step run) / (N - 1)."""
    await run_chain(engine, 2)  # warm up connections and caches
    samples = []
    for _ in range(repeats):
        one = await run_chain(engine, 1)
        many = await run_chain(engine, steps)
        samples.append((many - one) / (steps - 1))
    return statistics.median(samples)


async def open_store_engine(store: Any, directory: Path) -> Engine:
    return await open_engine(
        store=store, artifacts=f"file://{directory}/artifacts", secret=b"0" * 32
    )


def postgres_url() -> str | None:
    url = os.environ.get("CADENZA_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
    try:
        import psycopg

        with psycopg.connect(url, connect_timeout=2):
            pass
    except Exception:
        return None
    return f"{url}?schema=bench_{uuid.uuid4().hex[:8]}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    steps, repeats = (6, 3) if args.quick else (20, 7)
    for name, value in {
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": REGION,
    }.items():
        os.environ.setdefault(name, value)
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto logs every request

    from cadenza.adapters.dynamodb import DynamoDbRunStore
    from cadenza.adapters.dynamodb._table import PROJECTED

    figures: dict[str, float] = {}
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            directory = Path(tmp)
            stores: dict[str, Any] = {"sqlite": f"sqlite:///{directory}/cadenza.db"}
            pg = postgres_url()
            if pg is not None:
                stores["postgres"] = pg
            dynamo = DynamoDbRunStore(
                f"bench-{uuid.uuid4().hex[:8]}",
                region=REGION,
                endpoint_url=f"http://127.0.0.1:{port}",
            )
            stores["dynamodb_moto"] = dynamo
            for name, store in stores.items():
                engine = await open_store_engine(store, directory)
                try:
                    figures[f"{name}_step_ms"] = await per_step(engine, steps, repeats) * 1e3
                finally:
                    await engine.close()

            # Write capacity: count what a 1-step and an N-step run write.
            meter = CapacityMeter(PROJECTED)
            counted = DynamoDbRunStore(
                dynamo.table.name, region=REGION, endpoint_url=dynamo.table.endpoint_url
            )
            call = counted.table.call

            async def metered(operation: str, **params: Any) -> Any:
                meter.record(operation, params)
                return await call(operation, **params)

            counted.table.call = metered  # type: ignore[method-assign]
            engine = await open_store_engine(counted, directory)
            try:
                usage = {}
                for n in (1, steps):
                    before, requests = meter.wcu, meter.requests.copy()
                    await run_chain(engine, n)
                    usage[n] = (meter.wcu - before, meter.requests - requests)
            finally:
                await engine.close()
            run_one, run_many = usage[1][0], usage[steps][0]
            figures["dynamodb_wcu_per_step"] = (run_many - run_one) / (steps - 1)
            figures["dynamodb_wcu_run_fixed"] = run_one - figures["dynamodb_wcu_per_step"]
            calls = sum(usage[steps][1].values()) - sum(usage[1][1].values())
            figures["dynamodb_requests_per_step"] = calls / (steps - 1)
            figures["dynamodb_usd_per_million_steps"] = (
                figures["dynamodb_wcu_per_step"] * WRU_PRICE * 1e6
            )
            breakdown = usage[steps][1]
    finally:
        server.stop()
    width = max(len(k) for k in figures)
    print(
        f"cadenza DynamoDB store benchmark ({'quick' if args.quick else 'full'}, {steps}-step"
        f" runs), python {sys.version.split()[0]}, {os.cpu_count()} cores;"
        " DynamoDB is moto on loopback"
    )
    for key, value in figures.items():
        print(f"  {key:<{width}}  {value:>10.2f}")
    print(f"  requests of a {steps}-step run: {dict(sorted(breakdown.items()))}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))  # noqa: ASYNC240 - at exit


if __name__ == "__main__":
    asyncio.run(main())
