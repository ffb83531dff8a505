"""``cadenza schedules …``: durable schedules from the shell. Workers fire them."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import click
from rich.table import Table

from cadenza.cli import _remote as remote
from cadenza.cli._common import (
    ago,
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
)
from cadenza.engine.engine import Engine
from cadenza.errors import ConfigurationError, InvalidInput
from cadenza.ports.run_store import CatchUp, Overlap, Schedule
from cadenza.schedules import expression_for, put_schedule, set_paused
from cadenza.schedules.expressions import zone
from cadenza.workflow import load

_DURATION = re.compile(r"(\d+)\s*(s|m|h|d)")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(text: str, option: str) -> timedelta:
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise InvalidInput(
            f"{option} {text!r} is not a duration; use a number and a unit, e.g. 90s, 15m, 2h or 1d"
        )
    return timedelta(seconds=int(match.group(1)) * _UNIT[match.group(2)])


def _date(text: str | None, option: str, timezone: str) -> datetime | None:
    """An ISO date-time; one without an offset is read in the schedule's time zone."""
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(
            f"{option} {text!r} is not an ISO date and time, e.g. 2026-12-01T09:00"
        ) from None
    return value if value.tzinfo is not None else value.replace(tzinfo=zone(timezone))


def _as_dict(s: Schedule) -> dict[str, Any]:
    return {
        "name": s.name,
        "workflow": s.workflow,
        "version": s.version,
        "module": s.module,
        "expression": s.expression,
        "timezone": s.timezone,
        "input": s.input,
        "window_seconds": s.window.total_seconds(),
        "catch_up": str(s.catch_up),
        "catch_up_limit": s.catch_up_limit,
        "overlap": str(s.overlap),
        "paused": s.paused,
        "start_at": s.start_at,
        "end_at": s.end_at,
        "next_fire_at": s.next_fire_at,
        "due_at": s.due_at,
        "buffered_tick": s.buffered_tick,
        "last_tick_at": s.last_tick_at,
        "last_run_id": s.last_run_id,
        "created_at": s.created_at,
        "updated_at": s.updated_at,
    }


def _local(value: datetime | None, timezone: str) -> str:
    if value is None:
        return "-"
    return value.astimezone(zone(timezone)).strftime("%Y-%m-%d %H:%M:%S %Z")


@click.group("schedules")
def schedules_group() -> None:
    """Start workflows on a schedule: cron, rate or one time, in a time zone."""
    if remote.active():
        fail(
            ConfigurationError(
                "schedules are managed on the store, and the service has no schedule API:"
                " unset CADENZA_URL and point CADENZA_STORE at the service's store"
            )
        )


@schedules_group.command("put")
@click.argument("name")
@click.option("--start", "workflow_ref", required=True, help="MODULE:WORKFLOW to start.")
@click.option("--cron", help="Cron line, five fields: '0 9 * * MON-FRI' (or cron(...)).")
@click.option("--every", help="Interval in whole minutes: 15m, 2h, 1d.")
@click.option("--at", "at_text", help="One time, local to --timezone: 2026-12-01T09:00.")
@click.option("--expression", help="cron(...), rate(...) or at(...), as in EventBridge.")
@click.option("--input", "input_json", help="The workflow's input, JSON (or @file).")
@click.option("--timezone", default="UTC", show_default=True, help="IANA time zone.")
@click.option("--window", default="0s", show_default=True, help="Flexible window: 10m.")
@click.option(
    "--catch-up",
    type=click.Choice([c.value for c in CatchUp]),
    default=CatchUp.LATEST.value,
    show_default=True,
    help="Ticks missed while no worker ran: fire the latest, all (up to the limit), none.",
)
@click.option("--catch-up-limit", default=10, show_default=True, help="Most ticks caught up.")
@click.option(
    "--overlap",
    type=click.Choice([o.value for o in Overlap]),
    default=Overlap.SKIP.value,
    show_default=True,
    help="A tick while the previous run is open: skip it, allow it, or buffer one.",
)
@click.option("--pin-version", is_flag=True, help="Always start this version of the workflow.")
@click.option("--paused", is_flag=True, help="Create it paused.")
@click.option("--start-date", help="No tick before this ISO date-time.")
@click.option("--end-date", help="No tick after this ISO date-time.")
@json_option
def schedules_put(
    name: str,
    workflow_ref: str,
    cron: str | None,
    every: str | None,
    at_text: str | None,
    expression: str | None,
    input_json: str | None,
    timezone: str,
    window: str,
    catch_up: str,
    catch_up_limit: int,
    overlap: str,
    pin_version: bool,
    paused: bool,
    start_date: str | None,
    end_date: str | None,
    as_json: bool,
) -> None:
    """Create or replace a schedule."""

    @run_async
    async def body(engine: Engine) -> None:
        if sum(v is not None for v in (cron, every, at_text, expression)) != 1:
            raise InvalidInput(
                "give exactly one of --cron '0 9 * * MON-FRI', --every 15m,"
                " --at 2026-12-01T09:00 or --expression 'rate(15 minutes)'"
            )
        with stdout_reserved_for_json(as_json):  # a module may print as it is imported
            definition = load(workflow_ref)
        at = _date(at_text, "--at", timezone)
        schedule = await put_schedule(
            engine,
            name,
            definition,
            expression_for(
                cron=cron,
                every=_duration(every, "--every") if every is not None else None,
                at=at,
                expression=expression,
                timezone=timezone,
            ),
            input=parse_json(input_json, "--input"),
            pin_version=pin_version,
            timezone=timezone,
            window=_duration(window, "--window"),
            catch_up=CatchUp(catch_up),
            catch_up_limit=catch_up_limit,
            overlap=Overlap(overlap),
            paused=paused,
            start_at=_date(start_date, "--start-date", timezone),
            end_at=_date(end_date, "--end-date", timezone),
        )
        if as_json:
            emit_json(_as_dict(schedule))
            return
        console.print(
            f"schedule {literal(name)}: {literal(schedule.expression)} ({literal(timezone)})"
            f" → {literal(schedule.workflow)}; next fire"
            f" {_local(schedule.next_fire_at, schedule.timezone)}"
        )

    body()


@schedules_group.command("list")
@json_option
def schedules_list(as_json: bool) -> None:
    """All schedules, with their next fire time."""

    @run_async
    async def body(engine: Engine) -> None:
        found = await engine.store.list_schedules()
        if as_json:
            emit_json([_as_dict(s) for s in found])
            return
        if not found:
            console.print(
                "no schedules; add one with: cadenza schedules put NAME --start MODULE:WORKFLOW"
                " --cron '0 9 * * *'"
            )
            return
        now = datetime.now(UTC)
        table = Table(box=None)
        for column in ("NAME", "EXPRESSION", "TIME ZONE", "WORKFLOW", "NEXT FIRE", "LAST RUN"):
            table.add_column(column)
        for s in found:
            if s.paused:
                upcoming = "paused"
            elif s.next_fire_at is None:
                upcoming = "done"
            else:
                upcoming = f"{_local(s.next_fire_at, s.timezone)} ({ago(s.next_fire_at, now)})"
            table.add_row(
                literal_text(s.name),
                literal_text(s.expression),
                literal_text(s.timezone),
                literal_text(s.workflow),
                upcoming,
                literal_text(s.last_run_id or "-"),
            )
        console.print(table)

    body()


@schedules_group.command("show")
@click.argument("name")
@json_option
def schedules_show(name: str, as_json: bool) -> None:
    """One schedule: its definition and progress."""

    @run_async
    async def body(engine: Engine) -> None:
        s = await engine.store.get_schedule(name)
        if as_json:
            emit_json(_as_dict(s))
            return
        rows = [
            ("workflow", f"{s.workflow}" + (f" v{s.version}" if s.version else " (latest)")),
            ("expression", s.expression),
            ("time zone", s.timezone),
            ("input", s.input),
            ("window", str(s.window)),
            ("catch-up", f"{s.catch_up} (limit {s.catch_up_limit})"),
            ("overlap", str(s.overlap)),
            ("state", "paused" if s.paused else "active"),
            ("start date", _local(s.start_at, s.timezone)),
            ("end date", _local(s.end_at, s.timezone)),
            ("next tick", _local(s.next_fire_at, s.timezone)),
            ("fires at", _local(s.due_at, s.timezone)),
            ("buffered tick", _local(s.buffered_tick, s.timezone)),
            ("last tick", _local(s.last_tick_at, s.timezone)),
            ("last run", s.last_run_id or "-"),
        ]
        console.print(f"[bold]{literal(s.name)}[/bold]")
        for label, value in rows:
            console.print(f"  {label:<14} {literal(value)}")

    body()


def _pause_command(paused: bool) -> Any:
    @click.argument("name")
    @json_option
    def command(name: str, as_json: bool) -> None:
        @run_async
        async def body(engine: Engine) -> None:
            s = await set_paused(engine, name, paused=paused)
            if as_json:
                emit_json(_as_dict(s))
            else:
                console.print(f"schedule {literal(name)} {'paused' if paused else 'resumed'}")

        body()

    return command


schedules_group.command("pause", help="Stop firing a schedule until it is resumed.")(
    _pause_command(True)
)
schedules_group.command(
    "resume", help="Fire a paused schedule again, from its next tick (missed ones dropped)."
)(_pause_command(False))


@schedules_group.command("delete")
@click.argument("name")
@json_option
def schedules_delete(name: str, as_json: bool) -> None:
    """Delete a schedule; the runs it started stay."""

    @run_async
    async def body(engine: Engine) -> int:
        deleted = await engine.store.delete_schedule(name)
        hint = "; list them with 'cadenza schedules list'"
        return report_deleted("schedule", name, deleted, hint=hint, as_json=as_json)

    raise SystemExit(body())
