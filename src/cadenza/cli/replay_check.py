"""``cadenza replay-check MODULE:WORKFLOW``: would the current code still replay the stored
runs of this workflow? Nothing is executed and nothing is written."""

from __future__ import annotations

import sys

import click

from cadenza.cli._common import (
    console,
    emit_json,
    json_option,
    literal,
    run_async,
    stdout_reserved_for_json,
)
from cadenza.engine.engine import Engine
from cadenza.workflow import load


@click.command("replay-check")
@click.argument("ref", metavar="MODULE:WORKFLOW")
@click.option(
    "--limit",
    default=50,
    show_default=True,
    type=click.IntRange(min=1),
    help="Check at most this many of the newest runs.",
)
@json_option
def replay_check_command(ref: str, limit: int, as_json: bool) -> None:
    """Replay the journals of the newest runs of MODULE:WORKFLOW against its current code.

    Runs of every status are checked, newest first; only runs of the version the code
    declares (the runs that will replay it). Replay stops at the first operation a run has
    no outcome for. Exits 1 when a run would fail with NonDeterminismError.
    """

    @run_async
    async def body(engine: Engine) -> int:
        with stdout_reserved_for_json(as_json):  # a module may print as it is imported
            definition = load(ref)
        results = await engine.replay_check(definition, limit=limit)
        broken = [r for r in results if not r.compatible]
        if as_json:
            emit_json(
                {
                    "workflow": definition.name,
                    "version": definition.version,
                    "checked": len(results),
                    "incompatible": len(broken),
                    "runs": [r.as_dict() for r in results],
                }
            )
            return 1 if broken else 0
        name = f"{literal(definition.name)} v{literal(definition.version)}"
        if not results:
            console.print(f"no runs of {name} to check")
            return 0
        for result in broken:
            where = f"op {literal(result.op_id)}: " if result.op_id else ""
            if result.recorded is not None:
                what = (
                    f"the journal recorded {literal(result.recorded)}, the code now asks for"
                    f" {literal(result.asked)}"
                )
            else:
                what = literal(result.message)
            console.print(
                f"[red]✗[/red] {literal(result.run_id)} ({literal(result.status)}) {where}{what}"
            )
        if broken:
            console.print(
                f"{len(broken)} of {len(results)} runs of {name} would fail with"
                " NonDeterminismError under this code: keep the old code for them (guard the"
                " change with ctx.patched, or deploy it as a new workflow version)"
            )
            return 1
        console.print(f"[green]✓[/green] all {len(results)} runs of {name} replay under this code")
        return 0

    sys.exit(body())


def register(cli: click.Group) -> None:
    cli.add_command(replay_check_command)
