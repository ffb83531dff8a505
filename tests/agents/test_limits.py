"""Limits that hold for the whole agent, whatever the model replies: tool calls per reply,
no tool on the last turn, model calls (summaries included), budgets checked after each
reply too, malformed arguments, and bounded state."""

from __future__ import annotations

import json
from typing import Any

import pytest

from cadenza import Context, RunStatus, workflow
from cadenza.agents import Agent, Budget, ConversationMemory
from cadenza.errors import ModelResponseError
from cadenza.models import ModelRequest, ModelResponse, ToolCall, Usage
from cadenza.retry import NO_RETRY
from cadenza.testing import TestEnvironment
from cadenza.testing.scripted_model import ScriptedModel
from cadenza.tools import tool

pings: list[int] = []


@tool
def ping(n: int) -> str:
    """Ping once."""
    pings.append(n)
    return f"pong {n}"


MODEL = ScriptedModel(name="scripted:limits")
OPTIONS: dict[str, Any] = {}


@pytest.fixture(autouse=True)
def _clean() -> None:
    pings.clear()
    MODEL.requests.clear()
    MODEL._queue.clear()
    MODEL._rules.clear()
    OPTIONS.clear()


@workflow(name="t-limits")
async def pinger(ctx: Context) -> dict[str, Any]:
    options = {"max_turns": 8, "tool_retry": NO_RETRY, **OPTIONS}
    agent = Agent("pinger", "You ping.", model=MODEL, tools=[ping], **options)
    result = await agent.run(ctx, "Ping.")
    return {"answer": result.answer, "model_calls": result.model_calls}


def tool_messages(req: ModelRequest) -> list[str]:
    return [m.content for m in req.messages if m.role == "tool"]


async def test_a_reply_runs_at_most_the_per_reply_cap_and_the_rest_is_refused(
    env: TestEnvironment,
) -> None:
    MODEL.reply([ToolCall(f"c{i}", "ping", {"n": i}) for i in range(500)], "done")
    run = await env.run(pinger)
    assert await env.result(run) == {"answer": "done", "model_calls": 2}
    assert pings == list(range(8))  # the default cap, in the order asked
    told = tool_messages(MODEL.requests[1])
    assert told[:8] == [f"pong {i}" for i in range(8)]
    # Eight refusals say why; the other 484 calls are left out of the conversation, so a
    # runaway reply cannot fill the next prompts.
    assert len(told) == 16
    assert all("not run: at most 8 tool calls are run per reply" in t for t in told[8:])
    assert "this reply made 500" in told[-1]
    [reply] = [m for m in MODEL.requests[1].messages if m.tool_calls]
    assert [c.id for c in reply.tool_calls] == [f"c{i}" for i in range(16)]
    [refusal] = run.state["metadata"]["refusals"]
    assert refusal["error_type"] == "ToolCallLimit" and refusal["tool"] == "ping"
    assert refusal["reason"].startswith("492 calls not run")
    statuses = [s["status"] for s in run.state["plan"]]
    assert statuses == ["SUCCEEDED"] * 8 + ["REFUSED"]
    assert len(json.dumps(run.state)) < 20_000  # one record, not 492


async def test_the_per_reply_cap_is_configurable(env: TestEnvironment) -> None:
    OPTIONS["max_tool_calls_per_reply"] = 2
    MODEL.reply([ToolCall(f"c{i}", "ping", {"n": i}) for i in range(3)], "done")
    assert (await env.result(await env.run(pinger)))["answer"] == "done"
    assert pings == [0, 1]


async def test_a_tool_call_on_the_last_turn_is_refused(env: TestEnvironment) -> None:
    OPTIONS["max_turns"] = 2
    MODEL.reply([ToolCall("a", "ping", {"n": 1})], [ToolCall("b", "ping", {"n": 2})])
    run = await env.run(pinger)
    assert run.status == RunStatus.FAILED
    assert run.error is not None and run.error.type == "AgentError"
    assert "no answer after 2 turns" in run.error.message
    assert pings == [1]  # the call made on the last turn never ran
    assert MODEL.requests[1].tools == ()  # no tools were offered on it
    [refusal] = run.state["metadata"]["refusals"]
    assert refusal["error_type"] == "ToolCallOnLastTurn"


async def test_summaries_count_against_max_turns(env: TestEnvironment) -> None:
    OPTIONS["max_turns"] = 7
    OPTIONS["memory"] = ConversationMemory(max_tokens=100, keep_recent=1)
    MODEL.on("Summarise this conversation", "They pinged.")
    thinking = "I will ping again to be sure of the answer. " * 10
    MODEL.default = lambda req: ModelResponse(
        thinking, (ToolCall(f"c{len(MODEL.requests)}", "ping", {"n": len(MODEL.requests)}),)
    )
    try:
        run = await env.run(pinger)
    finally:
        MODEL.default = None
    assert run.status == RunStatus.FAILED
    summaries = [r for r in MODEL.requests if "Summarise" in r.messages[-1].content]
    assert summaries  # memory had to summarise
    assert len(MODEL.requests) == 7  # plans and summaries together
    assert MODEL.requests[-1].tools == ()  # the last call is still the no-tools turn


async def test_a_reply_over_the_budget_stops_the_run_and_is_not_acted_on(
    env: TestEnvironment,
) -> None:
    OPTIONS["budget"] = Budget(max_tokens=1000)
    OPTIONS["max_tokens"] = None
    huge = ModelResponse(
        "", (ToolCall("x", "ping", {"n": 1}),), Usage(input_tokens=2, output_tokens=2_000_000)
    )
    MODEL.reply(huge, "never asked")
    run = await env.run(pinger)
    assert run.status == RunStatus.FAILED
    assert run.error is not None and run.error.type == "BudgetExceeded"
    assert "the last reply (2000002 tokens) went over it" in run.error.message
    assert pings == []  # its tool call never ran
    assert len(MODEL.requests) == 1
    assert MODEL.requests[0].max_tokens is not None and MODEL.requests[0].max_tokens <= 1000


@pytest.mark.parametrize(
    "arguments",
    ["n=1", None, 7, [["n", 1]]],
    ids=["string", "null", "number", "list-of-pairs"],
)
async def test_malformed_arguments_from_an_adapter_are_a_bad_reply_the_model_is_told_of(
    env: TestEnvironment, arguments: object
) -> None:
    def malformed(req: ModelRequest) -> ModelResponse:  # built by the "adapter", mid-call
        return ModelResponse(tool_calls=(ToolCall("c", "ping", arguments),))  # type: ignore[arg-type]

    MODEL.reply(malformed, "fine")
    run = await env.run(pinger)
    assert (await env.result(run))["answer"] == "fine"
    assert pings == []
    told = MODEL.requests[1].messages[-1]
    assert told.role == "user" and "could not be used" in told.content
    assert "not a JSON object" in told.content


def test_tool_calls_refuse_arguments_that_are_not_an_object() -> None:
    for bad in ("n=1", None, 7, [["n", 1]], {1: "x"}):
        with pytest.raises(ModelResponseError, match="not a JSON object"):
            ToolCall("c", "ping", bad)  # type: ignore[arg-type]
        with pytest.raises(ModelResponseError):
            ToolCall.from_dict({"id": "c", "name": "ping", "arguments": bad})
    assert ToolCall.from_dict({"id": "c", "name": "ping"}).arguments == {}


async def test_huge_arguments_are_clipped_in_the_state_and_the_conversation(
    env: TestEnvironment,
) -> None:
    megabyte = "y" * 1_000_000
    MODEL.reply(*[[ToolCall(f"c{i}", "ping", {"n": i, "pad": megabyte})] for i in range(2)], "done")
    run = await env.run(pinger)
    assert (await env.result(run))["answer"] == "done"
    assert pings == []  # "pad" is not a parameter: refused by the schema every time
    state = json.dumps(run.state)
    assert len(state) < 30_000  # 2 MB of arguments did not enter the state document
    parameters = run.state["plan"][0]["parameters"]
    size = len(json.dumps({"n": 0, "pad": megabyte}))
    assert f"[{size} characters in all]" in parameters["$clipped"]
    for request in MODEL.requests[1:]:
        sent = sum(len(m.content) for m in request.messages)
        sent += sum(len(json.dumps(c.arguments)) for m in request.messages for c in m.tool_calls)
        assert sent < 60_000  # neither resent whole nor echoed back in the errors
