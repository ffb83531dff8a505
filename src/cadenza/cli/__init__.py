"""The ``cadenza`` command.

Exit codes scripts can rely on: 0 done (the run succeeded, or waits as expected),
1 the run failed or was cancelled, 2 bad usage, configuration or input, 3 not found,
4 a callback token was refused (forged, expired, used), 5 the run is not in a state that
allows the request, 6 the store takes no writes for now (a full disk, a database that is
down; nothing was lost, and a worker resumes the run once it is back), 130 interrupted.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import signal
import sys
from datetime import timedelta
from pathlib import Path

import click

from cadenza.cli._common import console, err_console, literal, run_async
from cadenza.cli.callbacks import callback_group
from cadenza.cli.costs import costs_group
from cadenza.cli.events import events_group, rules_group
from cadenza.cli.export import export_command
from cadenza.cli.prune import prune_command
from cadenza.cli.runs import cancel_command, run_command, runs_group
from cadenza.cli.schedules import schedules_group
from cadenza.cli.trace import trace_command
from cadenza.config import CLI_HOME
from cadenza.engine.engine import Engine
from cadenza.engine.worker import Worker
from cadenza.errors import ConfigurationError, WorkflowNotFound
from cadenza.telemetry._logging import configure_logging
from cadenza.workflow import load, registered

# The libraries behind local models and embeddings draw progress bars on stderr while they
# load, over cadenza's own progress; they read these when first imported, which is later.
for _variable in (
    "TQDM_DISABLE",
    "HF_HUB_DISABLE_PROGRESS_BARS",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS",
):
    os.environ.setdefault(_variable, "1")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="cadenza")
@click.option("-v", "--verbose", count=True, help="More logging (-vv for debug).")
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    envvar="CADENZA_LOG_FORMAT",
    show_default=True,
    help="json: one JSON object per log line, with the run, operation and trace ids.",
)
def cli(verbose: int, log_format: str) -> None:
    """cadenza: durable, event-driven agentic workflows.

    State lives under $CADENZA_HOME (default ./.cadenza); CADENZA_STORE picks another store
    (sqlite:///path.db, postgresql://…).
    """
    configure_logging(max(logging.WARNING - 10 * verbose, logging.DEBUG), fmt=log_format)


@cli.command("worker")
@click.option(
    "-w",
    "--workflows",
    "refs",
    multiple=True,
    help="MODULE:WORKFLOW (or MODULE) to import; repeat. Without any, the worker"
    " imports what each run names.",
)
@click.option("--concurrency", default=100, show_default=True, help="Runs executed at once.")
@click.option("--queue", "queues", multiple=True, help="Only runs of these queues; repeat.")
@click.option("--poll", default=1.0, show_default=True, help="Seconds between store polls.")
@click.option(
    "--grace",
    default=30.0,
    show_default=True,
    help="Seconds in-flight runs get to finish on SIGTERM before they are handed back.",
)
@click.option(
    "--lease",
    type=click.FloatRange(min=0.1),
    default=30.0,
    show_default=True,
    help="Seconds a claimed run stays leased without renewal; runs of a worker that died"
    " are taken over once its leases expire (renewed every third of this).",
)
def worker_command(
    refs: tuple[str, ...],
    concurrency: int,
    queues: tuple[str, ...],
    poll: float,
    grace: float,
    lease: float,
) -> None:
    """Claim runnable runs and execute them until stopped (SIGTERM/Ctrl-C: graceful)."""

    @run_async
    async def body(engine: Engine) -> None:
        workflows = None
        if refs:
            for ref in refs:
                _import_workflows(ref)
            workflows = [d.key for d in registered()]
        engine.lease = timedelta(seconds=lease)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        worker = Worker(
            engine,
            concurrency=concurrency,
            queues=queues or None,
            workflows=workflows,
            poll_interval=poll,
        )
        worker.on_result = lambda r: err_console.print(
            f"{literal(r.run_id)}: {r.status or 'aborted'}"
            f" ({r.executed} ops executed, {r.replayed} replayed)"
        )
        err_console.print(
            f"worker {literal(engine.owner)} on {literal(engine.store.url)}"
            f" (concurrency {concurrency}); Ctrl-C to stop"
        )
        await worker.run(stop=stop, grace=grace)
        err_console.print("worker stopped")

    body()


def _import_workflows(ref: str) -> None:
    """Import what ``-w REF`` names; a reference that imports nothing is a configuration
    mistake of the worker, reported before it starts claiming runs."""
    try:
        if ":" in ref:
            load(ref)
            return
        if str(Path.cwd()) not in sys.path:  # as `cadenza run` does for MODULE:WORKFLOW
            sys.path.insert(0, str(Path.cwd()))
        importlib.import_module(ref)
    except WorkflowNotFound as exc:
        raise ConfigurationError(f"worker -w {ref}: {exc}") from None
    except ModuleNotFoundError as exc:
        raise ConfigurationError(
            f"worker -w {ref}: cannot import module {ref!r} ({exc}); run the worker from the"
            " folder that holds it, install its package, or name a workflow as MODULE:WORKFLOW"
        ) from None


cli.add_command(run_command)
cli.add_command(runs_group)
cli.add_command(costs_group)
runs_group.add_command(export_command)
runs_group.add_command(trace_command)
runs_group.add_command(prune_command)
cli.add_command(cancel_command)
cli.add_command(callback_group)
cli.add_command(events_group)
cli.add_command(rules_group)
cli.add_command(schedules_group)

for _name in ("models", "db", "examples", "doctor", "recover", "replay_check", "serve", "aws"):
    # Command groups of optional parts register themselves when present.
    try:
        _module = importlib.import_module(f"cadenza.cli.{_name}")
    except ModuleNotFoundError as _exc:
        if _exc.name != f"cadenza.cli.{_name}":
            raise
    else:
        _module.register(cli)


def main() -> None:
    # The command keeps its state beside the project; a library call never writes in the
    # cwd. Set here, in the process, so workers and commands it spawns agree on the folder.
    os.environ.setdefault("CADENZA_HOME", CLI_HOME)
    try:
        cli(standalone_mode=True)
    except KeyboardInterrupt:
        console.print("interrupted")
        sys.exit(130)
