"""``cadenza runs prune``: delete the ended runs whose retention has passed, with their
history, callbacks, delivered events and artifacts. Workers do the same every hour; this
is for a deployment that runs none, or an operator who wants it now (or a preview)."""

from __future__ import annotations

import sys

import click

from cadenza.cli._common import console, emit_json, fail, json_option, literal, run_async
from cadenza.cli.schedules import _duration
from cadenza.engine.engine import Engine
from cadenza.errors import InvalidInput

_SHOWN = 20  # run ids listed in text output; --json lists them all


@click.command("prune")
@click.option(
    "--older-than",
    "older_than",
    help="Prune runs ended longer ago than this (e.g. 30d, 12h) instead of each workflow's"
    " retention; workflows declared with retention=None are still kept.",
)
@click.option("--workflow", help="Only runs of this workflow.")
@click.option("--dry-run", is_flag=True, help="Count what would be pruned; delete nothing.")
@click.option("--batch", default=100, show_default=True, help="Runs deleted per store transaction.")
@json_option
def prune_command(
    older_than: str | None, workflow: str | None, dry_run: bool, batch: int, as_json: bool
) -> None:
    """Delete ended runs past their retention, with their history and artifacts.

    A run is due once it has been SUCCEEDED, FAILED or CANCELLED for longer than its
    workflow's retention (default 30 days). A child run is kept while its parent is; a
    run retried meanwhile is kept.
    """
    try:
        age = _duration(older_than, "--older-than") if older_than is not None else None
    except InvalidInput as exc:
        fail(exc)

    @run_async
    async def body(engine: Engine) -> int:
        report = await engine.prune(
            older_than=age, workflow=workflow, batch=max(batch, 1), dry_run=dry_run
        )
        if as_json:
            emit_json(report.as_dict())
            return 0
        verb = "would prune" if dry_run else "pruned"
        console.print(
            f"{verb} {report.runs} run{'s' if report.runs != 1 else ''}"
            f" ({report.journal_records} journal records, {report.history_events} history"
            f" events, {report.callbacks} callbacks"
            + ("" if dry_run else f", {report.events} delivered events")
            + f"); {'would free' if dry_run else 'freed'} {report.artifacts} artifacts,"
            f" {_size(report.artifact_bytes)}"
        )
        for run_id in report.run_ids[:_SHOWN]:
            console.print(f"  {literal(run_id)}")
        if report.runs > _SHOWN:
            console.print(f"  … and {report.runs - _SHOWN} more (--json lists them all)")
        if report.kept_for_parent:
            console.print(
                f"kept {report.kept_for_parent} ended runs whose parent run is kept;"
                " they go with or after it"
            )
        return 0

    sys.exit(body())


def _size(count: int) -> str:
    size = float(count)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{count} bytes" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{count} bytes"
