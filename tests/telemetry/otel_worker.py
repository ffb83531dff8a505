"""A process for the OpenTelemetry export tests; tracing comes from the OTEL_* variables.

python -m tests.telemetry.otel_worker drive --store URL --seconds S  # start, drive, print
python -m tests.telemetry.otel_worker worker --store URL          # a worker until SIGTERM
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from cadenza.config import open_engine
from cadenza.engine.worker import Worker, drive, stop_on_signals
from tests.telemetry.otel_workflows import waiter


async def main(args: argparse.Namespace) -> None:
    engine = await open_engine(store=args.store, home=args.home)
    try:
        print(f"instrumented {bool(engine.instruments)}", file=sys.stderr, flush=True)
        if args.mode == "drive":
            run = await engine.start(waiter, args.seconds)
            run = await drive(engine, run.run_id)
            print(f"{run.run_id} {run.trace_id} {run.status}", flush=True)
            return
        stop = asyncio.Event()
        stop_on_signals(stop)
        worker = Worker(engine, concurrency=4, poll_interval=0.1)
        print(f"ready {engine.owner}", file=sys.stderr, flush=True)
        await worker.run(stop=stop, grace=10.0)
    finally:
        await engine.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=("drive", "worker"))
    parser.add_argument("--store", required=True)
    parser.add_argument("--home", required=True)
    parser.add_argument("--seconds", type=float, default=0.0)
    asyncio.run(main(parser.parse_args()))
