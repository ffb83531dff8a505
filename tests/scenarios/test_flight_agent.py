"""flight-agent: the reference loop — search, a sold-out booking, re-plan, book, complete."""

from __future__ import annotations

from pathlib import Path

import pytest

from cadenza import RunStatus
from cadenza.agents import register_model
from cadenza.examples.flight_agent import flight_agent
from cadenza.models import ToolCall
from cadenza.testing import TestEnvironment
from cadenza.testing.scripted_model import ScriptedModel


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CADENZA_HOME", str(tmp_path))
    return tmp_path


async def test_a_sold_out_flight_makes_the_agent_replan_and_book_the_next(
    env: TestEnvironment,
) -> None:
    model = ScriptedModel(name="scripted:flight")
    model.reply(
        [ToolCall("1", "book_flight", {"offer": "offer-1", "passenger": "Ada"})],
        [ToolCall("2", "book_flight", {"offer": "offer-2", "passenger": "Ada"})],
        "Booked HC220.",
    )
    register_model("scripted:flight", model)
    run = await env.run(flight_agent, {"passenger": "Ada", "model": "scripted:flight"})
    assert run.status == RunStatus.SUCCEEDED, run.error
    result = await env.result(run)
    assert result["booked"] == ["HC220"] and result["confirmation"].startswith("CNF-HC220-")
    # The agent was given the searched offers, cheapest first.
    task = model.requests[0].messages[1].content
    assert task.index("offer-1: flight HC100") < task.index("offer-2: flight HC220")
    # The sold-out error reached the model, which re-planned without the refused offer.
    tool_replies = [m.content for m in model.requests[1].messages if m.role == "tool"]
    assert "sold out" in tool_replies[-1]
    offers = [t.parameters["properties"]["offer"]["enum"] for t in model.requests[1].tools]
    assert offers == [["offer-2", "offer-3"]]
    state = run.state
    assert [s["status"] for s in state["plan"]] == ["FAILED", "SUCCEEDED"]
    trail = state["metadata"]["statusTrail"]
    for status in ("PLANNING_COMPLETE", "TOOL_EXECUTION_SUCCESS", "TOOL_EXECUTION_FAILED"):
        assert status in trail
    assert trail[-1] == state["status"] == "COMPLETED"
    assert state["metadata"]["errorCount"] == 1


async def test_a_trip_is_booked_once(env: TestEnvironment) -> None:
    model = ScriptedModel(name="scripted:twice")
    model.reply(
        [ToolCall("1", "book_flight", {"offer": "offer-3", "passenger": "Ada"})],
        [ToolCall("2", "book_flight", {"offer": "offer-2", "passenger": "Ada"})],
        "Booked.",
    )
    register_model("scripted:twice", model)
    run = await env.run(flight_agent, {"passenger": "Ada", "model": "scripted:twice"})
    result = await env.result(run)
    assert result["booked"] == ["HC310"]  # the second booking got the first one back
    assert "already booked" in run.state["plan"][1]["result"]


async def test_an_agent_that_gives_up_reaches_the_recovery_workflow(env: TestEnvironment) -> None:
    from cadenza.examples.catalog import find

    for rule in find("flight-agent").rules():  # type: ignore[union-attr]
        await env.engine.store.put_rule(rule)
    model = ScriptedModel(name="scripted:nowhere")
    model.reply(
        [ToolCall("1", "book_flight", {"offer": "offer-1", "passenger": "Ada"})],
        [ToolCall("2", "book_flight", {"offer": "offer-9", "passenger": "Ada"})],
        [ToolCall("3", "book_flight", {"offer": "HC220", "passenger": "Ada"})],
    )
    register_model("scripted:nowhere", model)
    run = await env.run(flight_agent, {"destination": "Atlantis", "model": "scripted:nowhere"})
    assert run.status == RunStatus.FAILED
    assert run.error is not None and run.error.type == "AgentError"
    assert run.state["status"] == "FAILED"
    [recovery] = await env.engine.store.list_runs(workflow="cadenza.recovery")
    recovery = await env.resume(recovery)
    # The recovery workflow classified the error and asked a person (UNKNOWN → escalate).
    assert recovery.status == RunStatus.SUSPENDED
    assert len(await env.tokens(recovery)) == 1
    event = await recovery_input(env, recovery.run_id)
    assert event["detail"]["agent"] == "flight-agent" and event["detail"]["run_id"] == run.run_id


async def recovery_input(env: TestEnvironment, run_id: str) -> dict[str, object]:
    run = await env.engine.store.get_run(run_id)
    return await env.engine.input_of(run)  # type: ignore[no-any-return]
