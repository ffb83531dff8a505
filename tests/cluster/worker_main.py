"""A worker process for the cluster tests, as ``cadenza worker`` runs one.

    python -m tests.cluster.worker_main --store URL [--concurrency N] [--queue Q] ...

It prints ``ready`` on stderr once its engine is open, and ``stopped`` after a graceful
shutdown (SIGTERM or SIGINT: in-flight runs finish within ``--grace``, the rest are
handed back).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from datetime import timedelta

import tests.cluster.cluster_workflows  # noqa: F401  (registers the workflows)
from cadenza.config import open_engine
from cadenza.engine.worker import Worker, stop_on_signals


async def main(args: argparse.Namespace) -> None:
    engine = await open_engine(store=args.store, lease=timedelta(seconds=args.lease))
    try:
        stop = asyncio.Event()
        stop_on_signals(stop)
        worker = Worker(
            engine,
            concurrency=args.concurrency,
            queues=args.queue or None,
            poll_interval=args.poll,
        )
        print(f"ready {engine.owner}", file=sys.stderr, flush=True)
        await worker.run(stop=stop, grace=args.grace)
        print("stopped", file=sys.stderr, flush=True)
    finally:
        await engine.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--store", required=True)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--queue", action="append")
    parser.add_argument("--lease", type=float, default=30.0)
    parser.add_argument("--poll", type=float, default=1.0)
    parser.add_argument("--grace", type=float, default=30.0)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    asyncio.run(main(parser.parse_args()))
