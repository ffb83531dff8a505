"""``cadenza events …`` and ``cadenza rules …``: the event bus from the shell."""

from __future__ import annotations

import json
import re
from typing import Any

import click
from rich.table import Table

from cadenza.cli import _remote as remote
from cadenza.cli._common import (
    console,
    emit_json,
    fail,
    json_option,
    literal,
    literal_text,
    parse_json,
    report_deleted,
    run_async,
    stdout_reserved_for_json,
    visible,
)
from cadenza.engine.engine import Engine
from cadenza.errors import InvalidInput
from cadenza.events.envelope import Event
from cadenza.events.patterns import compile_pattern
from cadenza.events.relay import relay_outbox, validate_rule
from cadenza.ports.run_store import Rule
from cadenza.workflow import load


@click.group("events")
def events_group() -> None:
    """Publish events and list recent ones."""


_EVENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@-]{0,127}")


def _event_id(value: str | None) -> str | None:
    if value is not None and not _EVENT_ID.fullmatch(value):
        raise InvalidInput(
            f"--id {visible(value)!r} is not an event id: use 1 to 128 letters, digits and"
            " . _ : / @ -, starting with a letter or digit, e.g. --id order-42-placed"
        )
    return value


@events_group.command("put")
@click.option("--detail-type", required=True, help="The event's detail-type.")
@click.option("--source", default="cadenza.cli", show_default=True)
@click.option("--detail", default="{}", help="The event's detail, a JSON object (or @file).")
@click.option(
    "--id",
    "event_id",
    help="The event's id (default: a new one). Publish a retry under the same id: rules"
    " start one run per event id and a waiting run takes the event once.",
)
@click.option("--no-deliver", is_flag=True, help="Leave delivery to a running worker.")
@json_option
def events_put(
    detail_type: str,
    source: str,
    detail: str,
    event_id: str | None,
    no_deliver: bool,
    as_json: bool,
) -> None:
    """Publish one event; matching rules and waiting runs receive it."""
    if remote.active():
        data = parse_json(detail, "--detail", example='{"ticket": 42}')
        if not isinstance(data, dict):
            fail(InvalidInput("--detail must be a JSON object, e.g. --detail '{\"ticket\": 42}'"))
        sent: dict[str, Any] = {"detail_type": detail_type, "detail": data, "source": source}
        if event_id is not None:
            sent["id"] = _event_id(event_id)
        event = remote.api().call("POST", "/events", json=sent)
        if as_json:
            emit_json({k: v for k, v in event.items() if k not in ("delivered", "tenant")})
        else:
            console.print(f"published event {literal(event['id'])} ({literal(detail_type)})")
        return

    @run_async
    async def body(engine: Engine) -> None:
        data = parse_json(detail, "--detail", example='{"ticket": 42}')
        if not isinstance(data, dict):
            raise InvalidInput("--detail must be a JSON object, e.g. --detail '{\"ticket\": 42}'")
        event = Event.new(detail_type, data, source=source, id=_event_id(event_id))
        await engine.publish([event.to_dict()])
        if not no_deliver:
            await relay_outbox(engine)
        if as_json:
            emit_json(event.to_dict())
        else:
            console.print(f"published event {literal(event.id)} ({literal(detail_type)})")

    body()


@events_group.command("list")
@click.option("--limit", default=20, show_default=True)
@json_option
def events_list(limit: int, as_json: bool) -> None:
    """Recent events, newest first."""

    @run_async
    async def body(engine: Engine) -> None:
        entries = await engine.store.list_events(limit=limit)
        if as_json:
            emit_json([{**e.event, "delivered": e.delivered_at is not None} for e in entries])
            return
        table = Table(box=None)
        for column in ("TIME", "DETAIL-TYPE", "SOURCE", "RUN", "DELIVERED", "ID"):
            table.add_column(column)
        for e in entries:
            ev = e.event
            table.add_row(
                e.published_at.strftime("%H:%M:%S"),
                literal_text(ev.get("detail-type", "")),
                literal_text(ev.get("source", "")),
                literal_text(ev.get("run_id", "")),
                "yes" if e.delivered_at else "no",
                literal_text(ev.get("id", "")),
            )
        console.print(table)

    body()


_PATTERN_EXAMPLE = '{"detail-type": ["order"]}'
_EVENT_EXAMPLE = '{"detail-type": "order", "detail": {"total": 150}}'


@click.group("rules")
def rules_group() -> None:
    """Route events to targets with EventBridge patterns."""


@rules_group.command("put")
@click.argument("name")
@click.option("--pattern", required=True, help="EventBridge pattern, JSON (or @file).")
@click.option("--start", "workflow_ref", help="Target: start MODULE:WORKFLOW with the detail.")
@click.option(
    "--complete-callback",
    "token_path",
    help="Target: complete the callback whose token is at this path (detail.token).",
)
@click.option(
    "--input",
    "input_mode",
    type=click.Choice(["detail", "event"]),
    default="detail",
    show_default=True,
    help="What a started workflow receives.",
)
@click.option("--disabled", is_flag=True)
@json_option
def rules_put(
    name: str,
    pattern: str,
    workflow_ref: str | None,
    token_path: str | None,
    input_mode: str,
    disabled: bool,
    as_json: bool,
) -> None:
    """Create or replace a rule."""

    @run_async
    async def body(engine: Engine) -> None:
        if bool(workflow_ref) == bool(token_path):
            raise InvalidInput(
                "give exactly one target: --start MODULE:WORKFLOW or"
                " --complete-callback detail.token"
            )
        if workflow_ref:
            with stdout_reserved_for_json(as_json):  # a module may print as it is imported
                definition = load(workflow_ref)
            target = "start_workflow"
            params = {
                "workflow": definition.name,
                "version": definition.version,
                "module": workflow_ref,
                "input": input_mode,
            }
        else:
            target, params = "complete_callback", {"token_path": str(token_path)}
        rule = Rule(
            name=name,
            pattern=parse_json(pattern, "--pattern", example=_PATTERN_EXAMPLE),
            target=target,
            params=params,
            enabled=not disabled,
            created_at=engine.clock.now(),
        )
        validate_rule(rule)
        await engine.store.put_rule(rule)
        if as_json:
            emit_json(
                {
                    "name": name,
                    "pattern": rule.pattern,
                    "target": target,
                    "params": params,
                    "enabled": rule.enabled,
                }
            )
        else:
            console.print(f"rule {literal(name)} → {target} {literal(json.dumps(params))}")

    body()


@rules_group.command("list")
@json_option
def rules_list(as_json: bool) -> None:
    """All rules."""

    @run_async
    async def body(engine: Engine) -> None:
        rules = await engine.store.list_rules()
        if as_json:
            emit_json(
                [
                    {
                        "name": r.name,
                        "pattern": r.pattern,
                        "target": r.target,
                        "params": r.params,
                        "enabled": r.enabled,
                    }
                    for r in rules
                ]
            )
            return
        if not rules:
            console.print("no rules; add one with: cadenza rules put NAME --pattern … --start …")
        for r in rules:
            state = "" if r.enabled else " (disabled)"
            console.print(
                f"[bold]{literal(r.name)}[/bold]{state}: {literal(json.dumps(r.pattern))}"
                f" → {literal(r.target)} {literal(json.dumps(r.params))}"
            )

    body()


@rules_group.command("delete")
@click.argument("name")
def rules_delete(name: str) -> None:
    """Delete a rule."""

    @run_async
    async def body(engine: Engine) -> int:
        return report_deleted("rule", name, await engine.store.delete_rule(name))

    raise SystemExit(body())


@rules_group.command("test")
@click.option("--pattern", required=True, help="EventBridge pattern, JSON (or @file).")
@click.option("--event", "event_json", required=True, help="An event, JSON (or @file).")
def rules_test(pattern: str, event_json: str) -> None:
    """Check whether an event matches a pattern (exit 0 if it does, 1 if not)."""
    from cadenza.errors import CadenzaError

    try:
        compiled = compile_pattern(parse_json(pattern, "--pattern", example=_PATTERN_EXAMPLE))
        matched = compiled.matches(parse_json(event_json, "--event", example=_EVENT_EXAMPLE))
    except CadenzaError as exc:
        fail(exc)
    console.print("match" if matched else "no match")
    raise SystemExit(0 if matched else 1)
