"""Travel booking: a supervisor delegates to a flights agent and a hotels agent, each with
only its own booking tool. What they booked becomes a saga; when the hotel is full, the
flight is cancelled (compensation), in a durable, retried step.

    cadenza examples run travel-booking                          # Oslo: hotels are full
    cadenza examples run travel-booking --input '{"city": "Porto"}'
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from cadenza import Context, workflow
from cadenza.agents import Agent
from cadenza.patterns import Saga, Supervisor
from cadenza.tools import ToolContext, tool

FULL_CITIES = {"oslo"}  # a conference week: every hotel is taken


class HotelFull(Exception):
    pass


class Trip(BaseModel):
    traveller: str = "Ada Lovelace"
    origin: str = "Lisbon"
    city: str = "Oslo"
    nights: int = 2
    model: str = "local:smollm2"


def _ledger() -> Path:
    return Path(os.environ.get("CADENZA_HOME") or ".cadenza") / "travel-ledger.jsonl"


def _write(entry: dict[str, Any]) -> None:
    _ledger().parent.mkdir(parents=True, exist_ok=True)
    with _ledger().open("a", encoding="utf-8") as f:
        f.write(json.dumps(entry) + "\n")


def _run_of(ctx: ToolContext) -> str:
    return (ctx.idempotency_key or "local/0").split("/")[0]


@tool
def book_flight(ctx: ToolContext, origin: str, destination: str, passenger: str) -> dict[str, str]:
    """Book a flight.

    Args:
        origin: City of departure.
        destination: City of arrival.
        passenger: The passenger's name.
    """
    ref = f"FL-{abs(hash(ctx.idempotency_key)) % 10_000:04d}"
    _write(
        {
            "run": _run_of(ctx),
            "kind": "flight",
            "ref": ref,
            "status": "booked",
            "detail": f"{origin} to {destination} for {passenger}",
        }
    )
    return {"booked": ref}


@tool
def book_hotel(ctx: ToolContext, city: str, nights: int, guest: str) -> dict[str, str]:
    """Book a hotel room.

    Args:
        city: The city.
        nights: How many nights.
        guest: The guest's name.
    """
    if city.strip().lower() in FULL_CITIES:
        raise HotelFull(f"every hotel in {city} is full on those dates")
    ref = f"HT-{abs(hash(ctx.idempotency_key)) % 10_000:04d}"
    _write(
        {
            "run": _run_of(ctx),
            "kind": "hotel",
            "ref": ref,
            "status": "booked",
            "detail": f"{nights} nights in {city} for {guest}",
        }
    )
    return {"booked": ref}


def bookings_of(run_id: str) -> list[dict[str, str]]:
    """What the agents booked for this run and is not cancelled."""
    if not _ledger().exists():
        return []
    entries = [json.loads(line) for line in _ledger().read_text().splitlines()]
    cancelled = {e["ref"] for e in entries if e["status"] == "cancelled"}
    return [
        e
        for e in entries
        if e["run"] == run_id and e["status"] == "booked" and e["ref"] not in cancelled
    ]


def keep(booking: dict[str, str]) -> str:
    return booking["ref"]


def cancel(ref: str) -> str:
    _write({"run": "-", "kind": "-", "ref": ref, "status": "cancelled", "detail": ""})
    return f"cancelled {ref}"


@workflow(name="travel-booking", version="1")
async def travel_booking(ctx: Context, trip: Trip) -> dict[str, Any]:
    roles = {
        "flights": Agent(
            "flights",
            "You book flights with the book_flight tool.",
            model=trip.model,
            tools=[book_flight],
            max_turns=3,
        ),
        "hotels": Agent(
            "hotels",
            "You book hotels with the book_hotel tool. If no room can be booked, say so.",
            model=trip.model,
            tools=[book_hotel],
            max_turns=3,
        ),
    }
    supervisor = Supervisor("travel", planner=trip.model, roles=roles, max_replans=1)
    goal = (
        f"Book a flight from {trip.origin} to {trip.city} and a hotel in {trip.city}"
        f" for {trip.nights} nights, for {trip.traveller}."
    )
    result = await supervisor.run(ctx, goal)

    booked = await ctx.step(bookings_of, ctx.run_id)
    async with Saga(ctx, name="trip") as saga:
        for booking in booked:
            await saga.step(keep, booking, compensate=cancel, name=f"keep-{booking['kind']}")
        kinds = {b["kind"] for b in booked}
        if kinds != {"flight", "hotel"}:
            missing = " and ".join(sorted({"flight", "hotel"} - kinds))
            raise RuntimeError(f"no {missing} could be booked: {result.answer[:200]}")
    outcome = saga.outcome
    return {
        "status": str(outcome.status),
        "booked": [b["ref"] for b in booked],
        "compensated": list(outcome.compensated),
        "reason": outcome.error.message if outcome.error else None,
        "summary": result.answer,
    }
