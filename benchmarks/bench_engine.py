"""Embedded engine benchmark: checkpoint overhead, fan-out, parked runs, concurrent runs.

    python benchmarks/bench_engine.py            # full sizes
    python benchmarks/bench_engine.py --quick    # smaller, for a smoke check
    python benchmarks/bench_engine.py --json out.json

Every figure is printed next to a floor measured in the same run on the same disk, the
ratio between the two, and its target:

- raw commit: one SQLite commit (WAL, synchronous=FULL) of one row the size of a step's
  checkpoint, in a fresh file: what a durable step cannot go below;
- raw batch commit: the same rows inserted by one connection, as many per commit as the
  engine can group (a map's concurrency, all the runs parked or resumed at once): what a
  figure whose commits are shared cannot go below.

Parking starts its runs together (as many clients at once would) and resuming completes
their callbacks together, so both measure what the store shares between runs. Medians of
several repetitions; these machines are shared and noisy, so the chains also report the
process CPU per step (``*_cpu_us``), which the load of other processes moves much less.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from cadenza import Context, drive, workflow
from cadenza.clock import parse_iso
from cadenza.config import open_engine
from cadenza.engine.worker import Worker
from cadenza.ports.run_store import RunStatus

PAYLOAD = {"text": "x" * 160, "n": 12345, "ok": True}  # ~200 bytes as JSON


async def make_payload(i: int) -> dict[str, object]:
    return {**PAYLOAD, "i": i}


@workflow(name="bench-chain")
async def chain(ctx: Context, steps: int) -> int:
    for i in range(steps):
        await ctx.step(make_payload, i, name=f"s{i}")
    return steps


@workflow(name="bench-map")
async def fan_out(ctx: Context, size: int) -> int:
    async def item(c: Context, i: int) -> dict[str, object]:
        return await c.step(make_payload, i, name="item")  # type: ignore[no-any-return]

    result = await ctx.map(list(range(size)), item, max_concurrency=20)
    return result.success_count


@workflow(name="bench-park")
async def parked(ctx: Context) -> object:
    callback = await ctx.create_callback(name="approval")
    return await callback.result()


def _raw_db(path: Path) -> sqlite3.Connection:
    """A fresh file set up as the store's (WAL, synchronous=FULL) with one plain table."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, run TEXT, op TEXT, body TEXT)")
    return conn


def raw_commit_floor(directory: Path, n: int) -> float:
    """Median seconds of one INSERT + COMMIT of a checkpoint-sized row."""
    conn = _raw_db(directory / "raw.db")
    body = json.dumps(PAYLOAD)
    samples = []
    for i in range(n):
        start = time.perf_counter()
        conn.execute("BEGIN")
        conn.execute("INSERT INTO t (run, op, body) VALUES (?, ?, ?)", ("r-1", str(i), body))
        conn.execute("COMMIT")
        samples.append(time.perf_counter() - start)
    conn.close()
    return statistics.median(samples)


def raw_batch_floor(directory: Path, rows: int, per_commit: int, repeats: int) -> float:
    """Median seconds to commit ``rows`` checkpoint-sized rows, ``per_commit`` at a time."""
    conn = _raw_db(directory / f"raw-{rows}-{per_commit}.db")
    body = json.dumps(PAYLOAD)
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for first in range(0, rows, per_commit):
            conn.execute("BEGIN")
            conn.executemany(
                "INSERT INTO t (run, op, body) VALUES (?, ?, ?)",
                [("r-1", str(i), body) for i in range(first, min(first + per_commit, rows))],
            )
            conn.execute("COMMIT")
        samples.append(time.perf_counter() - start)
    conn.close()
    return statistics.median(samples)


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# Process CPU seconds per step of the chains, by length: wall times on a shared machine
# swing with the load; the CPU the process spends does much less.
CHAIN_CPU: dict[int, float] = {}


async def bench_chain(engine, steps: int, repeats: int) -> float:
    per_step, cpu = [], []
    for _ in range(repeats):
        run = await engine.start(chain, steps)
        start, start_cpu = time.perf_counter(), time.process_time()
        await drive(engine, run.run_id)
        per_step.append((time.perf_counter() - start) / steps)
        cpu.append((time.process_time() - start_cpu) / steps)
    CHAIN_CPU[steps] = statistics.median(cpu)
    return statistics.median(per_step)


async def bench_map(engine, size: int, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        run = await engine.start(fan_out, size)
        start = time.perf_counter()
        done = await drive(engine, run.run_id)
        assert done.status == RunStatus.SUCCEEDED, done.error
        times.append(time.perf_counter() - start)
    return statistics.median(times)


async def bench_concurrent(engine, runs: int, steps: int) -> float:
    started = [await engine.start(chain, steps) for _ in range(runs)]
    ids = {r.run_id for r in started}
    start = time.perf_counter()
    worker = Worker(engine, concurrency=runs, poll_interval=0.05)

    async def all_done() -> bool:
        ended = await engine.store.list_runs(
            status=RunStatus.SUCCEEDED, workflow="bench-chain", limit=100_000
        )
        return ids <= {r.run_id for r in ended}

    await worker.run(until=all_done)
    return runs * steps / (time.perf_counter() - start)


async def bench_parking(engine, count: int) -> dict[str, float]:
    start = time.perf_counter()
    runs = await asyncio.gather(*(engine.start(parked) for _ in range(count)))
    worker = Worker(engine, concurrency=500, poll_interval=0.05)

    async def none_runnable() -> bool:
        return await engine.store.next_wake_at() is None or all(
            r.status == RunStatus.SUSPENDED
            for r in await engine.store.list_runs(workflow="bench-park", limit=count)
        )

    await worker.run(until=none_runnable)
    park = time.perf_counter() - start
    tokens = []
    for run in runs:
        journal = {op.op_id: op for op in await engine.store.load_journal(run.run_id)}
        for cb in await engine.store.load_callbacks(run.run_id):
            expires = parse_iso(journal[cb.op_id].data["token_expires_at"])
            tokens.append(engine.tokens.issue(cb.callback_id, cb.run_id, cb.op_id, expires))
    start = time.perf_counter()
    await asyncio.gather(*(engine.succeed_callback(t, {"approved": True}) for t in tokens))

    async def all_done() -> bool:
        return not await engine.store.list_runs(
            status=RunStatus.SUSPENDED, workflow="bench-park", limit=1
        )

    await Worker(engine, concurrency=500, poll_interval=0.05).run(until=all_done)
    return {"park_s": park, "resume_s": time.perf_counter() - start, "rss_mb": rss_mb()}


def parked_rss(count: int) -> float:
    """RSS of a fresh process after parking ``count`` runs (and dropping its references)."""
    code = f"""
import asyncio, sys, tempfile
sys.path.insert(0, {str(Path(__file__).parent)!r})
sys.path.insert(0, {str(Path(__file__).resolve().parents[1] / "src")!r})
import bench_engine as b
from cadenza.config import open_engine
from cadenza.engine.worker import Worker
async def main():
    d = tempfile.mkdtemp()
    engine = await open_engine(store=f"sqlite:///{{d}}/c.db", artifacts=f"file://{{d}}/a",
                               secret=b"0" * 32)
    for _ in range({count}):
        await engine.start(b.parked)
    async def idle():
        return await engine.store.next_wake_at() is None
    await Worker(engine, concurrency=100, poll_interval=0.05).run(until=idle)
    import gc; gc.collect()
    print(b.rss_mb())
    await engine.close()
asyncio.run(main())
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


# figure -> (floor it is compared with, how the ratio reads, target, target kind)
#   kind "ratio<=": the ratio figure / floor must not exceed the target
#   kind "<=" / ">=": the figure itself against the target
Row = tuple[str, float, str, float | None, str, float | None, str]


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    quick = args.quick
    figures: dict[str, float] = {}
    rows: list[Row] = []
    parked_count = 300 if quick else 2000
    concurrent_runs = 100 if quick else 500
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        floor = raw_commit_floor(directory, 300 if quick else 2000)
        repeats = 3 if quick else 7
        map_floor = raw_batch_floor(directory, 200, 20, repeats)
        map_serial_floor = raw_batch_floor(directory, 200, 1, repeats)
        park_floor = raw_batch_floor(directory, parked_count, 500, repeats)
        steps_floor = raw_batch_floor(directory, concurrent_runs * 5, concurrent_runs, repeats)
        figures["raw_commit_us"] = floor * 1e6
        figures["raw_batch_map200_ms"] = map_floor * 1000
        figures["raw_serial_map200_ms"] = map_serial_floor * 1000
        figures[f"raw_batch_{parked_count}_s"] = park_floor
        engine = await open_engine(
            store=f"sqlite:///{directory}/cadenza.db",
            artifacts=f"file://{directory}/artifacts",
            secret=b"0" * 32,
        )
        try:
            repeats = 5 if quick else 30
            step = await bench_chain(engine, 10, repeats)
            figures["chain10_step_us"] = step * 1e6  # whole run (start, claim, end) / 10
            figures["chain10_step_vs_commit"] = step / floor
            rows.append(
                ("chain10_step_us", step * 1e6, "raw commit", floor * 1e6, "ratio<=", 1.5, "µs")
            )
            # The cost of one more durable step, without the run's fixed costs.
            long = await bench_chain(engine, 50, repeats)
            marginal = (long * 50 - step * 10) / 40
            figures["marginal_step_us"] = marginal * 1e6
            figures["marginal_step_vs_commit"] = marginal / floor
            figures["chain10_step_cpu_us"] = CHAIN_CPU[10] * 1e6
            figures["marginal_step_cpu_us"] = (CHAIN_CPU[50] * 50 - CHAIN_CPU[10] * 10) / 40 * 1e6
            rows.append(
                ("marginal_step_us", marginal * 1e6, "raw commit", floor * 1e6, "", None, "µs")
            )
            map_s = await bench_map(engine, 200, 3 if quick else 7)
            figures["map200_ms"] = map_s * 1000
            rows.append(("map200_ms", map_s * 1000, "raw batch", map_floor * 1000, "<=", 30, "ms"))
            rate = await bench_concurrent(engine, concurrent_runs, 5)
            figures["concurrent_steps_per_s"] = rate
            # As a rate the floor is the rows per second the raw batches commit.
            rows.append(
                (
                    "concurrent_steps_per_s",
                    rate,
                    "raw batch",
                    concurrent_runs * 5 / steps_floor,
                    ">=",
                    20_000,
                    "/s",
                )
            )
            parking = await bench_parking(engine, parked_count)
            # The target is for 2,000 runs; --quick parks fewer and scales it.
            scale = parked_count / 2000
            for phase in ("park", "resume"):
                key = f"{phase}_{parked_count}_s"
                figures[key] = parking[f"{phase}_s"]
                rows.append(
                    (key, parking[f"{phase}_s"], "raw batch", park_floor, "<=", 0.3 * scale, "s")
                )
        finally:
            await engine.close()
    small, large = parked_rss(10), parked_rss(1000 if quick else 10_000)
    figures["rss_10_parked_mb"] = small
    figures[f"rss_{1000 if quick else 10_000}_parked_mb"] = large
    print(
        f"cadenza embedded engine benchmark ({'quick' if quick else 'full'}),"
        f" python {sys.version.split()[0]}, {os.cpu_count()} cores,"
        f" load average {os.getloadavg()[0]:.2f}"
    )
    print(f"  {'figure':<24} {'value':>10}  {'floor':>22} {'ratio':>7}  {'target':>12}  met")
    for key, value, floor_name, floor_value, kind, target, unit in rows:
        ratio = value / floor_value if floor_value else float("nan")
        if unit == "/s":
            ratio = floor_value / value if value else float("nan")  # time per step vs floor
        floor_text = f"{floor_name} {floor_value:,.4g}" if floor_value is not None else ""
        if kind == "ratio<=":
            target_text, met = f"ratio <= {target}", ratio <= (target or 0)
        elif kind == "<=":
            target_text, met = f"<= {target:,.4g}", value <= (target or 0)
        elif kind == ">=":
            target_text, met = f">= {target:,.4g}", value >= (target or 0)
        else:
            target_text, met = "", None
        verdict = "" if met is None else ("yes" if met else "NO")
        print(
            f"  {key:<24} {value:>10,.2f}  {floor_text:>22} {ratio:>6.2f}x  {target_text:>12}"
            f"  {verdict}"
        )
    for key in ("chain10_step_cpu_us", "marginal_step_cpu_us"):  # process CPU, not wall
        print(f"  {key:<24} {figures[key]:>10,.2f}")
    print(f"  {'rss_10_parked_mb':<24} {small:>10,.2f}")
    print(f"  {f'rss_{1000 if quick else 10_000}_parked_mb':<24} {large:>10,.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))  # noqa: ASYNC240 - at exit


if __name__ == "__main__":
    asyncio.run(main())
