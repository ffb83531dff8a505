"""``cadenza models list`` and ``cadenza ask``: see which providers work here, and try one.

The main command mounts these with :func:`register`. Neither needs an engine or a store.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cadenza.cli._common import literal, visible
from cadenza.errors import CadenzaError, InvalidInput
from cadenza.models import (
    Model,
    ModelRequest,
    ModelResponse,
    cost,
    generate_structured,
    infer_model,
    prices,
    providers,
)

__all__ = ["ask_command", "models_group", "register"]

_err = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)


def register(cli: click.Group) -> None:
    """Add ``models`` and ``ask`` to the ``cadenza`` command."""
    cli.add_command(models_group)
    cli.add_command(ask_command)


def _fail(exc: CadenzaError) -> None:
    _err.print(f"[red]error:[/red] {literal(exc, multiline=True)}", markup=True)
    sys.exit(type(exc).exit_code)


def _known_models() -> dict[str, list[str]]:
    known: dict[str, list[str]] = {}
    for name in prices():
        provider_name, _, model = name.partition(":")
        if model != "*":
            known.setdefault(provider_name, []).append(name)
    for provider in providers():
        for example in provider.examples:
            if example not in known.get(provider.name, []) and "/path/" not in example:
                known.setdefault(provider.name, []).insert(0, example)
    return known


@click.group("models")
def models_group() -> None:
    """Model providers and the models cadenza knows prices for."""


@models_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_command(as_json: bool) -> None:
    """Providers, whether their extra is installed here, and known models."""
    known = _known_models()
    rows: list[dict[str, Any]] = [
        {
            "provider": p.name,
            "installed": p.installed,
            "extra": p.extra,
            "env": list(p.env),
            "description": p.description,
            "models": known.get(p.name, []),
        }
        for p in providers()
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table = Table(box=None, pad_edge=False)
    for column in ("provider", "installed", "configure", "models"):
        table.add_column(column)
    for row in rows:
        installed = (
            "[green]yes[/green]"
            if row["installed"]
            else "[yellow]no[/yellow]: pip install " + escape(f"'cadenza[{row['extra']}]'")
        )
        table.add_row(
            f"{row['provider']}:",
            installed,
            ", ".join(row["env"]) or "-",
            "\n".join(row["models"]) or "-",
        )
    # Piped output keeps lines whole instead of cutting them at 80 columns.
    Console(highlight=False, emoji=False, width=None if sys.stdout.isatty() else 200).print(table)


@click.command("ask")
@click.argument("model_name", metavar="MODEL")
@click.argument("prompt")
@click.option(
    "--schema",
    "schema_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="JSON Schema file: the reply must match it (validated, with repairs).",
)
@click.option("--system", help="System prompt.")
@click.option("--max-tokens", type=int, help="Longest reply, in tokens.")
@click.option("--temperature", type=float, help="Sampling temperature.")
@click.option("--json", "as_json", is_flag=True, help="Print the reply, usage and cost as JSON.")
@click.option("--no-stream", is_flag=True, help="Wait for the whole reply instead of streaming.")
def ask_command(
    model_name: str,
    prompt: str,
    schema_file: Path | None,
    system: str | None,
    max_tokens: int | None,
    temperature: float | None,
    as_json: bool,
    no_stream: bool,
) -> None:
    """Send PROMPT to MODEL (provider:model, e.g. local:smollm2) and print the reply.

    The reply streams to the terminal as it is written; usage and cost follow on stderr.
    """
    try:
        schema = _read_schema(schema_file) if schema_file else None
        request = ModelRequest.of(
            prompt, system=system, max_tokens=max_tokens, temperature=temperature
        )
        asyncio.run(_ask(model_name, request, schema, as_json, stream=not no_stream))
    except CadenzaError as exc:
        _fail(exc)


def _read_schema(path: Path) -> dict[str, Any]:
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"cannot read a JSON Schema from {path}: {exc}") from exc
    if not isinstance(schema, dict):
        raise InvalidInput(f"{path} holds no JSON Schema object")
    return schema


async def _ask(
    model_name: str,
    request: ModelRequest,
    schema: dict[str, Any] | None,
    as_json: bool,
    *,
    stream: bool,
) -> None:
    model = infer_model(model_name)
    try:
        value: Any = None
        if schema is not None:
            value, responses = await generate_structured(model, request, schema)
            if not as_json:
                click.echo(_shown(json.dumps(value, indent=2, ensure_ascii=False)))
        else:
            response = await _reply(model, request, live=stream and not as_json)
            if not as_json and not stream:
                click.echo(_shown(response.text))
            responses = [response]
    finally:
        await model.aclose()
    _report(responses, value, schema is not None, as_json)


async def _reply(model: Model, request: ModelRequest, *, live: bool) -> ModelResponse:
    if not live:
        return await model.request(request)
    final: ModelResponse | None = None
    async for chunk in model.stream(request):
        if chunk.delta:
            click.echo(_shown(chunk.delta), nl=False)
            sys.stdout.flush()
        if chunk.response is not None:
            final = chunk.response
    click.echo()
    assert final is not None, "a stream ends with the complete response"
    return final


def _shown(text: str) -> str:
    """A model's words for a person: what a terminal would obey is shown instead (``--json``
    gives the reply exactly as the model wrote it)."""
    return visible(text, multiline=True)


def _report(responses: list[ModelResponse], value: Any, structured: bool, as_json: bool) -> None:
    last = responses[-1]
    usage = sum((r.usage for r in responses), start=type(last.usage)())
    spent = sum(cost(r.model, r.usage) for r in responses)
    if as_json:
        data: dict[str, Any] = {
            "model": last.model,
            "text": last.text,
            "tool_calls": [c.to_dict() for c in last.tool_calls],
            "finish_reason": last.finish_reason,
            "usage": usage.to_dict(),
            "cost_usd": spent,
        }
        if structured:
            data["value"] = value
            data["attempts"] = len(responses)
        click.echo(json.dumps(data, indent=2, ensure_ascii=False))
        return
    for call in last.tool_calls:
        click.echo(_shown(f"tool call: {call.name}({json.dumps(call.arguments)})"))
    attempts = f", {len(responses)} attempts" if len(responses) > 1 else ""
    _err.print(
        f"[dim]{literal(last.model)}: {usage.input_tokens} in + {usage.cached_tokens} cached + "
        f"{usage.output_tokens} out tokens, ${spent:.6f}{attempts}[/dim]",
        markup=True,
    )
