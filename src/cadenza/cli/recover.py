"""``cadenza runs retry RUN`` and ``cadenza runs fork RUN --from OP``: carry on from a run
that failed or was cancelled, or run part of a run again, without paying again for what
its journal recorded."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from cadenza.cli._common import (
    console,
    emit_json,
    err_console,
    json_option,
    literal,
    parse_json,
    run_async,
)
from cadenza.cli.runs import advance, describe
from cadenza.engine.engine import Engine
from cadenza.ports.run_store import RunRecord
from cadenza.workflow import load

F = TypeVar("F", bound=Callable[..., Any])

_workflows = click.option(
    "-w",
    "--workflows",
    "refs",
    multiple=True,
    help="MODULE:WORKFLOW (or MODULE) to import first, e.g. the module holding the new"
    " version; repeat.",
)
_linger = click.option(
    "--linger",
    default=5.0,
    show_default=True,
    help="Keep going through timers due within this many seconds.",
)


def _detach(what: str) -> Callable[[F], F]:
    return click.option("--detach", is_flag=True, help=f"Only {what}; a worker runs it.")


_quiet = click.option("--quiet", is_flag=True, help="No live progress.")


@click.command("retry")
@click.argument("run_id")
@click.option(
    "--version",
    help="Let this registered version of the workflow take the run over (its code replays"
    " the journal).",
)
@_workflows
@_linger
@_detach("put the run back")
@_quiet
@json_option
def retry_command(
    run_id: str,
    version: str | None,
    refs: tuple[str, ...],
    linger: float,
    detach: bool,
    quiet: bool,
    as_json: bool,
) -> None:
    """Re-drive a FAILED or CANCELLED run from the operation that failed.

    Every recorded success is kept (no model or tool call is made again); the failed
    operation runs again with a fresh attempt count. Runs it in this process like
    'cadenza run', unless --detach.
    """

    @run_async
    async def body(engine: Engine) -> int:
        _import(refs)
        run = await engine.retry(run_id, version=version)
        headline = f"retrying run {run.run_id}"
        return await _continue(engine, run, headline, detach, quiet, linger, as_json)

    sys.exit(body())


@click.command("fork")
@click.argument("run_id")
@click.option(
    "--from",
    "from_op",
    required=True,
    help="The operation to run live from (an op id such as 3 or 3.1.2, as listed by"
    " 'cadenza runs history').",
)
@click.option("--input", "input_json", help="New workflow input as JSON (default: the same).")
@click.option("--state", "state_json", help="Agent state document to start from, as a JSON object.")
@click.option("--version", help="Run the fork on this registered version of the workflow.")
@_workflows
@_linger
@_detach("create the fork")
@_quiet
@json_option
def fork_command(
    run_id: str,
    from_op: str,
    input_json: str | None,
    state_json: str | None,
    version: str | None,
    refs: tuple[str, ...],
    linger: float,
    detach: bool,
    quiet: bool,
    as_json: bool,
) -> None:
    """Start a new run that replays RUN up to operation --from and goes on live from there.

    Operations that ended before --from began are replayed from RUN's journal; --from
    itself, what it encloses and what encloses it, and everything after it, run live.
    """

    @run_async
    async def body(engine: Engine) -> int:
        _import(refs)
        options: dict[str, Any] = {}
        if input_json is not None:
            options["input"] = parse_json(input_json, "--input")
        state = parse_json(state_json, "--state")
        run = await engine.fork(run_id, from_op=from_op, state=state, version=version, **options)
        headline = f"run {run_id} forked at op {from_op} as {run.run_id}"
        return await _continue(engine, run, headline, detach, quiet, linger, as_json)

    sys.exit(body())


async def _continue(
    engine: Engine,
    run: RunRecord,
    headline: str,
    detach: bool,
    quiet: bool,
    linger: float,
    as_json: bool,
) -> int:
    headline = literal(headline)
    if detach:
        if as_json:
            emit_json(describe(run))
        else:
            console.print(f"{headline}; it is PENDING and a worker will run it")
        return 0
    if not quiet and not as_json:
        err_console.print(
            f"[bold]▶ {headline}[/bold] ({literal(run.workflow)} v{literal(run.version)})"
        )
    return await advance(
        engine, run, as_json=as_json, linger=linger, progress=not quiet and not as_json
    )


def _import(refs: tuple[str, ...]) -> None:
    for ref in refs:
        if ":" in ref:
            load(ref)
        else:
            importlib.import_module(ref)


def register(cli: click.Group) -> None:
    runs = cli.commands["runs"]
    assert isinstance(runs, click.Group)
    runs.add_command(retry_command)
    runs.add_command(fork_command)
