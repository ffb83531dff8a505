"""Tracing overhead: a durable step with OpenTelemetry on versus off, in the same process.

    python benchmarks/bench_tracing.py            # 200 steps per run, 25 pairs of rounds
    python benchmarks/bench_tracing.py --quick    # smaller, for a smoke check
    python benchmarks/bench_tracing.py --pairs 41 --json out.json

"On" is what a deployment gets from the ``OTEL_*`` variables: ``open_engine()`` builds
its instrumentation with ``cadenza.telemetry._setup.from_environment`` (SDK tracer
provider, batch span processor, the OTLP/HTTP protobuf exporter, and the OTLP metrics
reader), pointed at a local OTLP receiver running in a *separate process*. So the
exporter does its real work in this process — encoding spans to protobuf and POSTing
them — while decoding them costs this process nothing. The in-memory exporter would skip
the encoding, which is most of what export costs.

"At 0.1" is the same with ``OTEL_TRACES_SAMPLER=parentbased_traceidratio`` and
``OTEL_TRACES_SAMPLER_ARG=0.1``, what a high-volume deployment sets: a run is one trace,
so about one round in ten is traced whole and the others not at all.

Each round runs one workflow of N steps; rounds go on, at 0.1, off, and round the three
orders, and each traced round is compared with the off round of its triple, so a slow
minute on a shared machine moves both halves of a pair. Two clocks:

- CPU time of the whole process (``time.process_time``: every thread, so the SQLite
  thread and the span processor's export thread count too). An "on" round ends with
  ``force_flush()`` inside its CPU window, so the export of its spans is charged to it and
  not to the next round. CPU time hardly moves when other processes compete for the cores,
  which is why it is the figure to read on a loaded machine;
- wall time of the run (``drive``), without the flush: the latency a caller sees.

Figures are medians of the pairs: µs per step off and on, the µs a traced step adds and
the on/off ratio. At 0.1 the rounds whose trace was not sampled (the receiver got no span)
give what a step of an unsampled trace adds; the expected cost of a step at 0.1 is then
0.9 * that + 0.1 * what a fully traced step adds. On SQLite (a commit per step) and on
the in-memory store (no I/O: the worst case for the ratio). Requires the ``otel`` extra.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from cadenza import Context, Instrumentation, drive, workflow
from cadenza.config import open_engine
from cadenza.ports.run_store import RunStatus
from cadenza.telemetry import _setup
from cadenza.testing import InMemoryRunStore

RATIO = 0.1


def payload(i: int) -> dict[str, object]:
    return {"text": "x" * 160, "i": i}


async def apayload(i: int) -> dict[str, object]:
    return payload(i)


@workflow(name="bench-traced-chain")
async def chain(ctx: Context, steps: int) -> int:
    for i in range(steps):
        await ctx.step(apayload, i, name=f"s{i}")
    return steps


# --- the OTLP receiver (a child process) ----------------------------------------------------


def serve_otlp() -> None:
    """Accept OTLP/HTTP posts, count the spans, answer ``GET /count``; print the port."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    spans = 0

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as a collector does

        def do_POST(self) -> None:
            nonlocal spans
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path == "/v1/traces":
                request = ExportTraceServiceRequest.FromString(body)
                spans += sum(
                    len(scope.spans) for rs in request.resource_spans for scope in rs.scope_spans
                )
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self) -> None:
            body = str(spans).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


def start_receiver() -> tuple[subprocess.Popen[str], str]:
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve-otlp"], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    port = int(child.stdout.readline())
    return child, f"http://127.0.0.1:{port}"


def stop(receiver: subprocess.Popen[str]) -> None:
    receiver.terminate()
    receiver.wait()


def received(url: str) -> int:
    with urllib.request.urlopen(f"{url}/count", timeout=10) as answer:
        return int(answer.read())


# --- rounds ---------------------------------------------------------------------------------


def from_environment(**variables: str) -> Instrumentation:
    """The instrumentation ``open_engine()`` builds from the OTEL_* variables, with
    ``variables`` set while it is built (the SDK reads the sampler when the provider is
    created). It is built once per process: forget the one built before."""
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    _setup._instance = None
    try:
        instrumentation = _setup.from_environment()
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    assert instrumentation is not None
    return instrumentation


def flush(instrumentation: Any) -> None:
    instrumentation.tracer.span_processor.force_flush()


def shutdown() -> None:
    """Export what is left and stop the exporters while the receiver still listens."""
    from opentelemetry import metrics, trace

    for provider in (trace.get_tracer_provider(), metrics.get_meter_provider()):
        getattr(provider, "shutdown", lambda: None)()


async def one_run(
    store: str, folder: Path, steps: int, instrumentation: Instrumentation | None
) -> tuple[float, float]:
    """(wall, CPU) seconds per step of one run, with ``instrumentation`` or none at all."""
    engine = await open_engine(
        store=InMemoryRunStore() if store == "memory" else f"sqlite:///{folder / 'b.db'}",
        home=folder,
        secret=b"bench-secret-0123456789abcdef",
        instrumentation=[] if instrumentation is None else instrumentation,
    )
    try:
        run = await engine.start(chain, steps)
        gc.collect()  # the previous round's garbage is not this round's work
        cpu = time.process_time()
        wall = time.perf_counter()
        done = await drive(engine, run.run_id)
        wall = time.perf_counter() - wall
        if instrumentation is not None:
            flush(instrumentation)  # the export of this round's spans is this round's CPU
        cpu = time.process_time() - cpu
        assert done.status == RunStatus.SUCCEEDED, done.error
        return wall / steps, cpu / steps
    finally:
        await engine.close()


def _summary(off: list[float], on: list[float]) -> dict[str, float]:
    return {
        "off_us": round(statistics.median(off) * 1e6, 1),
        "on_us": round(statistics.median(on) * 1e6, 1),
        "added_us": round(statistics.median(b - a for a, b in zip(off, on, strict=True)) * 1e6, 1),
        "ratio": round(statistics.median(b / a for a, b in zip(off, on, strict=True)), 4),
    }


def _at_ratio(
    off: list[float], tenth: list[float], sampled: list[bool], full: dict[str, float]
) -> dict[str, float]:
    """At 0.1: what a step of an unsampled trace adds (the pairs whose trace was dropped),
    and the expected cost of a step, weighing in the traces kept whole."""
    dropped = [(a, b) for a, b, kept in zip(off, tenth, sampled, strict=True) if not kept]
    summary = _summary([a for a, _ in dropped], [b for _, b in dropped])
    summary["expected_added_us"] = round(
        (1 - RATIO) * summary["added_us"] + RATIO * full["added_us"], 1
    )
    summary["expected_ratio"] = round((1 - RATIO) * summary["ratio"] + RATIO * full["ratio"], 4)
    return summary


async def measure(
    store: str, steps: int, pairs: int, url: str, modes: dict[str, Instrumentation | None]
) -> dict[str, Any]:
    names = list(modes)
    rounds: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    sampled: list[bool] = []
    received_before = received(url)
    for i in range(pairs + 1):
        for name in names[i % 3 :] + names[: i % 3]:  # on, 0.1, off; 0.1, off, on; …
            before = received(url) if name == "tenth" else 0
            with tempfile.TemporaryDirectory() as tmp:
                value = await one_run(store, Path(tmp), steps, modes[name])
            if i > 0:  # the first triple warms imports and caches
                rounds[name].append(value)
                if name == "tenth":
                    sampled.append(received(url) > before)
    on, tenth, off = rounds["on"], rounds["tenth"], rounds["off"]
    cpu = _summary([c for _, c in off], [c for _, c in on])
    wall = _summary([w for w, _ in off], [w for w, _ in on])
    return {
        "store": store,
        "steps": steps,
        "pairs": pairs,
        "cpu": cpu,
        "wall": wall,
        "tenth_cpu": _at_ratio([c for _, c in off], [c for _, c in tenth], sampled, cpu),
        "tenth_wall": _at_ratio([w for w, _ in off], [w for w, _ in tenth], sampled, wall),
        "tenth_sampled": sum(sampled),
        "spans_received": received(url) - received_before,
    }


async def measure_all(steps: int, pairs: int, url: str) -> list[dict[str, Any]]:
    modes = {
        "on": from_environment(),
        "tenth": from_environment(
            OTEL_TRACES_SAMPLER="parentbased_traceidratio", OTEL_TRACES_SAMPLER_ARG=str(RATIO)
        ),
        "off": None,
    }
    return [await measure(store, steps, pairs, url, modes) for store in ("sqlite", "memory")]


def main(args: argparse.Namespace) -> None:
    steps, pairs = (60, 5) if args.quick else (args.steps, args.pairs)
    receiver, url = start_receiver()
    # Stopped at exit, after the providers (their exit handlers run first, in reverse order
    # of registration), so that the last exports of the provider that is not the global one
    # still find it.
    atexit.register(stop, receiver)
    # What a deployment sets; the other OTEL_* variables keep their defaults.
    os.environ.update(
        OTEL_EXPORTER_OTLP_ENDPOINT=url,
        OTEL_SERVICE_NAME="bench-tracing",
        OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
    )
    load = os.getloadavg()[0]
    results = asyncio.run(measure_all(steps, pairs, url))
    load = max(load, os.getloadavg()[0])
    shutdown()
    print(f"{os.cpu_count()} cores, load average up to {load:.2f}")
    for r in results:
        for clock in ("cpu", "wall"):
            f = r[clock]
            print(
                f"{r['store']:>7} {clock:>4}: off {f['off_us']:7.1f} µs/step"
                f"   on {f['on_us']:7.1f} µs/step   added {f['added_us']:+6.1f} µs"
                f"   on/off {f['ratio']:.3f} ({(f['ratio'] - 1) * 100:+.1f} %)"
            )
            t = r[f"tenth_{clock}"]
            print(
                f"{'':>7} {'':>4}  at {RATIO}: unsampled trace: added {t['added_us']:+6.1f} µs"
                f" ({(t['ratio'] - 1) * 100:+.1f} %);"
                f" expected per step: added {t['expected_added_us']:+6.1f} µs"
                f" ({(t['expected_ratio'] - 1) * 100:+.1f} %)"
            )
        print(
            f"{'':>7}       ({r['steps']} steps per run, medians of {r['pairs']} pairs,"
            f" {r['tenth_sampled']} of the {r['pairs']} runs at {RATIO} sampled,"
            f" {r['spans_received']} spans received)"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"load": load, "results": results}, indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--pairs", type=int, default=25)
    parser.add_argument("--json")
    parser.add_argument("--serve-otlp", action="store_true", help=argparse.SUPPRESS)
    parsed = parser.parse_args()
    if parsed.serve_otlp:
        serve_otlp()
    else:
        main(parsed)
