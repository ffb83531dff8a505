"""``cadenza run`` and ``cadenza runs …``: start runs, watch them, read what they did."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import click
from pydantic import TypeAdapter
from rich.table import Table

from cadenza._callbacks import describe_schema
from cadenza.cli import _remote as remote
from cadenza.cli._common import (
    EXIT_RUN_FAILED,
    ago,
    console,
    emit_json,
    err_console,
    json_option,
    json_text,
    literal,
    literal_text,
    parse_json,
    run_async,
    stdout_reserved_for_json,
)
from cadenza.cli._progress import LineProgress, LiveProgress, ProgressBoard
from cadenza.engine.engine import Engine
from cadenza.engine.worker import drive
from cadenza.errors import CadenzaError
from cadenza.history import HistoryEvent
from cadenza.journal import OpType
from cadenza.ports.run_store import (
    Checkpoint,
    RunRecord,
    RunStatus,
)
from cadenza.workflow import load


async def pending_waits(engine: Engine, run: RunRecord) -> list[dict[str, Any]]:
    """What a run (and its open child runs) waits on, with tokens for callbacks."""
    return [wait.as_dict() for wait in await engine.pending_callbacks(run)]


async def _listed(engine: Engine, run: RunRecord) -> dict[str, Any]:
    """A run for ``runs list --json``: one whose stored result cannot be read (its artifact
    is gone) is still listed, with the reason, rather than failing the whole list."""
    try:
        return describe(await engine.readable(run))
    except CadenzaError as exc:
        return {**describe(run.evolve(result=None)), "result_unreadable": str(exc)}


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
    if run.origin is not None:
        data["forked_from"] = {"run_id": run.origin.run_id, "op_id": run.origin.op_id}
    if run.wake_at and run.status == RunStatus.SUSPENDED:
        data["wake_at"] = run.wake_at
    if run.result is not None:
        data["result"] = json.loads(run.result)
    if run.error is not None:
        data["error"] = {"type": run.error.type, "message": run.error.message}
    return data


class ProgressPrinter:
    """The plain log of the runs this process drives: each committed operation as it
    happens, and streamed model text labelled with its operation. Subscribe it with
    ``engine.subscribe(printer)`` and ``engine.subscribe_stream(printer.stream)``, or use
    :func:`watch`, which also keeps a live status area on a terminal."""

    def __init__(self, root: str) -> None:
        self._lines = LineProgress(ProgressBoard(root), err_console)

    def __call__(self, run: RunRecord, checkpoint: Checkpoint) -> None:
        self._lines.committed(run, checkpoint)

    def stream(self, run_id: str, op_id: str, text: str) -> None:
        self._lines.stream(run_id, op_id, text)


@contextlib.contextmanager
def watch(engine: Engine, root: str, *, enabled: bool = True) -> Iterator[None]:
    """Show the progress of the runs ``engine`` executes meanwhile, on stderr: a live view
    on a terminal (finished operations scroll by, running ones stay at the bottom with
    their elapsed time), the plain log anywhere else."""
    if not enabled:
        yield
        return
    board = ProgressBoard(root)
    view = (
        LiveProgress(board, err_console)
        if err_console.is_terminal and not err_console.is_dumb_terminal
        else LineProgress(board, err_console)
    )
    with view:
        stops = [
            engine.subscribe(view.committed),
            engine.subscribe_activity(view.activity),
            engine.subscribe_stream(view.stream),
        ]
        try:
            yield
        finally:
            for stop in stops:
                stop()


async def advance(
    engine: Engine, run: RunRecord, *, as_json: bool, linger: float, progress: bool
) -> int:
    """Drive ``run`` in this process, then report how it ended or what it waits on."""
    with stdout_reserved_for_json(as_json), watch(engine, run.run_id, enabled=progress):
        run = await engine.readable(
            await drive(engine, run.run_id, linger=timedelta(seconds=linger))
        )
    waits = await pending_waits(engine, run)
    return outcome(run, waits, as_json=as_json)


def outcome(run: RunRecord, waits: list[dict[str, Any]], *, as_json: bool) -> int:
    """Show how ``run`` ended or what it waits on, as JSON or for a person; return the exit
    status that says whether it failed."""
    if as_json:
        emit_json({**describe(run), "waiting_for": waits})
    else:
        report(run, waits)
    return EXIT_RUN_FAILED if run.status in (RunStatus.FAILED, RunStatus.CANCELLED) else 0


def detached(run: RunRecord, *, as_json: bool) -> int:
    """Say that ``run`` started and a worker will run it; return the exit status."""
    if as_json:
        emit_json(describe(run))
    else:
        console.print(f"started run [bold]{literal(run.run_id)}[/bold]; a worker will run it")
    return 0


def report(run: RunRecord, waits: list[dict[str, Any]]) -> None:
    """How a run ended, or what it waits on, for a person (``run`` made readable)."""
    run_id = literal(run.run_id)
    if run.status == RunStatus.SUCCEEDED:
        console.print(f"run [bold]{run_id}[/bold] succeeded:")
        console.print(json_text(run.result or "null"))
    elif run.status in (RunStatus.FAILED, RunStatus.CANCELLED):
        error = run.error
        console.print(
            f"run [bold]{run_id}[/bold] {run.status.lower()}:"
            f" {literal(error.type + ': ' + error.message, multiline=True) if error else ''}"
        )
        console.print(f"  see [bold]cadenza runs history {run_id}[/bold]")
    else:
        console.print(f"run [bold]{run_id}[/bold] is {run.status.lower()}", end="")
        if run.wake_at and not waits:
            console.print(f" until {run.wake_at:%H:%M:%S} (a worker resumes it: cadenza worker)")
        else:
            console.print()
        for wait in waits:
            if "token" in wait:
                console.print(
                    f"  waiting for callback [bold]{literal(wait['name'])}[/bold]"
                    f" ({literal(wait['run_id'])}, op {literal(wait['op_id'])})"
                )
                console.print(f"  token: {wait['token']}")
                schema = wait.get("payload_schema")
                if schema is not None:
                    console.print(f"  expects: {literal(describe_schema(schema))}")
                console.print(
                    f"  continue: cadenza callback succeed {wait['token']}"
                    f" --payload {literal(_example_payload(schema))}"
                )
            else:
                pattern = literal(json.dumps(wait.get("pattern")))
                console.print(f"  waiting for an event matching {pattern}")


def _example_payload(schema: dict[str, Any] | None) -> str:
    """A --payload that fits the callback's declared shape, quoted for the shell."""
    example: Any = {"approved": True}
    if schema is not None:
        properties = schema.get("properties", {})
        if "decision" in properties:
            example = {"decision": "approve"}
        elif not {"approved"} <= properties.keys():
            return "'<json>'"
    return "'" + json.dumps(example) + "'"


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

    if remote.active():
        sys.exit(_remote_run(ref, input_json, run_id, idempotency_key, linger, detach, as_json))

    @run_async
    async def body(engine: Engine) -> int:
        with stdout_reserved_for_json(as_json):  # a module may print as it is imported
            definition = load(ref)
        value = parse_json(input_json, "--input", example=input_example(definition.input_type))
        run = await engine.start(definition, value, run_id=run_id, idempotency_key=idempotency_key)
        if detach:
            return detached(run, as_json=as_json)
        if not quiet and not as_json:
            err_console.print(
                f"[bold]▶ run {literal(run.run_id)}[/bold] {literal(definition.name)}"
                f" v{literal(definition.version)}"
            )
        return await advance(
            engine, run, as_json=as_json, linger=linger, progress=not quiet and not as_json
        )

    sys.exit(body())


def _remote_run(
    ref: str,
    input_json: str | None,
    run_id: str | None,
    idempotency_key: str | None,
    linger: float,
    detach: bool,
    as_json: bool,
) -> int:
    """``cadenza run`` against a service: start the run there, and follow it until it ends
    or waits (the service's workers execute it)."""
    api = remote.api()
    body: dict[str, Any] = {"workflow": ref, "input": parse_json(input_json, "--input")}
    if run_id is not None:
        body["run_id"] = run_id
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    started = remote.run_from_json(api.call("POST", "/runs", json=body, headers=headers))
    if detach:
        return detached(started, as_json=as_json)
    detail = remote.settle(api, started.run_id, linger=linger)
    run = remote.run_from_json(detail)
    waits = remote.waits_from_json(detail)
    return outcome(run, waits, as_json=as_json)


def input_example(tp: Any) -> str:
    """An input of type ``tp`` as one would type it after ``--input``: a JSON string for a
    ``str``, an object with the model's fields for a model."""
    simple = {str: '"Lisbon"', int: "42", float: "1.5", bool: "true"}
    if tp in simple:
        return simple[tp]
    try:
        schema = TypeAdapter(tp).json_schema() if tp is not None else {}
    except Exception:  # a type pydantic has no schema for: the generic example
        schema = {}
    if schema.get("type") == "array":
        return '["…"]'
    fields = schema.get("properties")
    if not isinstance(fields, dict) or not fields:
        return '{"city": "Lisbon"}'
    samples = {"string": "…", "integer": 1, "number": 1.5, "boolean": True, "array": []}
    required = [f for f in schema.get("required", []) if f in fields] or list(fields)
    example = {f: samples.get(fields[f].get("type"), {}) for f in required[:4]}
    return json.dumps(example, ensure_ascii=False).replace("'", "")


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
    if remote.active():
        params: dict[str, Any] = {"limit": limit, "include_result": as_json}
        if status:
            params["status"] = status.upper()
        if workflow:
            params["workflow"] = workflow
        page = remote.api().call("GET", "/runs", params=params)
        _print_runs([remote.run_from_json(r) for r in page["runs"]], as_json, datetime.now(UTC))
        return

    @run_async
    async def body(engine: Engine) -> None:
        runs = await engine.store.list_runs(
            status=RunStatus(status.upper()) if status else None, workflow=workflow, limit=limit
        )
        if as_json:
            emit_json([await _listed(engine, r) for r in runs])
            return
        _print_runs(runs, as_json, engine.clock.now())

    body()


def _print_runs(runs: list[RunRecord], as_json: bool, now: datetime) -> None:
    """The runs of ``runs list`` (their input and result readable)."""
    if as_json:
        emit_json([describe(r) for r in runs])
        return
    if not runs:
        console.print("no runs yet; start one with: cadenza run MODULE:WORKFLOW")
        return
    table = Table(box=None)
    for column in ("RUN", "WORKFLOW", "STATUS", "STARTED", "UPDATED"):
        table.add_column(column)
    for r in runs:
        table.add_row(
            literal_text(r.run_id),
            literal_text(f"{r.workflow} v{r.version}"),
            str(r.status),
            ago(r.created_at, now),
            ago(r.updated_at, now),
        )
    console.print(table)


@runs_group.command("show")
@click.argument("run_id")
@json_option
def runs_show(run_id: str, as_json: bool) -> None:
    """Status, result or error, and what the run waits on."""
    if remote.active():
        detail = remote.api().call("GET", f"/runs/{quote(run_id, safe='')}")
        _show(
            remote.run_from_json(detail),
            detail["steps"],
            remote.waits_from_json(detail),
            [remote.run_from_json(c) for c in detail["children"]],
            as_json,
            datetime.now(UTC),
        )
        return

    @run_async
    async def body(engine: Engine) -> None:
        run = await engine.readable(await engine.store.get_run(run_id))
        waits = await pending_waits(engine, run)
        journal = await engine.store.load_journal(run_id)
        counts: dict[str, int] = {}
        for op in journal:
            if op.type == OpType.STEP:
                counts[str(op.status)] = counts.get(str(op.status), 0) + 1
        children = [
            await engine.readable(c)
            for c in await engine.store.list_runs(parent_run_id=run_id, limit=1000)
        ]
        _show(run, counts, waits, children, as_json, engine.clock.now())

    body()


def _show(
    run: RunRecord,
    counts: dict[str, int],
    waits: list[dict[str, Any]],
    children: list[RunRecord],
    as_json: bool,
    now: datetime,
) -> None:
    """What ``runs show`` prints of a run (made readable)."""
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
    console.print(
        f"[bold]{literal(run.run_id)}[/bold]  {literal(run.workflow)} v{literal(run.version)}"
        f"  [bold]{run.status}[/bold]"
    )
    console.print(f"  started {ago(run.created_at, now)}, updated {ago(run.updated_at, now)}")
    if run.origin is not None:
        console.print(
            f"  forked from {literal(run.origin.run_id)} at op {literal(run.origin.op_id)}"
        )
    scheduled = run.state.get("metadata", {}).get("schedule")
    if isinstance(scheduled, dict):
        console.print(
            f"  started by schedule {literal(scheduled.get('name'))}"
            f" for tick {literal(scheduled.get('tick'))}"
        )
    console.print(f"  steps: {', '.join(f'{v} {k.lower()}' for k, v in counts.items()) or 'none'}")
    if run.state.get("status"):
        console.print(f"  agent status: {literal(run.state['status'])}")
    usage = run.state.get("metadata", {}).get("usage")
    if usage:
        console.print(
            literal(
                f"  models: {usage['requests']} calls, {usage['input_tokens']} tokens in,"
                f" {usage['output_tokens']} out, {usage['cached_tokens']} cached,"
                f" ${usage['cost_usd']:.4f}"
            )
        )
    for child in children:
        console.print(f"  child {literal(child.run_id)}: {literal(child.workflow)} {child.status}")
    report(run, waits) if not run.status.terminal else _print_outcome(run)


def _print_outcome(run: RunRecord) -> None:
    if run.result is not None:
        console.print("  result:")
        console.print(json_text(run.result))
    if run.error is not None:
        error = literal(f"{run.error.type}: {run.error.message}", multiline=True)
        console.print(f"  error: {error}")


@runs_group.command("history")
@click.argument("run_id")
@json_option
def runs_history(run_id: str, as_json: bool) -> None:
    """Every event of the run, in order (ExecutionStarted, StepStarted, …)."""
    if remote.active():
        entries = remote.api().call("GET", f"/runs/{quote(run_id, safe='')}/history")
        _print_history([remote.history_from_json(e) for e in entries], as_json)
        return

    @run_async
    async def body(engine: Engine) -> None:
        await engine.store.get_run(run_id)
        _print_history(await engine.store.history(run_id), as_json)

    body()


def _print_history(events: list[HistoryEvent], as_json: bool) -> None:
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
            literal_text(e.op_id or ""),
            literal_text(e.name or ""),
            literal_text(_clip(json.dumps(details, default=str)) if details else ""),
        )
    console.print(table)


def _clip(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


@runs_group.command("state")
@click.argument("run_id")
@json_option
def runs_state(run_id: str, as_json: bool) -> None:
    """The run's agent state document (status, goal, plan, context, metadata)."""
    if remote.active():
        state = remote.api().call("GET", f"/runs/{quote(run_id, safe='')}/state")
        emit_json(state) if as_json else console.print(json_text(state))
        return

    @run_async
    async def body(engine: Engine) -> None:
        run = await engine.store.get_run(run_id)
        if as_json:
            emit_json(run.state)
        else:
            console.print(json_text(run.state))

    body()


@click.command("cancel")
@click.argument("run_id")
@json_option
def cancel_command(run_id: str, as_json: bool) -> None:
    """Cancel a run (and its child runs)."""
    if remote.active():
        cancelled = remote.api().call("POST", f"/runs/{quote(run_id, safe='')}/cancel")
        _print_cancelled(remote.run_from_json(cancelled), as_json)
        return

    @run_async
    async def body(engine: Engine) -> None:
        _print_cancelled(await engine.cancel(run_id), as_json)

    body()


def _print_cancelled(run: RunRecord, as_json: bool) -> None:
    if as_json:
        emit_json(describe(run))
    elif run.status == RunStatus.CANCELLED:
        console.print(f"run {literal(run.run_id)} cancelled")
    else:
        console.print(
            f"run {literal(run.run_id)} will stop at its next checkpoint (a worker holds it)"
        )
