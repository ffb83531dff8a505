"""The agent loop with the scripted model: tools, re-planning, state, usage, budgets,
AgentError events, and replay that never calls a model or a tool twice."""

from __future__ import annotations

from datetime import timedelta

import pytest

from cadenza import Context, Rule, RunStatus, workflow
from cadenza.agents import Agent, Budget, ConversationMemory, call_model, generate
from cadenza.errors import ModelResponseError, ModelThrottled, StructuredOutputError
from cadenza.models import ModelResponse, ToolCall
from cadenza.retry import NO_RETRY
from cadenza.testing import TestEnvironment
from cadenza.testing.scripted_model import ScriptedModel
from cadenza.tools import ToolContext, tool

tool_log: list[tuple[str, str | None]] = []


@tool
async def get_weather(ctx: ToolContext, city: str) -> dict[str, object]:
    """Current weather of a city.

    Args:
        city: The city name.
    """
    tool_log.append(("get_weather", ctx.idempotency_key))
    return {"city": city, "celsius": 21}


@tool
def to_fahrenheit(celsius: float) -> float:
    """Convert Celsius to Fahrenheit."""
    tool_log.append(("to_fahrenheit", None))
    return celsius * 9 / 5 + 32


@tool
def delete_everything() -> str:
    """Not for this agent."""
    tool_log.append(("delete_everything", None))
    return "gone"


def weather_agent(model: ScriptedModel, **options: object) -> Agent:
    return Agent(
        "forecaster",
        "You report the weather in Fahrenheit.",
        model=model,
        tools=[get_weather, to_fahrenheit, delete_everything],
        allow=["get_weather", "to_fahrenheit"],
        tool_retry=NO_RETRY,
        **options,  # type: ignore[arg-type]
    )


MODEL = ScriptedModel(name="scripted:agent")


@workflow(name="t-agent")
async def forecast(ctx: Context, city: str) -> dict[str, object]:
    result = await weather_agent(MODEL).run(ctx, f"What is the weather in {city}?")
    await ctx.wait(timedelta(minutes=1))  # suspend: the resumed activation replays the agent
    return {"answer": result.answer, "turns": result.turns, "tools": result.tool_calls}


async def test_agent_with_two_tools_completes_and_replay_calls_nothing_again(
    fake_env: TestEnvironment,
) -> None:
    tool_log.clear()
    MODEL.requests.clear()
    MODEL.reply(
        [ToolCall("c1", "get_weather", {"city": "Lisbon"})],
        [ToolCall("c2", "to_fahrenheit", {"celsius": 21})],
        "It is 69.8°F in Lisbon.",
    )
    run = await fake_env.run(forecast, "Lisbon")
    assert run.status == RunStatus.SUSPENDED
    state = run.state
    assert state["status"] == "COMPLETED"
    assert state["goal"] == "What is the weather in Lisbon?"
    assert state["tools"] == ["get_weather", "to_fahrenheit"]  # the allow-list only
    assert [s["toolName"] for s in state["plan"]] == ["get_weather", "to_fahrenheit"]
    assert all(s["status"] == "SUCCEEDED" for s in state["plan"])
    assert state["metadata"]["statusTrail"][:4] == [
        "PLANNING",
        "PLANNING_COMPLETE",
        "TOOL_EXECUTION_PENDING",
        "TOOL_EXECUTION_SUCCESS",
    ]
    usage = state["metadata"]["usage"]
    assert usage["requests"] == 3 and usage["input_tokens"] > 0
    # The tool got the step's idempotency key: stable, run-scoped.
    assert tool_log[0] == ("get_weather", f"{run.run_id}/2")
    model_calls, tool_calls = len(MODEL.requests), len(tool_log)
    # The model saw the allowed tools only, and every tool result.
    assert {t.name for t in MODEL.requests[0].tools} == {"get_weather", "to_fahrenheit"}
    assert "69.8" not in MODEL.requests[1].messages[-1].content  # it saw 21 °C first

    await fake_env.advance(timedelta(minutes=1))
    run = await fake_env.resume(run)
    assert await fake_env.result(run) == {
        "answer": "It is 69.8°F in Lisbon.",
        "turns": 3,
        "tools": 2,
    }
    assert (len(MODEL.requests), len(tool_log)) == (model_calls, tool_calls)  # replayed
    assert run.state["metadata"]["usage"] == usage  # totals rebuilt, not doubled


FLAKY = ScriptedModel(name="scripted:flaky")


@workflow(name="t-agent-replan")
async def replanning(ctx: Context) -> str:
    agent = weather_agent(FLAKY)
    return (await agent.run(ctx, "Weather in Oslo?")).answer


async def test_unknown_forbidden_and_garbage_plans_are_replanned(env: TestEnvironment) -> None:
    tool_log.clear()
    FLAKY.requests.clear()
    FLAKY.reply(
        [ToolCall("c1", "get_wether", {"city": "Oslo"})],  # no such tool
        [ToolCall("c2", "delete_everything", {})],  # exists, but not allowed
        [ToolCall("c3", "get_weather", {"city": "Oslo"})],
        "Oslo: 21°C.",
    )
    run = await env.run(replanning)
    assert await env.result(run) == "Oslo: 21°C."
    assert ("delete_everything", None) not in tool_log
    told = [m.content for m in FLAKY.requests[1].messages if m.role == "tool"]
    assert "no tool named 'get_wether'" in told[0] and "get_weather" in told[0]
    told = [m.content for m in FLAKY.requests[2].messages if m.role == "tool"]
    assert "not allowed" in told[-1]
    assert [s["status"] for s in run.state["plan"]] == ["REFUSED", "REFUSED", "SUCCEEDED"]
    assert run.state["metadata"]["errorCount"] >= 2
    refusals = run.state["metadata"]["refusals"]
    assert [(r["tool"], r["error_type"]) for r in refusals] == [
        ("get_wether", "UnknownTool"),
        ("delete_everything", "ToolNotAllowed"),
    ]
    assert (await env.history(run)).count("EventEmitted") == 2  # one ToolCallRefused each


GIVING_UP = ScriptedModel(name="scripted:giving-up")


@workflow(name="t-agent-gives-up")
async def gives_up(ctx: Context) -> str:
    agent = weather_agent(GIVING_UP, max_failures=2)
    return (await agent.run(ctx, "Weather?")).answer


@workflow(name="t-agent-recovery")
async def recovery(ctx: Context, detail: dict[str, object]) -> str:
    return f"recovering {detail['agent']} after {detail['error_type']}"


async def test_repeated_failure_raises_agent_error_and_a_rule_starts_recovery(
    env: TestEnvironment,
) -> None:
    await env.engine.store.put_rule(
        Rule(
            "recover",
            {"detail-type": ["AgentError"]},
            "start_workflow",
            {"workflow": "t-agent-recovery"},
        )
    )
    GIVING_UP.reply(ModelResponseError("garbled"), [ToolCall("x", "nope", {})])
    run = await env.run(gives_up)
    assert run.status == RunStatus.FAILED
    assert run.error is not None and run.error.type == "AgentError"
    assert "gave up" in run.error.message
    assert run.state["status"] == "FAILED"
    [rescue] = await env.engine.store.list_runs(workflow="t-agent-recovery")
    assert await env.result(await env.resume(rescue)) == "recovering forecaster after UnknownTool"


THROTTLED = ScriptedModel(name="scripted:throttled")


@workflow(name="t-model-retry")
async def throttled(ctx: Context) -> str:
    return (await call_model(ctx, THROTTLED, "hi")).text


async def test_throttled_model_calls_retry_durably(fake_env: TestEnvironment) -> None:
    THROTTLED.fail(ModelThrottled("slow down")).reply("hello")
    run = await fake_env.run(throttled)
    assert run.status == RunStatus.SUSPENDED  # backing off, holding nothing
    await fake_env.advance(timedelta(seconds=5))
    assert await fake_env.result(await fake_env.resume(run)) == "hello"


BUDGETED = ScriptedModel(name="scripted:budget", default="a long answer " * 10)  # 30 tokens


@workflow(name="t-budget")
async def over_budget(ctx: Context) -> None:
    for _ in range(5):
        await call_model(ctx, BUDGETED, "talk", budget=Budget(max_tokens=60))


async def test_budget_stops_the_run_with_a_clear_error(env: TestEnvironment) -> None:
    run = await env.run(over_budget)
    assert run.status == RunStatus.FAILED
    assert run.error is not None and run.error.type == "BudgetExceeded"
    assert "budget is 60" in run.error.message
    assert len(BUDGETED.requests) == 2  # stopped before the third call


REPAIRED = ScriptedModel(name="scripted:repair")


@workflow(name="t-structured")
async def structured(ctx: Context) -> dict[str, object]:
    schema = {
        "type": "object",
        "properties": {"label": {"enum": ["legal", "technical"]}, "confidence": {"type": "number"}},
        "required": ["label", "confidence"],
    }
    try:
        return await generate(
            ctx,
            REPAIRED,
            "Classify: review my contract",
            schema,  # type: ignore[no-any-return]
            max_repairs=1,
        )
    except StructuredOutputError:
        raise


async def test_structured_output_is_repaired_then_fails_with_the_raw_reply(
    env: TestEnvironment,
) -> None:
    REPAIRED.reply('{"label": "law"}', '```json\n{"label": "legal", "confidence": 0.9}\n```')
    assert await env.result(await env.run(structured)) == {"label": "legal", "confidence": 0.9}
    assert "did not match" in REPAIRED.requests[-1].messages[-1].content

    REPAIRED.reply("no idea", "still no idea")
    run = await env.run(structured)
    assert run.status == RunStatus.FAILED
    assert run.error is not None and run.error.type == "StructuredOutputError"
    assert run.error.details["raw_reply"] == "still no idea"


SUMMARISER = ScriptedModel(name="scripted:memory")


@workflow(name="t-memory")
async def long_chat(ctx: Context) -> int:
    agent = Agent(
        "chatter",
        "Chat.",
        model=SUMMARISER,
        tools=[get_weather],
        memory=ConversationMemory(max_tokens=100, keep_recent=2),
        tool_retry=NO_RETRY,
    )
    await agent.run(ctx, "Start " + "with a long preamble " * 30)
    return len(SUMMARISER.requests)


async def test_long_conversations_are_summarised_to_fit(env: TestEnvironment) -> None:
    SUMMARISER.on("Summarise this conversation", "The user asked about weather.")
    thinking = "Let me look that up, step by step. " * 15
    SUMMARISER.reply(
        ModelResponse(thinking, (ToolCall("a", "get_weather", {"city": "Rome"}),)),
        ModelResponse(thinking, (ToolCall("b", "get_weather", {"city": "Oslo"}),)),
        "Done.",
    )
    run = await env.run(long_chat)
    assert run.status == RunStatus.SUCCEEDED
    last = SUMMARISER.requests[-1]
    [summary] = [m for m in last.messages if "notes on the conversation so far" in m.content]
    assert summary.role == "assistant"  # the agent's notes, never the user's words
    assert last.messages[1].role == "user" and last.messages[1].content.startswith("Start")
    assert len(last.messages) < 8


def test_agent_configuration_is_checked_when_defined() -> None:
    from cadenza.errors import ConfigurationError, WorkflowDefinitionError

    with pytest.raises(ConfigurationError, match="do not exist"):
        Agent("x", "y", model=MODEL, tools=[get_weather], allow=["get_weathr"])
    with pytest.raises(WorkflowDefinitionError):
        Agent("x", "y", model=MODEL, max_turns=0)
