"""The supervisor: plans with dependencies run in parallel waves, least-privilege roles,
re-planning on bad plans and failed subtasks, a bounded number of plans, and replay."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from cadenza import Context, RunStatus, WorkflowDefinitionError, workflow
from cadenza.agents import Agent
from cadenza.errors import ModelResponseError
from cadenza.models import ToolCall
from cadenza.patterns import Subtask, Supervisor
from cadenza.retry import NO_RETRY
from cadenza.testing import TestEnvironment
from cadenza.testing.scripted_model import ScriptedModel
from cadenza.tools import tool

models: dict[str, ScriptedModel] = {}
searches: list[str] = []


@tool
def search(query: str) -> str:
    """Search the web."""
    searches.append(query)
    return f"results for {query}"


@tool
def publish(text: str) -> str:
    """Publish a text."""
    return "published"


def team(**options: Any) -> Supervisor:
    researcher = Agent(
        "researcher",
        "You find facts.",
        model=models["researcher"],
        tools=[search, publish],
        allow=["search"],
        tool_retry=NO_RETRY,
        max_failures=1,
    )
    writer = Agent("writer", "You write clearly.", model=models["writer"], max_failures=1)
    return Supervisor(
        "launch",
        planner=models["planner"],
        roles={"researcher": researcher, "writer": writer},
        **options,
    )


def plan(*subtasks: tuple[str, str, str, list[str]]) -> dict[str, Any]:
    return {
        "subtasks": [
            {"id": i, "role": role, "task": task, "depends_on": deps}
            for i, role, task, deps in subtasks
        ]
    }


RESEARCH_AND_WRITE = plan(
    ("facts", "researcher", "Find the release facts.", []),
    ("quotes", "researcher", "Find user quotes.", []),
    ("note", "writer", "Write the note.", ["facts", "quotes"]),
)


@workflow(name="t-supervisor")
async def launch(ctx: Context, options: dict[str, Any]) -> dict[str, Any]:
    result = await team(**options).run(ctx, "Announce cadenza 1.0")
    await ctx.wait(timedelta(minutes=1))
    return {
        "answer": result.answer,
        "replans": result.replans,
        "rejected": list(result.rejected),
        "results": [(r.id, r.status, r.plan) for r in result.results],
    }


def script(planner: list[Any], researcher: Any, writer: Any) -> None:
    models["planner"] = ScriptedModel(planner, name="planner")
    models["researcher"] = ScriptedModel(name="researcher")
    models["writer"] = ScriptedModel(name="writer")
    for pattern, reply in researcher:
        models["researcher"].on(pattern, reply)
    for pattern, reply in writer:
        models["writer"].on(pattern, reply)
    searches.clear()


async def supervise(env: TestEnvironment, **options: Any) -> tuple[Any, dict[str, Any]]:
    run = await env.run(launch, options)
    assert run.status == RunStatus.SUSPENDED, run.error
    asked = {n: len(m.requests) for n, m in models.items()}
    tools_run = len(searches)
    await env.advance(timedelta(minutes=1))
    result = await env.result(await env.resume(run))
    assert {n: len(m.requests) for n, m in models.items()} == asked  # replayed
    assert len(searches) == tools_run
    return run, result


async def test_independent_subtasks_run_then_dependents_see_their_results(
    fake_env: TestEnvironment,
) -> None:
    script(
        [RESEARCH_AND_WRITE, "cadenza 1.0 is out: durable agents for everyone."],
        [
            ("release facts", [ToolCall("s1", "search", {"query": "cadenza 1.0"})]),
            ("results for cadenza", "Released in November."),
            ("user quotes", "Users say it never loses work."),
        ],
        [("Write the note", "Cadenza 1.0, released in November, never loses work.")],
    )
    run, result = await supervise(fake_env)
    assert result["answer"] == "cadenza 1.0 is out: durable agents for everyone."
    assert result["results"] == [
        ["facts", "succeeded", 1],
        ["quotes", "succeeded", 1],
        ["note", "succeeded", 1],
    ]
    assert searches == ["cadenza 1.0"]
    # Least privilege: the researcher sees only its allowed tool, the writer none.
    assert [t.name for t in models["researcher"].requests[0].tools] == ["search"]
    assert models["writer"].requests[0].tools == ()
    # The writer got both results it depends on.
    writer_task = models["writer"].requests[0].messages[-1].content
    assert "facts (researcher): Released in November." in writer_task
    assert "quotes (researcher): Users say it never loses work." in writer_task
    # The planner was told the roles; the synthesis saw every result.
    assert "- researcher: You find facts." in models["planner"].requests[0].messages[-1].content
    assert "[note] (writer)" in models["planner"].requests[1].messages[-1].content
    state = run.state
    assert state["goal"] == "Announce cadenza 1.0" and state["status"] == "COMPLETED"
    assert [(s["id"], s["status"]) for s in state["plan"]] == [
        ("facts", "SUCCEEDED"),
        ("quotes", "SUCCEEDED"),
        ("note", "SUCCEEDED"),
    ]
    assert state["plan"][2]["dependsOn"] == ["facts", "quotes"]


async def test_unusable_plans_are_sent_back_with_their_problems(fake_env: TestEnvironment) -> None:
    script(
        [
            plan(("a", "designer", "Draw a logo.", [])),
            plan(("a", "writer", "Write.", ["b"]), ("b", "writer", "Edit.", ["a"])),
            plan(("a", "writer", "Write.", ["ghost"])),
            plan(("a", "writer", "Write the note.", [])),
            "Final.",
        ],
        [],
        [("Write the note", "A note.")],
    )
    _, result = await supervise(fake_env, max_replans=3)
    assert result["answer"] == "Final." and result["replans"] == 3
    assert "names the role 'designer', which does not exist" in result["rejected"][0]
    assert "cycle: a -> b -> a" in result["rejected"][1]
    assert "depends on 'ghost', which is not in the plan" in result["rejected"][2]
    second = models["planner"].requests[1].messages[-1].content
    assert "could not be used" in second and "designer" in second


async def test_a_failed_subtask_is_replanned_keeping_what_is_done(
    fake_env: TestEnvironment,
) -> None:
    script(
        [
            RESEARCH_AND_WRITE,
            plan(
                ("facts", "researcher", "Find the release facts.", []),
                ("note2", "writer", "Write the note without quotes.", ["facts"]),
            ),
            "Done.",
        ],
        [
            ("release facts", "Released in November."),
            ("user quotes", ModelResponseError("the quotes service is down")),
        ],
        [("without quotes", "A note without quotes.")],
    )
    run, result = await supervise(fake_env)
    assert result["answer"] == "Done." and result["replans"] == 1
    assert result["results"] == [
        ["facts", "succeeded", 1],
        ["quotes", "failed", 1],
        ["note2", "succeeded", 2],
    ]
    replan = models["planner"].requests[1].messages[-1].content
    assert "- quotes (researcher):" in replan and "gave up" in replan
    assert "Already done" in replan and "facts (researcher): Released in November." in replan
    assert [(s["id"], s["status"]) for s in run.state["plan"]] == [
        ("facts", "SUCCEEDED"),
        ("note2", "SUCCEEDED"),
    ]
    kept = run.state["context"]["results"]["launch"]["subtasks"]
    assert [(s["id"], s["status"], s["plan"]) for s in kept][1] == ("quotes", "failed", 1)
    # "facts" was done, so the second plan did not run it again.
    assert (
        sum("release facts" in r.messages[-1].content for r in models["researcher"].requests) == 1
    )
    assert (
        "facts (researcher): Released in November."
        in models["writer"].requests[0].messages[-1].content
    )


@workflow(name="t-supervisor-fails")
async def hopeless(ctx: Context) -> str:
    return (await team(max_replans=1).run(ctx, "Impossible")).answer


async def test_running_out_of_replans_fails_with_the_story(env: TestEnvironment) -> None:
    script(
        [plan(("x", "wizard", "Magic.", [])), plan(("x", "wizard", "More magic.", []))],
        [],
        [],
    )
    run = await env.run(hopeless)
    assert run.status == RunStatus.FAILED and run.error is not None
    assert run.error.type == "PatternError"
    assert "could not reach the goal in 2 plans" in run.error.message
    assert len(run.error.details["plans"]) == 2 and len(run.error.details["rejected"]) == 2
    assert len(models["planner"].requests) == 2
    assert run.state["status"] == "FAILED"


def test_plan_checks() -> None:
    script([], [], [])
    supervisor = team(max_subtasks=2)
    three = [Subtask(str(i), "writer", "t") for i in range(3)]
    assert supervisor.problems(three, {}) == ["the plan has 3 subtasks; at most 2"]
    assert supervisor.problems([], {}) == ["the plan has no subtasks"]
    dup = [Subtask("a", "writer", "t"), Subtask("a", "writer", "u")]
    assert supervisor.problems(dup, {}) == ["the id 'a' is used twice"]
    self_loop = [Subtask("a", "writer", "t", ("a",))]
    assert supervisor.problems(self_loop, {}) == ["the dependencies form a cycle: a -> a"]


def test_bad_supervisors_fail_when_defined() -> None:
    with pytest.raises(WorkflowDefinitionError, match="no roles"):
        Supervisor("s", planner="x:y", roles={})
    with pytest.raises(WorkflowDefinitionError, match="must map to an Agent"):
        Supervisor("s", planner="x:y", roles={"a": "x:y"})  # type: ignore[dict-item]
    with pytest.raises(WorkflowDefinitionError, match="max_replans"):
        Supervisor("s", planner="x:y", roles={"a": Agent("a", "x")}, max_replans=-1)
    with pytest.raises(WorkflowDefinitionError, match="not a model name"):
        Supervisor("s", planner="gpt", roles={"a": Agent("a", "x")})


def test_a_fallback_plan_is_checked_when_defined() -> None:
    with pytest.raises(WorkflowDefinitionError, match="fallback_plan: subtask 'x' names the role"):
        Supervisor(
            "s",
            planner="x:y",
            roles={"a": Agent("a", "x")},
            fallback_plan=[Subtask("x", "cook", "t")],
        )
