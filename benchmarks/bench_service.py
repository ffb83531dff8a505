"""Service benchmark: starting runs and completing callbacks over the HTTP API, against the
same operations through the embedded ``Client``, in the same run.

    python benchmarks/bench_service.py               # SQLite, 5 rounds of 300 requests
    python benchmarks/bench_service.py --quick       # smaller, for a smoke check
    python benchmarks/bench_service.py --postgres    # PostgreSQL too (a throwaway database)
    python benchmarks/bench_service.py --json out.json

The API is a real server: this script started again as a child process, serving
``create_app(client)`` with uvicorn on 127.0.0.1 (no worker, no rate limit), as
``cadenza serve --no-worker`` would. The driver sends requests with httpx, at most
``--concurrency`` at a time, with an API key holding the ``start`` and ``approve`` scopes.
The client path runs the same operations through ``Client`` in the driver's process, with
the same bound on concurrency, on the same store.

Each round: start ``n`` runs of a one-callback workflow over the API and ``n`` through the
client (alternating which goes first), park them all with a worker (not timed), then
complete ``n`` of their callbacks over the API and ``n`` through the client. A batch stops
early past ``--seconds``. Per round: requests per second (completed requests over the
batch's wall time), p50 and p99 latency; the table shows the median over rounds. PostgreSQL
uses a throwaway database on ``CADENZA_BENCH_POSTGRES`` (default
``postgresql://postgres@127.0.0.1:5432/postgres``), dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import httpx

from cadenza import Context, workflow
from cadenza.client import Client
from cadenza.config import open_engine
from cadenza.engine.worker import Worker
from cadenza.ports.run_store import RunStatus

SECRET = b"bench-secret-0123456789abcdef0123"
ADMIN_URL = os.environ.get(
    "CADENZA_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)
HOST = "127.0.0.1"  # loopback only
WORKFLOW = "bench-service-wait"


@workflow(name=WORKFLOW)
async def waits(ctx: Context) -> object:
    callback = await ctx.create_callback(name="approval")
    return await callback.result()


# --- the server: this script again, in a child process ---------------------------------


async def serve(store: str, home: Path, port: int) -> None:
    import uvicorn

    from cadenza.service import ServiceSettings, create_app

    engine = await open_engine(store=store, home=home, secret=SECRET)
    client = Client(engine)
    app = create_app(client, settings=ServiceSettings(rate_limit=None))
    config = uvicorn.Config(
        app, host=HOST, port=port, log_level="warning", lifespan="off", access_log=False
    )
    try:
        await uvicorn.Server(config).serve()
    finally:
        await client.close()
        await engine.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def server(store: str, home: Path, key: str) -> AsyncIterator[str]:
    port = free_port()
    args = [sys.executable, __file__, "--serve", store, "--home", str(home), "--port", str(port)]
    process = await asyncio.create_subprocess_exec(*args)
    base = f"http://{HOST}:{port}/api/v1"
    try:
        async with httpx.AsyncClient(base_url=base) as http:
            deadline = time.monotonic() + 60
            while True:
                if process.returncode is not None:
                    raise RuntimeError(f"the server exited with {process.returncode}")
                with contextlib.suppress(httpx.TransportError):
                    ready = await http.get(
                        f"/workflows/{WORKFLOW}", headers={"Authorization": f"Bearer {key}"}
                    )
                    if ready.status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError("the server did not answer within 60 s")
                await asyncio.sleep(0.1)
        yield base
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), timeout=30)


# --- the driver ------------------------------------------------------------------------


async def batch(
    calls: list[Callable[[], Awaitable[Any]]], concurrency: int, seconds: float
) -> dict[str, float]:
    """Run ``calls``, at most ``concurrency`` at a time, none started past ``seconds``."""
    latencies: list[float] = []
    gate = asyncio.Semaphore(concurrency)
    started = time.perf_counter()
    deadline = started + seconds

    async def one(call: Callable[[], Awaitable[Any]]) -> None:
        async with gate:
            if time.perf_counter() > deadline:
                return
            begin = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - begin)

    await asyncio.gather(*(one(call) for call in calls))
    wall = time.perf_counter() - started
    latencies.sort()
    return {
        "n": len(latencies),
        "rps": len(latencies) / wall,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
    }


class Driver:
    def __init__(self, client: Client, http: httpx.AsyncClient, args: argparse.Namespace):
        self.client, self.http, self.args = client, http, args
        self.started: list[str] = []

    async def api_start(self) -> None:
        response = await self.http.post("/runs", json={"workflow": WORKFLOW, "input": None})
        assert response.status_code == 201, response.text[:300]
        self.started.append(response.json()["run_id"])

    async def client_start(self) -> None:
        handle = await self.client.start_run(waits)
        self.started.append(handle.run_id)

    async def park(self) -> list[str]:
        """Execute the runs started this round until each waits on its callback; their
        tokens."""
        engine, wanted = self.client.engine, set(self.started)

        async def parked() -> bool:
            suspended = await engine.store.list_runs(
                status=RunStatus.SUSPENDED, workflow=WORKFLOW, limit=len(wanted) + 10_000
            )
            return wanted <= {run.run_id for run in suspended}

        await Worker(engine, concurrency=200, poll_interval=0.05).run(until=parked)
        tokens = []
        for run_id in self.started:
            waits_on = await engine.pending_callbacks(run_id)
            tokens.extend(w.token for w in waits_on if w.token is not None)
        self.started = []
        return tokens

    async def api_succeed(self, token: str) -> None:
        response = await self.http.post(
            f"/callbacks/{token}/succeed", json={"payload": {"approved": True}}
        )
        assert response.status_code == 200, response.text[:300]

    async def client_succeed(self, token: str) -> None:
        await self.client.succeed_callback(token, {"approved": True})

    async def round(self, i: int) -> dict[tuple[str, str], dict[str, float]]:
        n, c, s = self.args.requests, self.args.concurrency, self.args.seconds
        results: dict[tuple[str, str], dict[str, float]] = {}
        starts = {
            "API": [self.api_start] * n,
            "client": [self.client_start] * n,
        }
        paths = ["API", "client"] if i % 2 == 0 else ["client", "API"]
        for path in paths:
            results[("start run", path)] = await batch(starts[path], c, s)
        tokens = await self.park()
        half = len(tokens) // 2
        succeed = {
            "API": [lambda t=t: self.api_succeed(t) for t in tokens[:half]],
            "client": [lambda t=t: self.client_succeed(t) for t in tokens[half:]],
        }
        for path in paths:
            results[("complete callback", path)] = await batch(succeed[path], c, s)
        return results


async def measure(store: str, home: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    from cadenza.security.api_keys import create_key

    engine = await open_engine(store=store, home=home, secret=SECRET)
    client = Client(engine)
    try:
        _, key = await create_key(
            client,
            name="bench",
            tenant="default",
            scopes=["start", "approve", "read"],
            now=engine.clock.now(),
        )
        async with server(store, home, key) as base:
            limits = httpx.Limits(max_connections=args.concurrency)
            headers = {"Authorization": f"Bearer {key}"}
            async with httpx.AsyncClient(
                base_url=base, headers=headers, limits=limits, timeout=60
            ) as http:
                driver = Driver(client, http, args)
                await driver.round(0)  # warm-up: imports, connections, caches
                rounds = [await driver.round(i) for i in range(args.rounds)]
    finally:
        await client.close()
        await engine.close()
    rows = []
    for key_ in rounds[0]:
        samples = [r[key_] for r in rounds]
        rows.append(
            {
                "operation": key_[0],
                "path": key_[1],
                **{f: statistics.median(s[f] for s in samples) for f in samples[0]},
            }
        )
    for row in rows:
        other = next(
            r for r in rows if r["operation"] == row["operation"] and r["path"] == "client"
        )
        row["api_vs_client_p50"] = row["p50_ms"] / other["p50_ms"]
        row["api_vs_client_rps"] = row["rps"] / other["rps"]
    return rows


@contextlib.asynccontextmanager
async def postgres_store() -> AsyncIterator[str]:
    import psycopg

    name = f"cadenza_bench_{uuid.uuid4().hex[:8]}"
    async with await psycopg.AsyncConnection.connect(ADMIN_URL, autocommit=True) as admin:
        await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        async with await psycopg.AsyncConnection.connect(ADMIN_URL, autocommit=True) as admin:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def measure_all(args: argparse.Namespace) -> dict[str, list[dict[str, Any]]]:
    results = {}
    with tempfile.TemporaryDirectory(prefix="cadenza-bench-") as tmp:
        home = Path(tmp)
        results["sqlite"] = await measure(f"sqlite:///{home / 'cadenza.db'}", home, args)
        if args.postgres:
            async with postgres_store() as url:
                results["postgresql"] = await measure(url, home, args)
    return results


def main(args: argparse.Namespace) -> None:
    if args.quick:
        args.requests, args.rounds, args.seconds = 40, 2, 5.0
    results = asyncio.run(measure_all(args))
    load = os.getloadavg()[0]
    print(
        f"{args.rounds} rounds of up to {args.requests} requests, {args.concurrency} at a time;"
        f" medians over rounds; load average {load:.2f} on {os.cpu_count()} CPUs"
    )
    print(
        f"{'store':<11} {'operation':<18} {'path':<7} {'n':>5} {'rps':>8} {'p50 ms':>8}"
        f" {'p99 ms':>8} {'API/client':>11}"
    )
    for store, rows in results.items():
        for row in rows:
            ratio = f"{row['api_vs_client_p50']:.1f}x" if row["path"] == "API" else ""
            print(
                f"{store:<11} {row['operation']:<18} {row['path']:<7} {row['n']:>5.0f}"
                f" {row['rps']:>8.0f} {row['p50_ms']:>8.1f} {row['p99_ms']:>8.1f} {ratio:>11}"
            )
    print("API/client: the API's p50 latency over the client's")
    if args.json:
        Path(args.json).write_text(json.dumps({"load": load, **results}, indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--postgres", action="store_true")
    parser.add_argument("--requests", type=int, default=300, help="per batch")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0, help="longest batch")
    parser.add_argument("--json")
    parser.add_argument("--serve", help=argparse.SUPPRESS)  # the child: serve this store
    parser.add_argument("--home", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.serve:
        asyncio.run(serve(options.serve, Path(options.home), options.port))
    else:
        main(options)
