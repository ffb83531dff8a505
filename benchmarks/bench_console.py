"""Console benchmark: how long the page of one large run takes to serve.

    python benchmarks/bench_console.py                # a run of 1,000 operations
    python benchmarks/bench_console.py --ops 5000 --repeat 5

The run mixes plain steps, model calls (a scripted model), retried steps and a map, so the
page has every kind of row. The figure is the whole request through the ASGI app — store
reads, building the timeline, rendering the template — median of ``--repeat`` requests
after one warm-up; SQLite on a temporary folder.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import httpx

from cadenza import Context, RetryPolicy, drive, workflow
from cadenza.agents import call_model
from cadenza.client import Client
from cadenza.config import open_engine
from cadenza.service import ServiceSettings, create_app
from cadenza.service._auth import create_key
from cadenza.testing.scripted_model import ScriptedModel

MODEL = ScriptedModel(name="scripted:bench", default="A reply of a few words, for the page.")
_failures: dict[int, int] = {}


def _sometimes(i: int) -> int:
    # every 50th item fails once, so the page shows retries
    if i % 50 == 0 and _failures.get(i, 0) == 0:
        _failures[i] = 1
        raise ValueError(f"item {i} failed once")
    return i


@workflow(name="bench-console")
async def large(ctx: Context, ops: int) -> int:
    total = 0
    retry = RetryPolicy(max_attempts=2, initial_interval=timedelta(milliseconds=1))
    for i in range(ops):
        if i % 100 == 0:
            reply = await call_model(ctx, MODEL, f"summarise item {i}", name=f"model:{i}")
            total += len(reply.text)
        else:
            total += await ctx.step(_sometimes, i, name=f"item-{i}", retry=retry)
    return total


async def main(ops: int, repeat: int) -> None:
    with tempfile.TemporaryDirectory(prefix="cadenza-bench-") as directory:
        engine = await open_engine(
            store=f"sqlite:///{directory}/c.db",
            artifacts=f"file://{directory}/artifacts",
            secret=b"bench-secret-0123456789abcdef",
        )
        client = Client(engine)
        run = await engine.start(large, ops)
        await drive(engine, run.run_id, linger=timedelta(seconds=1))
        journal = await engine.store.load_journal(run.run_id)
        _, key = await create_key(
            client, name="bench", tenant="default", scopes=["read"], now=engine.clock.now()
        )
        app = create_app(client, settings=ServiceSettings(rate_limit=None))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as http:
            await http.post("/login", data={"api_key": key})
            first = await http.get(f"/runs/{run.run_id}")
            assert first.status_code == 200, first.text[:300]
            times = []
            for _ in range(repeat):
                started = time.perf_counter()
                page = await http.get(f"/runs/{run.run_id}")
                times.append(time.perf_counter() - started)
                assert page.status_code == 200
        await client.close()
        await engine.close()
    print(
        f"run page, {len(journal)} operations: median {statistics.median(times) * 1000:.0f} ms"
        f" (min {min(times) * 1000:.0f}, max {max(times) * 1000:.0f}, {repeat} requests,"
        f" {len(page.content) / 1024:.0f} KiB of HTML)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=9)
    args = parser.parse_args()
    asyncio.run(main(args.ops, args.repeat))
