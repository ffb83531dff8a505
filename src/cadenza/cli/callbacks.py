"""``cadenza callback succeed | fail | heartbeat TOKEN``: complete what a run waits on."""

from __future__ import annotations

import sys
from typing import Any
from urllib.parse import quote

import click

from cadenza.cli import _remote as remote
from cadenza.cli._common import (
    console,
    emit_json,
    json_option,
    literal,
    parse_json,
    run_async,
)
from cadenza.cli.runs import advance, outcome
from cadenza.engine.engine import Engine
from cadenza.ports.run_store import CallbackRecord


@click.group("callback")
def callback_group() -> None:
    """Succeed, fail or heartbeat a callback by its token."""


_continue = click.option(
    "--continue/--no-continue",
    "continue_",
    default=None,
    help="Run the workflow on in this process afterwards (default: yes with the embedded"
    " SQLite store, no on a cluster, where workers pick it up).",
)


async def _after(
    engine: Engine, callback: CallbackRecord, verb: str, continue_: bool | None, as_json: bool
) -> int:
    if continue_ is None:
        continue_ = engine.store.url.startswith("sqlite")
    what = f"callback {literal(callback.op_id)} of run {literal(callback.run_id)} {verb}"
    if not continue_:
        if as_json:
            emit_json({"run_id": callback.run_id, "op_id": callback.op_id, "callback": verb})
        else:
            console.print(what)
        return 0
    if not as_json:
        console.print(f"{what}; continuing")
    run = await engine.store.get_run(callback.run_id)
    while run.parent_run_id:  # report on the run the user started
        run = await engine.store.get_run(run.parent_run_id)
    return await advance(engine, run, as_json=as_json, linger=5.0, progress=not as_json)


def _remote(
    token: str, verb: str, body: dict[str, Any], continue_: bool | None, as_json: bool
) -> int:
    """Complete a callback through the service; its workers run the workflow on, so by
    default this only reports the completion (``--continue`` follows the run)."""
    api = remote.api()
    done = api.call("POST", f"/callbacks/{quote(token, safe='')}/{verb}", json=body)
    what = f"callback {literal(done['op_id'])} of run {literal(done['run_id'])} {verb}ed"
    if not continue_:
        if as_json:
            emit_json({"run_id": done["run_id"], "op_id": done["op_id"], "callback": f"{verb}ed"})
        else:
            console.print(what)
        return 0
    if not as_json:
        console.print(f"{what}; continuing")
    run_id = done["run_id"]
    while (parent := api.call("GET", f"/runs/{run_id}").get("parent_run_id")) is not None:
        run_id = parent  # report on the run the user started
    detail = remote.settle(api, run_id, linger=5.0)
    run = remote.run_from_json(detail)
    waits = remote.waits_from_json(detail)
    return outcome(run, waits, as_json=as_json)


@callback_group.command("succeed")
@click.argument("token")
@click.option("--payload", help="Result handed to the waiting run, as JSON (or @file.json).")
@_continue
@json_option
def succeed(token: str, payload: str | None, continue_: bool | None, as_json: bool) -> None:
    """Complete a callback successfully; the run continues with PAYLOAD."""
    if remote.active():
        value = parse_json(payload, "--payload", example='{"approved": true}')
        sys.exit(_remote(token, "succeed", {"payload": value}, continue_, as_json))

    @run_async
    async def body(engine: Engine) -> int:
        value = parse_json(payload, "--payload", example='{"approved": true}')
        callback = await engine.succeed_callback(token, value)
        return await _after(engine, callback, "succeeded", continue_, as_json)

    sys.exit(body())


@callback_group.command("fail")
@click.argument("token")
@click.option("--error", default="CallbackFailed", show_default=True, help="Error type.")
@click.option("--message", default="", help="Why it failed.")
@_continue
@json_option
def fail(token: str, error: str, message: str, continue_: bool | None, as_json: bool) -> None:
    """Fail a callback; the waiting run sees a CallbackFailed error."""
    if remote.active():
        outcome = {"error": error, "message": message}
        sys.exit(_remote(token, "fail", outcome, continue_, as_json))

    @run_async
    async def body(engine: Engine) -> int:
        callback = await engine.fail_callback(token, error=error, message=message)
        return await _after(engine, callback, "failed", continue_, as_json)

    sys.exit(body())


@callback_group.command("heartbeat")
@click.argument("token")
@json_option
def heartbeat(token: str, as_json: bool) -> None:
    """Tell a run with a heartbeat timeout that the work behind the callback is alive."""

    @run_async
    async def body(engine: Engine) -> None:
        callback = await engine.heartbeat_callback(token)
        if as_json:
            emit_json({"run_id": callback.run_id, "op_id": callback.op_id, "heartbeat": True})
        else:
            console.print(
                f"heartbeat recorded for callback {literal(callback.op_id)}"
                f" of {literal(callback.run_id)}"
            )

    body()
