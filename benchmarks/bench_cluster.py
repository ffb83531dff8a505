"""Cluster benchmark: worker processes over one PostgreSQL store.

    python benchmarks/bench_cluster.py            # full sizes (several minutes)
    python benchmarks/bench_cluster.py --quick    # smaller, for a smoke check
    python benchmarks/bench_cluster.py --json out.json

It creates a throwaway database on the server named by ``CADENZA_BENCH_POSTGRES``
(default ``postgresql://postgres@127.0.0.1:5432/postgres``) and drops it at the end.

Figures, each compared with a floor measured in the same run on the same server: one
single-row INSERT + COMMIT of a checkpoint-sized row under the server's
``synchronous_commit`` (alone for latency, from as many connections as the workers have
for throughput).

* ``sequential``: one 20-step run at a time on one worker: per-step latency.
* ``throughput``: 500 concurrent 5-step runs on 1, 2 and 4 worker processes: steps/s,
  and the CPU each step costs in the workers and in PostgreSQL (the backends of the
  benchmark's database and the server's own processes; other databases are left out).
* ``fan-out``: one run mapping over 200 items at concurrency 20 (``ctx.map``), and in the
  full run over 1,000 at concurrency 50.
* ``parked``: 100,000 runs (5,000 with ``--quick``) waiting on a callback: time to start
  and park them, bytes of storage per run, and how fast a sample resumes when their
  callbacks complete.

Runs wait behind a paused queue (concurrency 0) while workers start, and the clock starts
when the pause is lifted: worker start-up is not measured. A figure ends when the store
recorded the last run's end (or parking), not when the benchmark's poll noticed it, which
would add up to a poll interval. Medians of repetitions. The
last table sets each figure that has a target beside its floor, their ratio and the
target, and says whether it is met. Wall-clock figures move with whatever else runs on
the machine; the CPU per step is the steadier measure.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import psycopg

from cadenza import Context, workflow
from cadenza.clock import parse_iso
from cadenza.config import open_engine
from cadenza.engine.engine import Engine
from cadenza.engine.worker import Worker, stop_on_signals
from cadenza.ports.run_store import QueueConfig

PAYLOAD = {"text": "x" * 160, "n": 12345, "ok": True}  # ~200 bytes as JSON
QUEUE = "bench"
SECRET = "bench-secret-0123456789abcdef0123"
ADMIN_URL = os.environ.get(
    "CADENZA_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)
POOL_MAX = 8
WORKER_CONCURRENCY = 64


async def make_payload(i: int) -> dict[str, object]:
    return {**PAYLOAD, "i": i}


@workflow(name="bench-chain", queue=QUEUE)
async def chain(ctx: Context, steps: int) -> int:
    for i in range(steps):
        await ctx.step(make_payload, i, name=f"s{i}")
    return steps


@workflow(name="bench-map", queue=QUEUE)
async def fan_out(ctx: Context, shape: list[int]) -> int:
    size, concurrency = shape

    async def item(c: Context, i: int) -> dict[str, object]:
        return await c.step(make_payload, i, name="item")  # type: ignore[no-any-return]

    result = await ctx.map(list(range(size)), item, max_concurrency=concurrency)
    return result.success_count


@workflow(name="bench-park", queue=QUEUE)
async def parked(ctx: Context) -> object:
    callback = await ctx.create_callback(name="approval")
    return await callback.result()


# --- worker processes --------------------------------------------------------------------


async def worker_main(store: str, concurrency: int) -> None:
    engine = await open_engine(store=store, secret=SECRET.encode())
    stop = asyncio.Event()
    stop_on_signals(stop)
    print("ready", flush=True)
    try:
        await Worker(engine, concurrency=concurrency, poll_interval=1.0).run(stop=stop)
    finally:
        await engine.close()


class Workers:
    """N worker processes, started together, stopped with SIGTERM."""

    def __init__(self, store: str, count: int, home: Path) -> None:
        self.store, self.count, self.home = store, count, home
        self.procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> Workers:
        env = {**os.environ, "CADENZA_HOME": str(self.home)}
        for _ in range(self.count):
            self.procs.append(
                subprocess.Popen(
                    [sys.executable, __file__, "--worker", "--store", self.store],
                    stdout=subprocess.PIPE,
                    env=env,
                )
            )
        for proc in self.procs:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if b"ready" not in line:
                raise RuntimeError(f"worker {proc.pid} did not start: {line!r}")
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            proc.wait(timeout=60)

    def cpu_seconds(self) -> float:
        return sum(_cpu_seconds(p.pid) for p in self.procs)


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class PostgresCpu:
    """CPU used by the backends of the benchmark's database and by the server's own
    processes (WAL writer, checkpointer, …): other databases on a shared server are left
    out. A backend that exits between two readings takes its CPU with it; the pools keep
    theirs open, so that is the listener's and the client's short connections only."""

    def __init__(self, conn: psycopg.AsyncConnection[Any], database: str) -> None:
        self.conn, self.database = conn, database

    async def read(self) -> dict[int, float]:
        cur = await self.conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s OR datname IS NULL",
            (self.database,),
        )
        return {int(r[0]): _cpu_seconds(int(r[0])) for r in await cur.fetchall()}

    @staticmethod
    def since(before: dict[int, float], after: dict[int, float]) -> float:
        return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


# --- the floor -----------------------------------------------------------------------------


async def commit_floor(
    url: str, n: int, connections: list[int], seconds: float
) -> dict[str, float]:
    """Median latency of one INSERT + COMMIT of a checkpoint-sized row, and the commit rate
    of ``connections`` connections doing that at once."""
    body = json.dumps({"op": "1", "status": "SUCCEEDED", "result": json.dumps(PAYLOAD)})
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS bench_floor (id bigserial PRIMARY KEY, run text,"
            " op text, body jsonb)"
        )
        cur = await conn.execute("SHOW synchronous_commit")
        row = await cur.fetchone()
        synchronous_commit = row[0] if row else "?"
        samples = []
        for i in range(n):
            start = time.perf_counter()
            await conn.execute(
                "INSERT INTO bench_floor (run, op, body) VALUES (%s, %s, %s)", ("r-1", str(i), body)
            )
            samples.append(time.perf_counter() - start)

    async def hammer(deadline: float) -> int:
        done = 0
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as c:
            while time.perf_counter() < deadline:
                await c.execute(
                    "INSERT INTO bench_floor (run, op, body) VALUES (%s, %s, %s)",
                    ("r-2", str(done), body),
                )
                done += 1
        return done

    print(f"  (synchronous_commit = {synchronous_commit})")
    floors = {"floor_commit_us": statistics.median(samples) * 1e6}
    for count in connections:
        deadline = time.perf_counter() + seconds
        counts = await asyncio.gather(*(hammer(deadline) for _ in range(count)))
        floors[f"floor_commits_per_s_{count}conn"] = sum(counts) / seconds
    return floors


# --- measurements --------------------------------------------------------------------------


@dataclass
class Bench:
    engine: Engine
    store: str
    home: Path
    conn: psycopg.AsyncConnection[Any]
    pg_cpu: PostgresCpu

    async def pause(self) -> None:
        await self.engine.store.put_queue(QueueConfig(QUEUE, concurrency=0))

    async def release(self) -> None:
        await self.engine.store.put_queue(QueueConfig(QUEUE))

    async def count(self, sql: str, params: Any = None) -> int:
        cur = await self.conn.execute(sql, params)  # type: ignore[arg-type]
        row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def wait_until(self, check: Callable[[], Awaitable[bool]], timeout: float) -> None:
        deadline = time.perf_counter() + timeout
        while not await check():
            if time.perf_counter() > deadline:
                raise TimeoutError("the workers did not finish in time")
            await asyncio.sleep(0.02)

    async def ended(self, run_ids: list[str]) -> bool:
        # By primary key: polling must not cost the server a scan of a large table.
        done = await self.count(
            "SELECT count(*) FROM cadenza.runs WHERE run_id = ANY(%s)"
            " AND status IN ('SUCCEEDED', 'FAILED', 'CANCELLED')",
            (run_ids,),
        )
        return done >= len(run_ids)

    async def last_write(self, run_ids: list[str]) -> float:
        """When the last of ``run_ids`` was written (its end, or its parking), in seconds
        of the wall clock: the store's own record, not when a poll happened to see it."""
        cur = await self.conn.execute(
            "SELECT extract(epoch FROM max(updated_at)) FROM cadenza.runs WHERE run_id = ANY(%s)",
            (run_ids,),
        )
        row = await cur.fetchone()
        assert row is not None and row[0] is not None
        return float(row[0])

    async def clear(self) -> None:
        await self.conn.execute(
            "TRUNCATE cadenza.runs, cadenza.ops, cadenza.history, cadenza.callbacks, cadenza.outbox"
        )
        await self.conn.execute("VACUUM ANALYZE")

    async def start_many(self, definition: Any, value: Any, count: int) -> list[str]:
        """Start ``count`` runs, a few dozen at a time over the pool."""
        ids: list[str] = []
        for first in range(0, count, 64):
            batch = await asyncio.gather(
                *(self.engine.start(definition, value) for _ in range(min(64, count - first)))
            )
            ids += [r.run_id for r in batch]
        return ids

    async def sequential(self, runs: int, steps: int) -> dict[str, float]:
        """One run at a time on one worker: seconds per step (from the run's history: first
        step started to run succeeded, over the steps) and from start to end of a run."""
        await self.clear()
        await self.release()
        per_step, latency = [], []
        with Workers(self.store, 1, self.home):
            for _ in range(runs):
                run = await self.engine.start(chain, steps)
                await self.wait_until(functools.partial(self.ended, [run.run_id]), 60)
                history = await self.engine.store.history(run.run_id)
                first = next(e.timestamp for e in history if e.op_id == "1")
                last = history[-1].timestamp
                per_step.append((last - first).total_seconds() / steps)
                ended = await self.engine.store.get_run(run.run_id)
                latency.append((ended.updated_at - ended.created_at).total_seconds())
        return {"step": statistics.median(per_step), "run": statistics.median(latency)}

    async def throughput(self, workers: int, runs: int, steps: int) -> dict[str, float]:
        await self.clear()
        await self.pause()
        ids = await self.start_many(chain, steps, runs)
        with Workers(self.store, workers, self.home) as procs:
            cpu_workers, pg_before = procs.cpu_seconds(), await self.pg_cpu.read()
            start = time.time()
            await self.release()
            await self.wait_until(lambda: self.ended(ids), 600)
            elapsed = await self.last_write(ids) - start
            cpu_workers = procs.cpu_seconds() - cpu_workers
            cpu_pg = PostgresCpu.since(pg_before, await self.pg_cpu.read())
        total = runs * steps
        return {
            "steps_per_s": total / elapsed,
            "worker_cpu_ms_per_step": cpu_workers / total * 1000,
            "postgres_cpu_ms_per_step": cpu_pg / total * 1000,
        }

    async def fan_out(self, size: int, concurrency: int, repeats: int) -> float:
        await self.clear()
        await self.release()
        times = []
        with Workers(self.store, 1, self.home):
            for _ in range(repeats):
                start = time.time()
                run = await self.engine.start(fan_out, [size, concurrency])
                await self.wait_until(functools.partial(self.ended, [run.run_id]), 600)
                times.append(await self.last_write([run.run_id]) - start)
        return statistics.median(times)

    async def parked(self, count: int, sample: int, workers: int) -> dict[str, float]:
        await self.clear()
        await self.release()
        with Workers(self.store, workers, self.home) as procs:
            cpu = await _CpuMeter.start(procs, self.pg_cpu)
            start, wall_start = time.perf_counter(), time.time()
            ids = await self.start_many(parked, None, count)
            created = time.perf_counter() - start

            async def all_parked() -> bool:  # nothing runnable or running is left
                return not await self.count(
                    "SELECT (EXISTS (SELECT 1 FROM cadenza.runs WHERE status = 'PENDING')"
                    " OR EXISTS (SELECT 1 FROM cadenza.runs WHERE status = 'RUNNING'))::int"
                )

            await self.wait_until(all_parked, 3600)
            park_s = await self.last_write(ids) - wall_start
            park_cpu = await cpu.per(count)
            size = await self.count(
                "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c"
                " JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = 'cadenza' AND c.relkind = 'r'"
            )
            tokens = []
            for run_id in ids[:sample]:
                ops, callbacks = await self.engine.store.load_activation(run_id)
                journal = {op.op_id: op for op in ops}
                for cb in callbacks:
                    expires = parse_iso(journal[cb.op_id].data["token_expires_at"])
                    tokens.append(
                        self.engine.tokens.issue(cb.callback_id, run_id, cb.op_id, expires)
                    )
            cpu = await _CpuMeter.start(procs, self.pg_cpu)
            start, wall_start = time.perf_counter(), time.time()
            for first in range(0, len(tokens), 32):
                await asyncio.gather(
                    *(
                        self.engine.succeed_callback(t, {"ok": True})
                        for t in tokens[first : first + 32]
                    )
                )
            completed = time.perf_counter() - start
            await self.wait_until(lambda: self.ended(ids[:sample]), 600)
            resumed = await self.last_write(ids[:sample]) - wall_start
            resume_cpu = await cpu.per(sample)
        return {
            "parked_runs": count,
            "parked_create_s": created,
            "parked_create_and_park_s": park_s,
            "parked_runs_per_s": count / park_s,
            **{f"park_cpu_ms_per_run_{k}": v for k, v in park_cpu.items()},
            "parked_bytes_per_run": size / count,
            "resume_sample": sample,
            "resume_callbacks_per_s": sample / completed,
            "resume_runs_per_s": sample / resumed,
            **{f"resume_cpu_ms_per_run_{k}": v for k, v in resume_cpu.items()},
        }


class _CpuMeter:
    """CPU spent since creation by the client (this process), the workers and PostgreSQL."""

    def __init__(self, workers: Workers, pg_cpu: PostgresCpu) -> None:
        self.workers, self.pg_cpu = workers, pg_cpu
        self.begin: dict[str, float] = {}
        self.pg_begin: dict[int, float] = {}

    @classmethod
    async def start(cls, workers: Workers, pg_cpu: PostgresCpu) -> _CpuMeter:
        meter = cls(workers, pg_cpu)
        meter.begin = meter._now()
        meter.pg_begin = await pg_cpu.read()
        return meter

    def _now(self) -> dict[str, float]:
        return {"client": time.process_time(), "workers": self.workers.cpu_seconds()}

    async def per(self, count: int) -> dict[str, float]:
        now = self._now()
        spent = {k: now[k] - self.begin[k] for k in now}
        spent["postgres"] = PostgresCpu.since(self.pg_begin, await self.pg_cpu.read())
        return {k: v / count * 1000 for k, v in spent.items()}


async def run_benchmark(args: argparse.Namespace, home: Path) -> dict[str, float]:
    quick = args.quick
    name = f"cadenza_bench_{uuid.uuid4().hex[:8]}"
    async with await psycopg.AsyncConnection.connect(ADMIN_URL, autocommit=True) as admin:
        await admin.execute(f'CREATE DATABASE "{name}"')
    url = ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    store_url = f"{url}?pool_max={POOL_MAX}"
    figures: dict[str, float] = {}
    try:
        print("floor")
        figures |= await commit_floor(
            url,
            300 if quick else 2000,
            [n * POOL_MAX for n in args.workers],
            1.0 if quick else 5.0,
        )
        engine = await open_engine(
            store=store_url, artifacts=f"file://{home}/artifacts", secret=SECRET.encode()
        )
        conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
        bench = Bench(engine, store_url, home, conn, PostgresCpu(conn, name))
        try:
            print("sequential")
            sequential = await bench.sequential(5 if quick else 20, 20)
            figures["sequential_step_us"] = sequential["step"] * 1e6
            figures["sequential_step_vs_floor"] = (
                figures["sequential_step_us"] / figures["floor_commit_us"]
            )
            figures["sequential_20step_run_ms"] = sequential["run"] * 1000
            for n in args.workers:
                print(f"throughput, {n} worker(s)")
                results = [await bench.throughput(n, 500, 5) for _ in range(1 if quick else 3)]
                for key in results[0]:
                    figures[f"w{n}_{key}"] = statistics.median(r[key] for r in results)
                figures[f"w{n}_steps_per_s_vs_floor_rate"] = (
                    figures[f"w{n}_steps_per_s"]
                    / figures[f"floor_commits_per_s_{n * POOL_MAX}conn"]
                )
            print("fan-out")
            figures["map200_c20_s"] = await bench.fan_out(200, 20, 3 if quick else 5)
            if not quick:
                figures["map1000_c50_s"] = await bench.fan_out(1000, 50, 3)
            print("parked")
            figures |= await bench.parked(
                5_000 if quick else 100_000, 500 if quick else 1000, max(args.workers)
            )
        finally:
            await conn.close()
            await engine.close()
    finally:
        async with await psycopg.AsyncConnection.connect(ADMIN_URL, autocommit=True) as admin:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return figures


def targets(figures: dict[str, float], workers: list[int]) -> str:
    """Each figure with a target next to the floor measured in the same run: the figure,
    the floor, their ratio, the target and whether it is met."""
    commit_us = figures["floor_commit_us"]
    best = max(workers, key=lambda n: figures[f"w{n}_steps_per_s"])
    rate = figures[f"floor_commits_per_s_{best * POOL_MAX}conn"]
    rows: list[tuple[str, float, str, float, str, float, bool]] = [
        # name, figure, unit, floor, what the floor is, target, met
        (
            "chain, us per step",
            figures["sequential_step_us"],
            "us",
            commit_us,
            "one commit",
            1.5 * commit_us,
            figures["sequential_step_vs_floor"] <= 1.5,
        ),
        (
            "200-item map at concurrency 20",
            figures["map200_c20_s"] * 1000,
            "ms",
            200 * commit_us / 1000,
            "200 serial commits",
            60.0,
            figures["map200_c20_s"] * 1000 <= 60.0,
        ),
        (
            f"500 x 5 concurrent, {best} worker(s)",
            figures[f"w{best}_steps_per_s"],
            "steps/s",
            rate,
            f"commits/s, {best * POOL_MAX} conns",
            6000.0,
            figures[f"w{best}_steps_per_s"] >= 6000.0,
        ),
        (
            "park runs",
            figures["parked_runs_per_s"],
            "runs/s",
            rate,
            f"commits/s, {best * POOL_MAX} conns",
            3000.0,
            figures["parked_runs_per_s"] >= 3000.0,
        ),
        (
            "resume parked runs",
            figures["resume_runs_per_s"],
            "runs/s",
            rate,
            f"commits/s, {best * POOL_MAX} conns",
            2000.0,
            figures["resume_runs_per_s"] >= 2000.0,
        ),
    ]
    lines = [
        f"  {'figure':<36} {'value':>10} {'unit':<8} {'floor':>10} {'ratio':>7}"
        f"  {'the floor':<22} {'target':>10}  met"
    ]
    for name, value, unit, floor, what, target, met in rows:
        bound = "<=" if unit in ("us", "ms") else ">="
        lines.append(
            f"  {name:<36} {value:>10.1f} {unit:<8} {floor:>10.1f} {value / floor:>6.2f}x"
            f"  {what:<22} {bound} {target:>7.0f}  {'yes' if met else 'no'}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--workers", default="1,2,4", help="worker process counts to compare")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--store", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        asyncio.run(worker_main(args.store, WORKER_CONCURRENCY))
        return
    args.workers = [int(n) for n in args.workers.split(",")]
    with tempfile.TemporaryDirectory(prefix="cadenza-bench-") as home:
        figures = asyncio.run(run_benchmark(args, Path(home)))
    width = max(len(k) for k in figures)
    print(
        f"cadenza cluster benchmark ({'quick' if args.quick else 'full'}),"
        f" python {sys.version.split()[0]}, {os.cpu_count()} cores, PostgreSQL on this machine"
    )
    for key, value in figures.items():
        print(f"  {key:<{width}}  {value:>12.2f}")
    print()
    print(targets(figures, args.workers))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
