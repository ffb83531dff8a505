"""The agent loop with the real offline model (SmolLM2-135M through llama.cpp).

A 135M model's answers are not what this pins; the loop is: the model plans through the
tool interface, the tools run as durable steps, the state document moves through its
statuses, and the run completes offline on a fresh install.
"""

from __future__ import annotations

import importlib.util

import pytest

from cadenza import Context, RunStatus, workflow
from cadenza.agents import Agent
from cadenza.testing import TestEnvironment
from cadenza.tools import tool

pytestmark = [
    pytest.mark.slow,
    pytest.mark.native,
    pytest.mark.skipif(
        importlib.util.find_spec("llama_cpp") is None,
        reason="the 'local' extra (llama-cpp-python) is not installed",
    ),
]

ran: list[str] = []


@tool
def get_weather(city: str) -> dict[str, object]:
    """Current weather of a city, in Celsius."""
    ran.append("get_weather")
    return {"city": city, "celsius": 21}


@tool
def to_fahrenheit(celsius: float) -> float:
    """Convert a temperature from Celsius to Fahrenheit."""
    ran.append("to_fahrenheit")
    return celsius * 9 / 5 + 32


@workflow(name="t-local-agent")
async def local_weather(ctx: Context, question: str) -> dict[str, object]:
    agent = Agent(
        "weather",
        "You answer weather questions using the tools.",
        model="local:smollm2",
        tools=[get_weather, to_fahrenheit],
        max_turns=4,
    )
    result = await agent.run(ctx, question)
    return {"answer": result.answer, "turns": result.turns, "tool_calls": result.tool_calls}


async def test_an_agent_with_two_tools_completes_with_the_local_model(
    env: TestEnvironment,
) -> None:
    ran.clear()
    run = await env.run(local_weather, "What is the weather in Paris, in Fahrenheit?")
    assert run.status == RunStatus.SUCCEEDED, run.error
    result = await env.result(run)
    assert result["answer"] and 1 <= result["turns"] <= 4
    assert result["tool_calls"] == len(ran) >= 1  # it used the tools, each once
    trail = run.state["metadata"]["statusTrail"]
    assert trail[0] == "PLANNING" and trail[-1] == "COMPLETED"
    assert "TOOL_EXECUTION_SUCCESS" in trail
    # Every usable reply is accounted; a reply refused as malformed (a small model's tool
    # call whose arguments are not an object) uses a turn but records no usage.
    assert 1 <= run.state["metadata"]["usage"]["requests"] <= result["turns"]
