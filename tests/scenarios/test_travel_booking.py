"""travel-booking: a supervisor delegates bookings; a full hotel cancels the flight."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import cadenza.examples.travel_booking as scenario
from cadenza import RunStatus
from cadenza.agents import register_model
from cadenza.models import ModelRequest, ToolCall
from cadenza.testing import ScriptedModel, TestEnvironment


def travel_model(city: str, *, plan: Any = None, repeat: bool = False) -> ScriptedModel:
    """The planner answers ``plan`` (a usable one by default); each agent calls its tool
    (twice in one reply with ``repeat``), then reports."""
    usable = {
        "subtasks": [
            {"id": "flight", "role": "flights", "task": f"Book a flight Lisbon to {city}"},
            {"id": "hotel", "role": "hotels", "task": f"Book a hotel in {city}"},
        ]
    }

    def reply(req: ModelRequest) -> Any:
        props = (req.output_schema or {}).get("properties", {})
        if "subtasks" in props:  # the planner
            return usable if plan is None else plan
        system = req.messages[0].content
        first = req.tools and not any(m.role == "tool" for m in req.messages)
        times = range(2 if repeat else 1)
        if "book flights" in system:
            if first:
                return [ToolCall(f"f{i}", "book_flight", {"passenger": "Ada"}) for i in times]
            return "Flight booked."
        if "book hotels" in system:
            if first:
                return [ToolCall(f"h{i}", "book_hotel", {"guest": "Ada"}) for i in times]
            return "No room could be booked." if city == "Oslo" else "Hotel booked."
        return f"Trip to {city} handled."  # the synthesiser

    return ScriptedModel(name=f"scripted:travel-{city}", default=reply)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CADENZA_HOME", str(tmp_path))
    return tmp_path


def ledger(home: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in (home / "travel-ledger.jsonl").read_text().splitlines()]


async def test_a_full_hotel_cancels_the_booked_flight(env: TestEnvironment, home: Path) -> None:
    register_model("scripted:travel-Oslo", travel_model("Oslo"))
    run = await env.run(scenario.travel_booking, {"city": "Oslo", "model": "scripted:travel-Oslo"})
    assert run.status == RunStatus.SUCCEEDED, run.error
    result = await env.result(run)
    assert result["status"] == "COMPENSATED"
    assert result["compensated"] == ["keep-flight"]
    assert "no hotel could be booked" in result["reason"]
    [flight] = [e for e in ledger(home) if e["kind"] == "flight"]
    assert any(e["status"] == "cancelled" and e["ref"] == flight["ref"] for e in ledger(home))
    history = await env.history(run)
    assert history.count("StepSucceeded") >= 3  # bookings, keep, and the compensation


async def test_with_rooms_free_the_saga_commits(env: TestEnvironment, home: Path) -> None:
    register_model("scripted:travel-Porto", travel_model("Porto"))
    run = await env.run(
        scenario.travel_booking, {"city": "Porto", "model": "scripted:travel-Porto"}
    )
    result = await env.result(run)
    assert result["status"] == "COMMITTED" and len(result["booked"]) == 2
    assert result["compensated"] == []
    assert all(e["status"] == "booked" for e in ledger(home))


async def test_an_unusable_plan_falls_back_to_the_roles_plan(
    env: TestEnvironment, home: Path
) -> None:
    # A small model's plan: roles that do not exist, a subtask that depends on itself.
    garbled = {"subtasks": [{"id": "f", "role": "Flights", "task": "Flights", "depends_on": ["f"]}]}
    register_model("scripted:travel-Porto", travel_model("Porto", plan=garbled))
    run = await env.run(
        scenario.travel_booking, {"city": "Porto", "model": "scripted:travel-Porto"}
    )
    assert run.status == RunStatus.SUCCEEDED, run.error
    result = await env.result(run)
    assert result["status"] == "COMMITTED" and len(result["booked"]) == 2
    # The state document says the plan carried out was the fixed one, and why.
    record = run.state["context"]["results"]["travel"]
    assert record["fallbacks"] == [1]
    assert "'Flights', which does not exist" in record["rejected"][0]
    assert [s["id"] for s in run.state["plan"]] == ["flight", "hotel"]
    assert all(s["status"] == "SUCCEEDED" for s in run.state["plan"])


async def test_a_reply_that_is_no_plan_at_all_also_falls_back(
    env: TestEnvironment, home: Path
) -> None:
    register_model("scripted:travel-Porto", travel_model("Porto", plan={"goal": "travel"}))
    run = await env.run(
        scenario.travel_booking, {"city": "Porto", "model": "scripted:travel-Porto"}
    )
    assert (await env.result(run))["status"] == "COMMITTED"
    record = run.state["context"]["results"]["travel"]
    assert record["fallbacks"] == [1] and "did not fit the plan" in record["rejected"][0]


async def test_a_tool_called_twice_books_once(env: TestEnvironment, home: Path) -> None:
    model = travel_model("Porto", repeat=True)
    register_model("scripted:travel-Porto", model)
    run = await env.run(
        scenario.travel_booking, {"city": "Porto", "model": "scripted:travel-Porto"}
    )
    result = await env.result(run)
    assert result["status"] == "COMMITTED" and len(result["booked"]) == 2
    assert len(ledger(home)) == 2  # one flight, one hotel
    # The second call of each tool was told of the first booking.
    told = [m.content for r in model.requests for m in r.messages if m.role == "tool"]
    assert any("this flight was already booked" in t for t in told)
    assert any("this hotel was already booked" in t for t in told)
