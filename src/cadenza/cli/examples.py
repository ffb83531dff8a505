"""``cadenza examples list | run NAME``: the reference scenarios, from the repository root."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

import click

from cadenza.cli._common import console, emit_json, err_console, json_option, parse_json, run_async
from cadenza.cli.runs import advance
from cadenza.engine.engine import Engine
from cadenza.errors import InvalidInput, WorkflowNotFound
from cadenza.workflow import load


def _catalog() -> Any:
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        return importlib.import_module("examples.catalog")
    except ModuleNotFoundError as exc:
        raise WorkflowNotFound(
            "the examples live in the repository's examples/ folder; run this command from"
            " the repository root"
        ) from exc


def register(cli: click.Group) -> None:
    @cli.group("examples")
    def examples_group() -> None:
        """The reference scenarios: list them, run one."""

    @examples_group.command("list")
    @json_option
    def examples_list(as_json: bool) -> None:
        """The runnable examples."""
        try:
            catalog = _catalog()
        except WorkflowNotFound as exc:
            err_console.print(f"[red]error:[/red] {exc}")
            raise SystemExit(exc.exit_code) from None
        if as_json:
            emit_json(
                [
                    {
                        "name": e.name,
                        "description": e.description,
                        "workflow": e.workflow,
                        "input": e.input,
                        "uses_model": e.uses_model,
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
            catalog = _catalog()
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
            for rule in example.rules():
                await engine.store.put_rule(rule)
            run = await engine.start(definition, value)
            if not quiet and not as_json:
                err_console.print(f"[bold]▶ {name}[/bold]: run {run.run_id}")
            return await advance(
                engine, run, as_json=as_json, linger=linger, progress=not quiet and not as_json
            )

        raise SystemExit(body())
