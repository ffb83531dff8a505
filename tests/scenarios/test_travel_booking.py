"""travel-booking: a supervisor delegates bookings; a full hotel cancels the flight."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import examples.travel_booking as scenario
from cadenza import RunStatus
from cadenza.agents import register_model
from cadenza.models import ModelRequest, ToolCall
from cadenza.testing import ScriptedModel, TestEnvironment


def travel_model(city: str) -> ScriptedModel:
    def reply(req: ModelRequest) -> Any:
        props = (req.output_schema or {}).get("properties", {})
        if "subtasks" in props:  # the planner
            return {
                "subtasks": [
                    {"id": "flight", "role": "flights", "task": f"Book a flight Lisbon to {city}"},
                    {"id": "hotel", "role": "hotels", "task": f"Book a hotel in {city}"},
                ]
            }
        tools = {t.name for t in req.tools}
        answered = any(m.role == "tool" for m in req.messages)
        if "book_flight" in tools:
            return (
                "Flight booked."
                if answered
                else [
                    ToolCall(
                        "f1",
                        "book_flight",
                        {"origin": "Lisbon", "destination": city, "passenger": "Ada"},
                    )
                ]
            )
        if "book_hotel" in tools:
            return (
                "No room could be booked."
                if answered
                else [ToolCall("h1", "book_hotel", {"city": city, "nights": 2, "guest": "Ada"})]
            )
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
