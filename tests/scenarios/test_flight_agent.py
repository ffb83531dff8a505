"""flight-agent: the reference loop — search, a sold-out booking, re-plan, book, complete."""

from __future__ import annotations

from examples.flight_agent import flight_agent

from cadenza import RunStatus
from cadenza.agents import register_model
from cadenza.models import ToolCall
from cadenza.testing import TestEnvironment
from cadenza.testing.scripted_model import ScriptedModel


async def test_a_sold_out_flight_makes_the_agent_replan_and_book_the_next(
    env: TestEnvironment,
) -> None:
    model = ScriptedModel(name="scripted:flight")
    model.reply(
        [ToolCall("1", "search_flights", {"origin": "Lisbon", "destination": "Oslo"})],
        [ToolCall("2", "book_flight", {"flight": "HC100", "passenger": "Ada"})],
        [ToolCall("3", "book_flight", {"flight": "HC220", "passenger": "Ada"})],
        "Booked HC220, confirmation CNF-HC220.",
    )
    register_model("scripted:flight", model)
    run = await env.run(flight_agent, {"passenger": "Ada", "model": "scripted:flight"})
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert (await env.result(run))["booked"] == ["HC220"]
    # The sold-out error reached the model, which re-planned.
    tool_replies = [m.content for m in model.requests[2].messages if m.role == "tool"]
    assert "sold out" in tool_replies[-1]
    state = run.state
    assert [s["status"] for s in state["plan"]] == ["SUCCEEDED", "FAILED", "SUCCEEDED"]
    trail = state["metadata"]["statusTrail"]
    for status in ("PLANNING_COMPLETE", "TOOL_EXECUTION_SUCCESS", "TOOL_EXECUTION_FAILED"):
        assert status in trail
    assert trail[-1] == state["status"] == "COMPLETED"
    assert state["metadata"]["errorCount"] == 1
