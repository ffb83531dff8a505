"""``cadenza run`` and ``cadenza runs …``: start runs, watch them, read what they did."""

from __future__ import annotations

import json
import sys
from datetime import timedelta
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from cadenza.cli._common import (
    EXIT_RUN_FAILED,
    ago,
    console,
    emit_json,
    err_console,
    json_option,
    parse_json,
    run_async,
)
from cadenza.clock import parse_iso
from cadenza.engine.engine import Engine
from cadenza.engine.worker import drive
from cadenza.history import HistoryEvent
from cadenza.history import HistoryEventType as H
from cadenza.journal import OpType
from cadenza.ports.run_store import (
    CallbackKind,
    CallbackStatus,
    Checkpoint,
    RunRecord,
    RunStatus,
)
from cadenza.workflow import load


async def pending_waits(engine: Engine, run: RunRecord) -> list[dict[str, Any]]:
    """What a run (and its open child runs) waits on, with tokens for callbacks."""
    waits: list[dict[str, Any]] = []
    runs = [run]
    while runs:
        current = runs.pop(0)
        if current.status.terminal:
            continue
        journal = {op.op_id: op for op in await engine.store.load_journal(current.run_id)}
        for cb in await engine.store.load_callbacks(current.run_id):
            if cb.status != CallbackStatus.PENDING or cb.kind == CallbackKind.INVOKE:
                continue
            op = journal.get(cb.op_id)
            wait: dict[str, Any] = {
                "run_id": current.run_id,
                "op_id": cb.op_id,
                "name": op.name if op else cb.op_id,
                "kind": str(cb.kind),
                "expires_at": cb.deadline(),
            }
            if cb.kind == CallbackKind.CALLBACK and op is not None:
                wait["token"] = engine.tokens.issue(
                    cb.callback_id,
                    current.run_id,
                    cb.op_id,
                    parse_iso(op.data["token_expires_at"]),
                )
            if cb.pattern is not None:
                wait["pattern"] = cb.pattern
            waits.append(wait)
        runs.extend(await engine.store.list_runs(parent_run_id=current.run_id, limit=1000))
    return waits


def describe(run: RunRecord) -> dict[str, Any]:
    data: dict[str, Any] = {
        "run_id": run.run_id,
        "workflow": run.workflow,
        "version": run.version,
        "status": str(run.status),
        "created_at": run.created_at,
        "updated_at": run.updated_at,
    }
    if run.parent_run_id:
        data["parent_run_id"] = run.parent_run_id
    if run.wake_at and run.status == RunStatus.SUSPENDED:
        data["wake_at"] = run.wake_at
    if run.result is not None:
        data["result"] = json.loads(run.result)
    if run.error is not None:
        data["error"] = {"type": run.error.type, "message": run.error.message}
    return data


class ProgressPrinter:
    """Prints each committed operation of the runs this process drives, as it happens,
    and the tokens of streamed model replies as they arrive."""

    def __init__(self, root: str) -> None:
        self.root = root
        self._streaming = False

    def __call__(self, run: RunRecord, checkpoint: Checkpoint) -> None:
        ops = {op.op_id: op for op in checkpoint.ops}
        prefix = "" if run.run_id == self.root else f"[dim]{run.run_id}[/dim] "
        for event in checkpoint.history:
            line = _progress_line(event, ops)
            if line:
                self._end_stream()
                err_console.print(f"  {prefix}{line}")

    def stream(self, run_id: str, op_id: str, text: str) -> None:
        if not self._streaming:
            err_console.print("  [dim]…[/dim] ", end="")
            self._streaming = True
        err_console.print(text, end="", style="dim", markup=False)

    def _end_stream(self) -> None:
        if self._streaming:
            err_console.print()
            self._streaming = False


def _progress_line(event: HistoryEvent, ops: dict[str, Any]) -> str | None:
    op = ops.get(event.op_id or "")
    took = ""
    if op is not None and op.started_at and op.ended_at:
        took = f" [dim]{(op.ended_at - op.started_at).total_seconds() * 1000:.0f} ms[/dim]"
    d = event.details
    label = f"{event.name}"
    match event.type:
        case H.STEP_SUCCEEDED:
            return f"[green]✓[/green] step {label}{took}"
        case H.STEP_FAILED:
            error = d.get("error", {})
            then = (
                "gave up" if d.get("final") else f"retry at {d.get('next_attempt_at', '?')[11:19]}"
            )
            return (
                f"[red]✗[/red] step {label}: {error.get('type')}: {error.get('message')} ({then})"
            )
        case H.WAIT_STARTED:
            return f"[cyan]…[/cyan] wait {label} until {d.get('until', '?')[11:19]}"
        case H.CALLBACK_STARTED:
            return f"[yellow]⏸[/yellow] callback {label} opened"
        case H.CALLBACK_SUCCEEDED | H.EVENT_WAIT_SUCCEEDED | H.INVOKE_SUCCEEDED:
            return f"[green]✓[/green] {event.type} {label}"
        case H.CALLBACK_FAILED | H.CALLBACK_TIMED_OUT | H.INVOKE_FAILED | H.EVENT_WAIT_TIMED_OUT:
            return f"[red]✗[/red] {event.type} {label}"
        case H.INVOKE_STARTED:
            return f"[cyan]→[/cyan] child run {d.get('child_run_id')} ({d.get('workflow')})"
        case H.EVENT_EMITTED:
            return f"[cyan]↗[/cyan] event {label}"
        case H.EVENT_WAIT_STARTED:
            return f"[yellow]⏸[/yellow] waiting for event {label}"
        case H.CONTEXT_SUCCEEDED if d.get("completion_reason"):
            return (
                f"[green]✓[/green] {label}: {d.get('succeeded')} succeeded,"
                f" {d.get('failed')} failed"
            )
        case H.EXECUTION_SUCCEEDED:
            return "[green bold]✓ run succeeded[/green bold]"
        case H.EXECUTION_FAILED:
            return f"[red bold]✗ run failed:[/red bold] {d.get('error', {}).get('message')}"
    return None


async def advance(
    engine: Engine, run: RunRecord, *, as_json: bool, linger: float, progress: bool
) -> int:
    """Drive ``run`` in this process, then report how it ended or what it waits on."""
    printer = ProgressPrinter(run.run_id)
    unsubscribe = (
        [engine.subscribe(printer), engine.subscribe_stream(printer.stream)] if progress else []
    )
    try:
        run = await drive(engine, run.run_id, linger=timedelta(seconds=linger))
    finally:
        for stop in unsubscribe:
            stop()
    waits = await pending_waits(engine, run)
    if as_json:
        emit_json({**describe(run), "waiting_for": waits})
    else:
        report(run, waits)
    return EXIT_RUN_FAILED if run.status in (RunStatus.FAILED, RunStatus.CANCELLED) else 0


def report(run: RunRecord, waits: list[dict[str, Any]]) -> None:
    if run.status == RunStatus.SUCCEEDED:
        console.print(f"run [bold]{run.run_id}[/bold] succeeded:")
        console.print_json(run.result or "null")
    elif run.status in (RunStatus.FAILED, RunStatus.CANCELLED):
        error = run.error
        console.print(
            f"run [bold]{run.run_id}[/bold] {run.status.lower()}:"
            f" {error.type + ': ' + error.message if error else ''}"
        )
        console.print(f"  see [bold]cadenza runs history {run.run_id}[/bold]")
    else:
        console.print(f"run [bold]{run.run_id}[/bold] is {run.status.lower()}", end="")
        if run.wake_at and not waits:
            console.print(f" until {run.wake_at:%H:%M:%S} (a worker resumes it: cadenza worker)")
        else:
            console.print()
        for wait in waits:
            if "token" in wait:
                console.print(
                    f"  waiting for callback [bold]{wait['name']}[/bold]"
                    f" ({wait['run_id']}, op {wait['op_id']})"
                )
                console.print(f"  token: {wait['token']}")
                console.print(
                    f"  continue: cadenza callback succeed {wait['token']}"
                    " --payload '{\"approved\": true}'"
                )
            else:
                pattern = escape(json.dumps(wait.get("pattern")))
                console.print(f"  waiting for an event matching {pattern}")


@click.command("run")
@click.argument("ref")
@click.option("--input", "input_json", help="Workflow input as JSON (or @file.json).")
@click.option("--id", "run_id", help="Run id (default: generated).")
@click.option("--idempotency-key", help="Start at most one run per key.")
@click.option(
    "--linger",
    default=5.0,
    show_default=True,
    help="Keep going through timers due within this many seconds.",
)
@click.option("--detach", is_flag=True, help="Start the run and return; a worker runs it.")
@click.option("--quiet", is_flag=True, help="No live progress.")
@json_option
def run_command(
    ref: str,
    input_json: str | None,
    run_id: str | None,
    idempotency_key: str | None,
    linger: float,
    detach: bool,
    quiet: bool,
    as_json: bool,
) -> None:
    """Start MODULE:WORKFLOW and run it until it ends or waits.

    Prints the result, or the callback token the run waits on.
    """

    @run_async
    async def body(engine: Engine) -> int:
        definition = load(ref)
        value = parse_json(input_json, "--input")
        run = await engine.start(definition, value, run_id=run_id, idempotency_key=idempotency_key)
        if detach:
            if as_json:
                emit_json(describe(run))
            else:
                console.print(f"started run [bold]{run.run_id}[/bold]; a worker will run it")
            return 0
        if not quiet and not as_json:
            err_console.print(
                f"[bold]▶ run {run.run_id}[/bold] {definition.name} v{definition.version}"
            )
        return await advance(
            engine, run, as_json=as_json, linger=linger, progress=not quiet and not as_json
        )

    sys.exit(body())


@click.group("runs")
def runs_group() -> None:
    """List runs and read their status, history and state."""


@runs_group.command("list")
@click.option("--status", type=click.Choice([s.value for s in RunStatus], case_sensitive=False))
@click.option("--workflow")
@click.option("--limit", default=20, show_default=True)
@json_option
def runs_list(status: str | None, workflow: str | None, limit: int, as_json: bool) -> None:
    """Recent runs, newest first."""

    @run_async
    async def body(engine: Engine) -> None:
        runs = await engine.store.list_runs(
            status=RunStatus(status.upper()) if status else None, workflow=workflow, limit=limit
        )
        if as_json:
            emit_json([describe(r) for r in runs])
            return
        if not runs:
            console.print("no runs yet; start one with: cadenza run MODULE:WORKFLOW")
            return
        now = engine.clock.now()
        table = Table(box=None)
        for column in ("RUN", "WORKFLOW", "STATUS", "STARTED", "UPDATED"):
            table.add_column(column)
        for r in runs:
            table.add_row(
                r.run_id,
                f"{r.workflow} v{r.version}",
                str(r.status),
                ago(r.created_at, now),
                ago(r.updated_at, now),
            )
        console.print(table)

    body()


@runs_group.command("show")
@click.argument("run_id")
@json_option
def runs_show(run_id: str, as_json: bool) -> None:
    """Status, result or error, and what the run waits on."""

    @run_async
    async def body(engine: Engine) -> None:
        run = await engine.store.get_run(run_id)
        waits = await pending_waits(engine, run)
        journal = await engine.store.load_journal(run_id)
        counts: dict[str, int] = {}
        for op in journal:
            if op.type == OpType.STEP:
                counts[str(op.status)] = counts.get(str(op.status), 0) + 1
        children = await engine.store.list_runs(parent_run_id=run_id, limit=1000)
        if as_json:
            emit_json(
                {
                    **describe(run),
                    "steps": counts,
                    "waiting_for": waits,
                    "children": [describe(c) for c in children],
                    "agent_status": run.state.get("status"),
                }
            )
            return
        now = engine.clock.now()
        console.print(
            f"[bold]{run.run_id}[/bold]  {run.workflow} v{run.version}  [bold]{run.status}[/bold]"
        )
        console.print(f"  started {ago(run.created_at, now)}, updated {ago(run.updated_at, now)}")
        console.print(
            f"  steps: {', '.join(f'{v} {k.lower()}' for k, v in counts.items()) or 'none'}"
        )
        if run.state.get("status"):
            console.print(f"  agent status: {run.state['status']}")
        usage = run.state.get("metadata", {}).get("usage")
        if usage:
            console.print(
                f"  models: {usage['requests']} calls, {usage['input_tokens']} tokens in,"
                f" {usage['output_tokens']} out, {usage['cached_tokens']} cached,"
                f" ${usage['cost_usd']:.4f}"
            )
        for child in children:
            console.print(f"  child {child.run_id}: {child.workflow} {child.status}")
        report(run, waits) if not run.status.terminal else _print_outcome(run)

    body()


def _print_outcome(run: RunRecord) -> None:
    if run.result is not None:
        console.print("  result:")
        console.print_json(run.result)
    if run.error is not None:
        console.print(f"  error: {run.error.type}: {run.error.message}")


@runs_group.command("history")
@click.argument("run_id")
@json_option
def runs_history(run_id: str, as_json: bool) -> None:
    """Every event of the run, in order (ExecutionStarted, StepStarted, …)."""

    @run_async
    async def body(engine: Engine) -> None:
        await engine.store.get_run(run_id)
        events = await engine.store.history(run_id)
        if as_json:
            emit_json([e.to_dict() for e in events])
            return
        table = Table(box=None)
        for column in ("#", "TIME", "EVENT", "OP", "NAME", "DETAILS"):
            table.add_column(column, overflow="fold")
        for position, e in enumerate(events, start=1):
            details = {k: v for k, v in e.details.items() if k != "traceback"}
            table.add_row(
                str(position),
                e.timestamp.strftime("%H:%M:%S.%f")[:-3],
                str(e.type),
                e.op_id or "",
                e.name or "",
                json.dumps(details, default=str)[:120] if details else "",
            )
        console.print(table)

    body()


@runs_group.command("state")
@click.argument("run_id")
@json_option
def runs_state(run_id: str, as_json: bool) -> None:
    """The run's agent state document (status, goal, plan, context, metadata)."""

    @run_async
    async def body(engine: Engine) -> None:
        run = await engine.store.get_run(run_id)
        if as_json:
            emit_json(run.state)
        else:
            console.print_json(json.dumps(run.state, default=str))

    body()


@click.command("cancel")
@click.argument("run_id")
@json_option
def cancel_command(run_id: str, as_json: bool) -> None:
    """Cancel a run (and its child runs)."""

    @run_async
    async def body(engine: Engine) -> None:
        run = await engine.cancel(run_id)
        if as_json:
            emit_json(describe(run))
        elif run.status == RunStatus.CANCELLED:
            console.print(f"run {run_id} cancelled")
        else:
            console.print(f"run {run_id} will stop at its next checkpoint (a worker holds it)")

    body()
