"""``cadenza runs trace``: the runs of one trace (invoked children, rule-started runs) and
their operations as one waterfall, with retries, waits, tokens and cost."""

from __future__ import annotations

import io
import json
from datetime import timedelta
from pathlib import Path

from rich.console import Console

from cadenza import Context, RetryPolicy, StepContext, workflow
from cadenza.cli.trace import _as_json, _waterfall
from cadenza.models import ModelRequest
from cadenza.models._pricing import register_price
from cadenza.ports.run_store import RunStatus
from cadenza.telemetry import load_trace
from cadenza.testing import FakeClock, ScriptedModel, TestEnvironment
from tests._cli import cadenza_in, run_to_end
from tests.engine.scope_workflows import SHIP_ORDERS, root

MODEL = ScriptedModel(default="a short answer", name="scripted:trace-priced")
register_price("scripted:trace-priced", input=3.0, output=15.0)


async def flaky(step: StepContext) -> str:
    if step.attempt < 3:
        raise ConnectionError(f"attempt {step.attempt} failed")
    return "fetched"


async def ask(question: str) -> dict[str, object]:
    return (await MODEL.request(ModelRequest.of(question))).to_dict()


@workflow(name="trace-flow")
async def flow(ctx: Context) -> str:
    policy = RetryPolicy(max_attempts=3, initial_interval=timedelta(seconds=1), jitter=0)
    fetched = await ctx.step(flaky, retry=policy, name="fetch")
    await ctx.wait(timedelta(minutes=5), name="cool-down")
    reply = await ctx.step(ask, "Summarise", name="model:summarise")
    return f"{fetched}: {reply['text']}"


async def test_one_run_shows_retries_waits_and_model_cost() -> None:
    async with TestEnvironment(clock=FakeClock()) as env:
        run = await env.run(flow)
        while run.status != RunStatus.SUCCEEDED:
            await env.advance(timedelta(minutes=5))
            run = await env.resume(run)
        tree = await load_trace(env.engine, run.run_id)
        now = env.engine.clock.now()

    [node] = tree.roots
    assert node.span.activations >= 3  # two backoffs and a wait
    ops = {op.name: op for op in node.span.ops}
    assert ops["fetch"].attempts == 3 and ops["fetch"].retries == 2
    assert ops["fetch"].status == "succeeded"
    assert ops["cool-down"].kind == "wait"
    assert ops["cool-down"].duration(now) == timedelta(minutes=5)
    call = ops["model:summarise"].model
    assert call is not None and call.input_tokens == 1 and call.output_tokens == 3
    assert call.cost_usd == (1 * 3.0 + 3 * 15.0) / 1_000_000
    assert tree.cost_usd == call.cost_usd

    out = io.StringIO()
    Console(file=out, width=160, color_system=None).print(_waterfall(tree, now))
    text = out.getvalue()
    assert "trace-flow" in text and "fetch step 1" in text and "↻2" in text
    assert "cool-down wait 2" in text and "5 min" in text and "4 activations" in text
    assert "1→3 tok" in text and "$0.000048" in text
    assert _as_json(tree, now)["runs"][0]["operations"][0]["retries"] == 2


async def test_invoked_and_rule_started_runs_hang_under_their_cause(
    env: TestEnvironment,
) -> None:
    await env.engine.store.put_rule(SHIP_ORDERS)
    run = await env.run(root, 21)
    assert run.status == RunStatus.SUCCEEDED
    tree = await load_trace(env.engine, run.run_id)

    [top] = tree.roots
    assert top.span.run.run_id == run.run_id
    by_workflow = {child.span.run.workflow: child for child in top.children}
    assert set(by_workflow) == {"t-scope-child", "t-scope-shipper"}
    assert by_workflow["t-scope-child"].started_by == "invoked"
    assert by_workflow["t-scope-child"].parent_op == "1"
    assert by_workflow["t-scope-shipper"].started_by == "rule ship-orders"
    # Asked from a child, the trace is the same tree.
    again = await load_trace(env.engine, by_workflow["t-scope-shipper"].span.run.run_id)
    assert [n.span.run.run_id for n in again.nodes()] == [n.span.run.run_id for n in tree.nodes()]


def test_the_command_prints_the_waterfall_and_json(tmp_path: Path) -> None:
    cadenza = cadenza_in(tmp_path / "home")
    run_id = run_to_end(cadenza, "tests.cli.cli_workflows:greet", '{"name": "Ada", "plan": "pro"}')
    shown = cadenza("runs", "trace", run_id)
    assert shown.returncode == 0, shown.stderr
    assert "cli-welcome" in shown.stdout and "welcome step 1" in shown.stdout
    assert "1 run(s), 1 operation(s), 0 retries" in shown.stdout
    data = json.loads(cadenza("runs", "trace", run_id, "--json").stdout)
    assert data["runs"][0]["run_id"] == run_id
    assert data["runs"][0]["operations"][0]["status"] == "succeeded"
    missing = cadenza("runs", "trace", "r-nope")
    assert missing.returncode != 0 and "r-nope" in missing.stderr
