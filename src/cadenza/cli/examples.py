"""``cadenza examples list | run NAME``: the reference scenarios that ship with cadenza.

An example's rules exist only while it runs: they are put before its run starts and
deleted when the command ends — succeeded, failed, or interrupted with Ctrl-C (they go
first, before the in-flight work is handed back). Runs that those rules start are driven
too, so a choreography is followed to its end.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

import click

from cadenza.cli._common import (
    EXIT_RUN_FAILED,
    console,
    emit_json,
    err_console,
    json_option,
    parse_json,
    run_async,
)
from cadenza.cli.runs import ProgressPrinter, describe, pending_waits, report
from cadenza.engine.engine import Engine
from cadenza.engine.worker import Worker
from cadenza.errors import InvalidInput, WorkflowDefinitionError, WorkflowNotFound
from cadenza.examples import catalog
from cadenza.ports.run_store import Rule, RunRecord, RunStatus
from cadenza.workflow import load


def register(cli: click.Group) -> None:
    @cli.group("examples")
    def examples_group() -> None:
        """The reference scenarios: list them, run one (from any folder)."""

    @examples_group.command("list")
    @json_option
    def examples_list(as_json: bool) -> None:
        """The runnable examples."""
        if as_json:
            emit_json(
                [
                    {
                        "name": e.name,
                        "description": e.description,
                        "workflow": e.workflow,
                        "input": e.input,
                        "uses_model": e.uses_model,
                        "rules": [r.name for r in e.rules()],
                    }
                    for e in catalog.EXAMPLES
                ]
            )
            return
        for e in catalog.EXAMPLES:
            console.print(f"[bold]{e.name:<18}[/bold] {e.description}")
        console.print("\nrun one with: cadenza examples run NAME [--model PROVIDER:MODEL]")

    @examples_group.command("run")
    @click.argument("name")
    @click.option("--input", "input_json", help="JSON merged over the example's input.")
    @click.option("--model", help="Model for examples that reason (default local:smollm2).")
    @click.option("--linger", default=5.0, show_default=True)
    @click.option("--quiet", is_flag=True)
    @json_option
    def examples_run(
        name: str,
        input_json: str | None,
        model: str | None,
        linger: float,
        quiet: bool,
        as_json: bool,
    ) -> None:
        """Run example NAME until it ends or waits (for an approval, say)."""

        @run_async
        async def body(engine: Engine) -> int:
            example = catalog.find(name)
            if example is None:
                names = ", ".join(e.name for e in catalog.EXAMPLES)
                raise WorkflowNotFound(f"no example named {name!r}; the examples: {names}")
            value = dict(example.input)
            extra = parse_json(input_json, "--input")
            if extra is not None:
                if not isinstance(extra, dict):
                    raise InvalidInput("--input must be a JSON object merged over the example's")
                value.update(extra)
            if model:
                if not example.uses_model:
                    raise InvalidInput(f"example {name!r} uses no model")
                value["model"] = model
            definition = load(example.workflow)
            rules = own_rules(example)
            progress = not quiet and not as_json
            try:
                for rule in rules:
                    await engine.store.put_rule(rule)
                run = await engine.start(definition, value)
                if progress:
                    err_console.print(f"[bold]▶ {name}[/bold]: run {run.run_id}")
                # Shielded: on Ctrl-C the rules are deleted before the worker winds down.
                driving = asyncio.ensure_future(
                    follow(engine, example, run, linger=linger, progress=progress)
                )
                try:
                    run, follow_ons = await asyncio.shield(driving)
                except asyncio.CancelledError:
                    await remove(engine, rules)
                    driving.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await driving
                    raise
            finally:
                await remove(engine, rules)
            return await summarise(engine, run, follow_ons, as_json=as_json)

        raise SystemExit(body())


def own_rules(example: catalog.Example) -> list[Rule]:
    """The example's rules; each must carry its prefix so that it can be told apart."""
    rules = example.rules()
    for rule in rules:
        if not rule.name.startswith(example.rule_prefix):
            raise WorkflowDefinitionError(
                f"example {example.name!r}: rule {rule.name!r} must be named {example.rule_prefix}…"
            )
    return rules


async def remove(engine: Engine, rules: list[Rule]) -> None:
    for rule in rules:
        await engine.store.delete_rule(rule.name)


async def follow(
    engine: Engine, example: catalog.Example, run: RunRecord, *, linger: float, progress: bool
) -> tuple[RunRecord, list[RunRecord]]:
    """Drive ``run`` and the runs its example's rules start until all of them end or wait
    on something not due within ``linger``. Returns the run and those follow-on runs."""
    horizon = timedelta(seconds=linger)

    async def follow_ons() -> list[RunRecord]:
        key = f"rule:{example.rule_prefix}"
        recent = await engine.store.list_runs(limit=500)
        return [
            r
            for r in reversed(recent)
            if (r.idempotency_key or "").startswith(key) and r.created_at >= run.created_at
        ]

    def settled(current: RunRecord) -> bool:
        if current.status.terminal:
            return True
        if current.status != RunStatus.SUSPENDED:
            return False
        return current.wake_at is None or current.wake_at - engine.clock.now() > horizon

    async def done() -> bool:
        latest = await engine.store.get_run(run.run_id)
        return settled(latest) and all(settled(r) for r in await follow_ons())

    printer = ProgressPrinter(run.run_id)
    unsubscribe = (
        [engine.subscribe(printer), engine.subscribe_stream(printer.stream)] if progress else []
    )
    try:
        await Worker(engine, poll_interval=0.25).run(until=done, grace=5.0)
    finally:
        for stop in unsubscribe:
            stop()
    return await engine.store.get_run(run.run_id), await follow_ons()


async def summarise(
    engine: Engine, run: RunRecord, follow_ons: list[RunRecord], *, as_json: bool
) -> int:
    waits = await pending_waits(engine, run)
    for other in follow_ons:
        waits += await pending_waits(engine, other)
    if as_json:
        emit_json(
            {
                **describe(run),
                "waiting_for": waits,
                "follow_ons": [describe(r) for r in follow_ons],
            }
        )
    else:
        report(run, waits)
        for other in follow_ons:
            console.print(
                f"  then [bold]{other.workflow}[/bold] {other.run_id}: {str(other.status).lower()}"
                f" (cadenza runs show {other.run_id})"
            )
    failed = (RunStatus.FAILED, RunStatus.CANCELLED)
    return EXIT_RUN_FAILED if run.status in failed else 0
