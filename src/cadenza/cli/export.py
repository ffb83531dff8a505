"""``cadenza runs export RUN``: one run in a self-contained file, to replay in a test with
``TestEnvironment.replay_export`` (docs/testing.md, "A production run as a test")."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from cadenza.cli._common import console, literal, run_async
from cadenza.engine.engine import Engine


@click.command("export")
@click.argument("run_id")
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Write the export to this file (default: standard output).",
)
def export_command(run_id: str, output: Path | None) -> None:
    """Write RUN_ID's record, journal, callbacks, history and artifacts as one JSON file.

    Every step's result is in it, model replies and tool results included, so replaying it
    needs no model, no tool and no store. It holds the run's data as stored: treat it like
    the run itself.
    """

    @run_async
    async def body(engine: Engine) -> str:
        return (await engine.export_run(run_id)).to_json()

    text = body()
    if output is None:
        sys.stdout.write(text)
        return
    output.write_text(text, encoding="utf-8")
    console.print(
        f"wrote run {literal(run_id)} to {literal(output)} ({len(text.encode()):,} bytes);"
        " replay it in a test with TestEnvironment.replay_export"
    )
