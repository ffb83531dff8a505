"""A run exported to a file replays in a test against the current code: no model, no tool,
no store of the original; a changed step is pointed at, op id and all."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cadenza import Context, StepContext, workflow
from cadenza.agents import Agent
from cadenza.engine._export import RunExport
from cadenza.errors import ConfigurationError
from cadenza.models import ToolCall
from cadenza.ports.run_store import RunStatus
from cadenza.testing import ScriptedModel, TestEnvironment
from cadenza.tools import tool
from tests._cli import cadenza_in, run_to_end

lookups: list[str] = []
CHANGED = {"rename": False}


@tool
def stock_level(sku: str) -> int:
    """Units of a product in stock.

    Args:
        sku: The product code.
    """
    lookups.append(sku)
    return 3


MODEL = ScriptedModel(name="scripted:export")
clerk = Agent("clerk", "You answer stock questions.", model=MODEL, tools=[stock_level])


async def big_report(step: StepContext, sku: str) -> str:
    return f"{sku}: " + "x" * 100_000  # claim-checked: kept as an artifact, not in the row


@workflow(name="export-stock", version="1")
async def stock(ctx: Context, sku: str) -> dict[str, object]:
    answer = (await clerk.run(ctx, f"How many {sku} are there?")).answer
    name = "report-v2" if CHANGED["rename"] else "report"
    report = await ctx.step(big_report, sku, name=name)
    approval = await ctx.create_callback(name="approve")
    decision = await approval.result()
    return {"answer": answer, "report_size": len(report), "decision": decision}


def script_model() -> None:
    MODEL.reply(ToolCall("c1", "stock_level", {"sku": "B-7"}))
    MODEL.on("3", "There are 3 units of B-7.")


@pytest.fixture
async def exported(tmp_path: Path) -> Path:
    script_model()
    lookups.clear()
    async with TestEnvironment() as env:
        run = await env.run(stock, "B-7")
        await env.succeed(await env.token(run), {"approved": True})
        run = await env.resume(run)
        assert run.status == RunStatus.SUCCEEDED
        export = await env.engine.export_run(run.run_id)
    assert export.artifacts, "the 100 KB report should travel as an artifact"
    path = tmp_path / "run.json"
    path.write_text(export.to_json())
    return path


async def test_an_exported_run_replays_without_model_tool_or_original_store(exported: Path):
    requests_before, lookups_before = len(MODEL.requests), len(lookups)
    async with TestEnvironment() as env:  # another store and artifact folder
        result = await env.replay_export(exported, stock)
    assert result.compatible, result
    assert result.replayed >= 4  # the agent's turns, the tool, the report, the callback
    assert len(MODEL.requests) == requests_before and len(lookups) == lookups_before


async def test_a_changed_step_is_pointed_at(exported: Path):
    CHANGED["rename"] = True
    try:
        async with TestEnvironment() as env:
            result = await env.replay_export(exported, stock)
    finally:
        CHANGED["rename"] = False
    assert not result.compatible
    assert result.recorded == "step 'report'" and result.asked == "step 'report-v2'"
    export = RunExport.from_json(exported.read_text())
    assert result.op_id in {op.op_id for op in export.journal}


async def test_an_export_of_another_workflow_or_a_damaged_file_is_refused(
    exported: Path, tmp_path: Path
):
    @workflow(name="export-other", version="1")
    async def other(ctx: Context) -> None:
        return None

    async with TestEnvironment() as env:
        with pytest.raises(ConfigurationError, match="export-stock v1"):
            await env.replay_export(exported, other)
        damaged = json.loads(exported.read_text())
        key = next(iter(damaged["artifacts"]))
        damaged["artifacts"][key] = "dGFtcGVyZWQ="  # "tampered"
        path = tmp_path / "damaged.json"
        path.write_text(json.dumps(damaged))
        with pytest.raises(ConfigurationError, match="does not match its content"):
            await env.replay_export(path, stock)
        (tmp_path / "junk.json").write_text('{"run": 1}')
        with pytest.raises(ConfigurationError, match="cadenza runs export"):
            await env.replay_export(tmp_path / "junk.json", stock)


def test_cadenza_runs_export_writes_the_file(tmp_path: Path):
    cadenza = cadenza_in(tmp_path / "home")
    run_id = run_to_end(cadenza, "tests.cli.cli_workflows:greet", '{"name": "Ada", "plan": "pro"}')
    out = tmp_path / "welcome.json"
    written = cadenza("runs", "export", run_id, "--output", str(out))
    assert written.returncode == 0, written.stderr
    assert "replay_export" in written.stdout
    export = RunExport.from_json(out.read_text())
    assert export.run.run_id == run_id and export.run.status == RunStatus.SUCCEEDED
    assert [event.type for event in export.history][-1] == "ExecutionSucceeded"
    missing = cadenza("runs", "export", "r-nope")
    assert missing.returncode != 0 and "r-nope" in missing.stderr
