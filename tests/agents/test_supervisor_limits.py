"""A supervisor's budget covers its whole team, and a refusal inside a role agent leaves the
same trace as in a top-level agent: the state document, the history and an event."""

from __future__ import annotations

from typing import Any

from cadenza import Context, Rule, RunStatus, workflow
from cadenza.agents import Agent, Budget
from cadenza.models import ModelResponse, ToolCall, Usage
from cadenza.patterns import Supervisor
from cadenza.retry import NO_RETRY
from cadenza.testing import TestEnvironment
from cadenza.testing.scripted_model import ScriptedModel
from cadenza.tools import tool

searches: list[str] = []
published: list[str] = []


@tool
def search(query: str) -> str:
    """Search the web."""
    searches.append(query)
    return f"results for {query}"


@tool
def publish(text: str) -> str:
    """Publish a text."""
    published.append(text)
    return "published"


PLAN = {
    "subtasks": [{"id": "facts", "role": "researcher", "task": "Find facts.", "depends_on": []}]
}
models: dict[str, ScriptedModel] = {}


def team(budget: Budget | None) -> Supervisor:
    researcher = Agent(
        "researcher",
        "You find facts.",
        model=models["researcher"],
        tools=[search, publish],
        allow=["search"],
        tool_retry=NO_RETRY,
        max_turns=50,
        max_failures=50,
    )
    return Supervisor(
        "team", planner=models["planner"], roles={"researcher": researcher}, budget=budget
    )


@workflow(name="t-supervisor-budget")
async def supervised(ctx: Context, budget_tokens: int | None) -> str:
    budget = Budget(max_tokens=budget_tokens) if budget_tokens else None
    return (await team(budget).run(ctx, "Research cadenza")).answer


async def test_the_supervisor_budget_covers_its_role_agents(env: TestEnvironment) -> None:
    searches.clear()
    models["planner"] = ScriptedModel(default=PLAN, name="planner")
    # A role agent that never stops searching, 300 tokens a reply.
    models["researcher"] = ScriptedModel(
        name="researcher",
        default=lambda req: ModelResponse(
            "", (ToolCall("s", "search", {"query": "more"}),), Usage(100, 200)
        ),
    )
    run = await env.run(supervised, 2_000)
    assert run.status == RunStatus.FAILED
    assert run.error is not None and run.error.type == "BudgetExceeded"
    usage = run.state["metadata"]["usage"]
    spent = usage["input_tokens"] + usage["output_tokens"]
    assert spent <= 2_000 + 300  # never more than the budget and one reply
    assert len(models["researcher"].requests) <= 7
    assert len(searches) < len(models["researcher"].requests)


PLANNER = ScriptedModel(name="planner-refusal")


@workflow(name="t-refusal-audit")
async def audit(ctx: Context, detail: dict[str, Any]) -> str:
    return f"{detail['agent']} was refused {detail['tool']} ({detail['error_type']})"


async def test_a_refusal_inside_a_role_agent_is_recorded(env: TestEnvironment) -> None:
    published.clear()
    await env.engine.store.put_rule(
        Rule(
            "audit-refusals",
            {"detail-type": ["ToolCallRefused"], "source": ["cadenza.agents"]},
            "start_workflow",
            {"workflow": "t-refusal-audit"},
        )
    )
    models["planner"] = ScriptedModel([PLAN, "Done: facts found."], name="planner")
    models["researcher"] = ScriptedModel(
        [[ToolCall("p", "publish", {"text": "leak"})], "Facts: none."], name="researcher"
    )
    run = await env.run(supervised, None)
    assert await env.result(run) == "Done: facts found."
    assert published == []
    [refusal] = run.state["metadata"]["refusals"]
    assert refusal["agent"] == "researcher" and refusal["tool"] == "publish"
    assert refusal["error_type"] == "ToolNotAllowed"
    assert "EventEmitted" in await env.history(run)
    [audit_run] = await env.engine.store.list_runs(workflow="t-refusal-audit")
    assert (
        await env.result(await env.resume(audit_run))
        == "researcher was refused publish (ToolNotAllowed)"
    )
