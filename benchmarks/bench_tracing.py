"""Tracing overhead: a durable step with OpenTelemetry on versus off, in the same process.

    python benchmarks/bench_tracing.py            # 200 steps per run, 15 rounds
    python benchmarks/bench_tracing.py --quick    # smaller, for a smoke check
    python benchmarks/bench_tracing.py --json out.json

Each round runs one workflow of N steps with no instrumentation, then with
``OpenTelemetryInstrumentation`` (SDK tracer provider, batch span processor, an exporter
that counts and drops, so the figure is cadenza's cost and the SDK's, not a network's).
Rounds alternate the order; the overhead is the median of the per-round ratios, on SQLite
(a real commit per step) and on the in-memory store (no I/O: the worst case for the ratio).
Requires the ``otel`` extra.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from cadenza import Context, Instrumentation, drive, workflow
from cadenza.config import open_engine
from cadenza.ports.run_store import RunStatus
from cadenza.telemetry import OpenTelemetryInstrumentation
from cadenza.testing import InMemoryRunStore


class Dropping(SpanExporter):
    def __init__(self) -> None:
        self.count = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.count += len(spans)
        return SpanExportResult.SUCCESS


def payload(i: int) -> dict[str, object]:
    return {"text": "x" * 160, "i": i}


async def apayload(i: int) -> dict[str, object]:
    return payload(i)


@workflow(name="bench-traced-chain")
async def chain(ctx: Context, steps: int) -> int:
    for i in range(steps):
        await ctx.step(apayload, i, name=f"s{i}")
    return steps


async def one_run(store: str, folder: Path, steps: int, instr: list[Instrumentation]) -> float:
    engine = await open_engine(
        store=InMemoryRunStore() if store == "memory" else f"sqlite:///{folder / 'b.db'}",
        home=folder,
        secret=b"bench-secret-0123456789abcdef",
        instrumentation=instr,
    )
    try:
        run = await engine.start(chain, steps)
        started = time.perf_counter()
        done = await drive(engine, run.run_id)
        elapsed = time.perf_counter() - started
        assert done.status == RunStatus.SUCCEEDED, done.error
        return elapsed / steps
    finally:
        await engine.close()


async def measure(store: str, steps: int, rounds: int) -> dict[str, Any]:
    exporter = Dropping()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=100_000))
    traced: list[Instrumentation] = [OpenTelemetryInstrumentation(tracer_provider=provider)]
    off: list[float] = []
    on: list[float] = []
    for i in range(rounds + 1):
        order = [(off, []), (on, traced)] if i % 2 == 0 else [(on, traced), (off, [])]
        for sink, instr in order:
            with tempfile.TemporaryDirectory() as tmp:
                value = await one_run(store, Path(tmp), steps, instr)
            if i > 0:  # the first round warms imports and caches
                sink.append(value)
    provider.shutdown()
    median_off, median_on = statistics.median(off), statistics.median(on)
    # Rounds are paired (off and on back to back), so a slow minute on a shared machine
    # moves both: the median of the per-round ratios is steadier than the ratio of medians.
    paired = statistics.median(b / a for a, b in zip(off, on, strict=True))
    return {
        "store": store,
        "steps": steps,
        "rounds": rounds,
        "off_us_per_step": round(median_off * 1e6, 1),
        "on_us_per_step": round(median_on * 1e6, 1),
        "overhead_pct": round((paired - 1) * 100, 1),
        "added_us_per_step": round((median_on - median_off) * 1e6, 1),
        "spans_exported": exporter.count,
    }


async def measure_all(quick: bool) -> list[dict[str, Any]]:
    steps, rounds = (60, 3) if quick else (200, 15)
    return [await measure(store, steps, rounds) for store in ("sqlite", "memory")]


def main(args: argparse.Namespace) -> None:
    results = asyncio.run(measure_all(args.quick))
    for r in results:
        print(
            f"{r['store']:>7}: off {r['off_us_per_step']:8.1f} µs/step   on"
            f" {r['on_us_per_step']:8.1f} µs/step   overhead {r['overhead_pct']:+5.1f} %"
            f" ({r['added_us_per_step']:+.0f} µs)"
            f"   ({r['steps']} steps, median of {r['rounds']} rounds,"
            f" {r['spans_exported']} spans exported)"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json")
    main(parser.parse_args())
