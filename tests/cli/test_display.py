"""What the ``cadenza`` command shows a person: untrusted text (step names, errors, results,
event details, streamed model text) literally, never as markup or terminal control; only
JSON on stdout with ``--json``; a batch with failed items that does not look like success.

Each test runs the real command as a subprocess (see ``test_cli.Cli``).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from cadenza import Context, RunStatus, workflow
from cadenza.testing import TestEnvironment
from cadenza.workflow import WorkflowDefinition
from tests.cli.display_workflows import HOSTILE, SPOKEN
from tests.cli.test_cli import TOKEN, Cli, Result

WORKFLOWS = "tests.cli.display_workflows"
# What a person must see of HOSTILE: its markup as typed, its control characters as escapes
# (word by word: tables fold long cells between words).
SHOWN = [
    "[/bold]",
    "[green]OK[/green]",
    "[link=http://x]y[/link]",
    "\\x1b[2J\\x1b[32mRUN",
    "SUCCEEDED\\x1b[0m\\rover\\x07\\u202eevil",
    ":warning:",  # an emoji code stays text
]


def assert_literal(result: Result, *, where: str = "both") -> None:
    """No traceback, no byte a terminal would act on, and the hostile text as written."""
    for stream in (result.out, result.err):
        assert "Traceback" not in stream and "MarkupError" not in stream, stream
        for control in ("\x1b", "\r", "\x07", "\u202e", "\x9b"):
            assert control not in stream, f"{control!r} reached the terminal:\n{stream}"
    shown = {"out": result.out, "err": result.err, "both": result.out + result.err}[where]
    # JSON shown to a person writes the same escapes its own way.
    shown = shown.replace("\\u001b", "\\x1b").replace("\\u0007", "\\x07")
    for piece in SHOWN:
        assert piece in shown, f"{piece!r} not in:\n{shown}"


def test_a_failed_run_shows_its_hostile_error_literally_everywhere(cli: Cli) -> None:
    ran = cli("run", f"{WORKFLOWS}:fails", code=1)
    assert_literal(ran, where="out")
    assert_literal(ran, where="err")  # the live log: the step name and each failed attempt
    assert "failed: RuntimeError: [/bold]" in ran.out
    (run,) = cli("runs", "list", "--json").json()

    shown = cli("runs", "show", run["run_id"])
    assert_literal(shown, where="out")
    assert "FAILED" in shown.out and "error: RuntimeError: " in shown.out
    assert_literal(cli("runs", "history", run["run_id"]), where="out")
    assert run["run_id"] in cli("runs", "list").out

    # --json is untouched: the exact text, for programs.
    assert cli("runs", "show", run["run_id"], "--json").json()["error"]["message"] == HOSTILE


def test_a_succeeded_run_shows_result_stream_and_events_literally(cli: Cli) -> None:
    ran = cli("run", f"{WORKFLOWS}:succeeds")
    assert_literal(ran, where="out")  # the result
    assert_literal(ran, where="err")  # the step name, the emitted event
    # The streamed reply, word by word, under its operation's name.
    assert "speaker: said [/bold] \\x1b[2J\\x1b[32mRUN SUCCEEDED [green]OK[/green]" in ran.err
    (run,) = cli("runs", "list", "--json").json()
    assert run["result"] == {"text": HOSTILE, "reply": SPOKEN}

    shown = cli("runs", "show", run["run_id"])
    assert_literal(shown, where="out")
    # The result is still JSON a person can copy: the escapes are JSON escapes.
    body = shown.out[shown.out.index("{") :]
    assert json.loads(body) == {"text": HOSTILE, "reply": SPOKEN}
    assert_literal(cli("runs", "history", run["run_id"]), where="out")
    assert_literal(cli("events", "list"), where="out")


def test_callback_commands_show_hostile_names_and_payloads_literally(cli: Cli) -> None:
    started = cli("run", f"{WORKFLOWS}:waits")
    assert_literal(started, where="out")  # waiting for callback <name>
    token = TOKEN.search(started.out)
    assert token, started.out
    (run,) = cli("runs", "list", "--json").json()
    assert_literal(cli("runs", "show", run["run_id"]), where="out")

    done = cli("callback", "succeed", token.group(1), "--payload", json.dumps(HOSTILE))
    assert_literal(done, where="out")
    assert f"run {run['run_id']} succeeded" in done.out
    assert cli("runs", "show", run["run_id"], "--json").json()["result"] == HOSTILE


def test_json_stdout_carries_only_json_when_workflow_code_prints(cli: Cli) -> None:
    ran = cli("run", f"{WORKFLOWS}:prints", "--input", '"Lisbon"', "--json")
    assert ran.json()["result"] == "Lisbon"  # stdout parses: nothing else is on it
    assert "printed by the workflow" in ran.err
    assert "printed by a step: Lisbon" in ran.err

    detached = cli("run", f"{WORKFLOWS}:prints", "--input", '"Porto"', "--detach", "--json")
    assert detached.json()["status"] == "PENDING"
    # Without --json, what workflow code prints stays where it was printed.
    human = cli("run", f"{WORKFLOWS}:prints", "--input", '"Faro"')
    assert "printed by a step: Faro" in human.out


def test_a_batch_with_failed_items_is_shown_as_failed_with_its_first_error(cli: Cli) -> None:
    ran = cli("run", f"{WORKFLOWS}:half_fails")
    assert "✗ checks: 2 of 5 items failed; first: ValueError: odd item 1" in ran.err
    assert "succeeded" not in ran.err.split("checks:")[1].splitlines()[0]
    history = cli("runs", "history", ran.out.split()[1], "--json").json()
    (batch,) = [e for e in history if e["type"] == "ContextSucceeded" and e.get("name") == "checks"]
    assert batch["details"]["first_error"] == {"type": "ValueError", "message": "odd item 1"}


def test_a_map_function_of_the_wrong_shape_fails_at_the_call(cli: Cli) -> None:
    ran = cli("run", f"{WORKFLOWS}:wrong_branch", "--json", code=1)
    error = ran.json()["error"]
    assert error["type"] == "WorkflowDefinitionError"
    assert (
        "ctx.map 'checks' is called as fn(ctx, item), but no_item(ctx) cannot be"
        in (error["message"])
    )
    assert "define it as async def no_item(ctx, item)" in error["message"]
    history = cli("runs", "history", ran.json()["run_id"], "--json").json()
    assert not [e for e in history if e["type"].startswith("Context")]  # no item ever ran


# --- batch functions are checked at the call ---------------------------------------------


async def _item(ctx: Context, item: int) -> int:
    return item


async def _three(ctx: Context, item: int, *, extra: int) -> int:
    return item + extra


async def _index_too(ctx: Context, item: int, index: int = 0) -> int:
    return item + index


async def _anything(*args: Any) -> int:
    return len(args)


SHAPES: dict[str, Any] = {
    "none": lambda ctx: None,
    "three": _three,
    "text": "not a function",
}


@workflow(name="cli-map-shape")
async def map_shape(ctx: Context, shape: str) -> int:
    fn = SHAPES.get(shape) or {"ok": _item, "default": _index_too, "star": _anything}[shape]
    return (await ctx.map([1, 2], fn, name="items")).success_count


@workflow(name="cli-parallel-shape")
async def parallel_shape(ctx: Context, shape: str) -> int:
    branch = {"item": _item, "text": 42, "ok": lambda ctx: _item(ctx, 1)}[shape]
    return (await ctx.parallel([lambda ctx: _item(ctx, 0), branch], name="pair")).success_count


@pytest.mark.parametrize(
    ("flow", "shape", "message"),
    [
        (map_shape, "none", "ctx.map 'items' is called as fn(ctx, item), but lambda(ctx) cannot"),
        (map_shape, "three", "_three(ctx, item, extra) cannot be (missing a required argument"),
        (map_shape, "text", "must be an async function called as fn(ctx, item); got str"),
        (parallel_shape, "item", "branch 1 of ctx.parallel 'pair' is called as fn(ctx), but"),
        (parallel_shape, "text", "branch 1 of ctx.parallel 'pair' must be an async function"),
    ],
)
async def test_batch_functions_of_the_wrong_shape_fail_the_call_not_every_item(
    env: TestEnvironment, flow: WorkflowDefinition, shape: str, message: str
) -> None:
    run = await env.run(flow, shape)
    assert run.status == RunStatus.FAILED
    assert run.error is not None and run.error.type == "WorkflowDefinitionError"
    assert message in run.error.message
    journal = await env.engine.store.load_journal(run.run_id)
    assert journal == []  # refused before the batch began: no item ever ran


@pytest.mark.parametrize(
    ("flow", "shape", "done"),
    [
        (map_shape, "ok", 2),
        (map_shape, "default", 2),
        (map_shape, "star", 2),
        (parallel_shape, "ok", 2),
    ],
)
async def test_batch_functions_of_a_fitting_shape_run(
    env: TestEnvironment, flow: WorkflowDefinition, shape: str, done: int
) -> None:
    assert await env.result(await env.run(flow, shape)) == done
