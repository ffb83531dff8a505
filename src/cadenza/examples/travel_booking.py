"""Travel booking: a supervisor delegates to a flights agent and a hotels agent, each with
only its own booking tool. What they booked becomes a saga; when the hotel is full, the
flight is cancelled (compensation), in a durable, retried step. A planner too small to
plan (the offline model, say) does not stop the team: the supervisor then carries out the
plan that follows from the roles, and the state document says so.

    cadenza examples run travel-booking                          # Oslo: hotels are full
    cadenza examples run travel-booking --input '{"city": "Porto"}'
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from cadenza import Context, workflow
from cadenza.agents import Agent
from cadenza.errors import PatternError
from cadenza.patterns import Saga, Subtask, Supervisor
from cadenza.tools import Tool, ToolContext, tool

from ._data import home

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
    return home() / "travel-ledger.jsonl"


def _write(entry: dict[str, Any]) -> None:
    _ledger().parent.mkdir(parents=True, exist_ok=True)
    with _ledger().open("a", encoding="utf-8") as f:
        f.write(json.dumps(entry) + "\n")


def _short(ctx: ToolContext) -> str:
    """A booking reference stable across retries and processes: from the idempotency key."""
    return hashlib.sha256((ctx.idempotency_key or "").encode()).hexdigest()[:6].upper()


def _run_of(ctx: ToolContext) -> str:
    return (ctx.idempotency_key or "local/0").split("/")[0]


def _book(ctx: ToolContext, kind: str, prefix: str, detail: str) -> dict[str, str]:
    """One booking of each kind per trip: asked again, the booking system returns the first
    (a small model may call a tool twice)."""
    run = _run_of(ctx)
    for booking in bookings_of(run):
        if booking["kind"] == kind:
            return {"booked": booking["ref"], "note": f"this {kind} was already booked"}
    ref = f"{prefix}-{_short(ctx)}"
    _write({"run": run, "kind": kind, "ref": ref, "status": "booked", "detail": detail})
    return {"booked": ref}


def trip_tools(trip: Trip) -> tuple[Tool, Tool]:
    """The booking tools of one trip. Each books that trip's flight or hotel and nothing
    else: least privilege reaches the arguments too, and a model cannot book a wrong city."""

    @tool(name="book_flight", description=f"Book the flight from {trip.origin} to {trip.city}.")
    def book_flight(ctx: ToolContext, passenger: str) -> dict[str, str]:
        """
        Args:
            passenger: The passenger's name.
        """
        return _book(ctx, "flight", "FL", f"{trip.origin} to {trip.city} for {passenger}")

    @tool(
        name="book_hotel",
        description=f"Book a hotel room in {trip.city} for {trip.nights} nights.",
    )
    def book_hotel(ctx: ToolContext, guest: str) -> dict[str, str]:
        """
        Args:
            guest: The guest's name.
        """
        if trip.city.strip().lower() in FULL_CITIES:
            raise HotelFull(f"every hotel in {trip.city} is full on those dates")
        return _book(ctx, "hotel", "HT", f"{trip.nights} nights in {trip.city} for {guest}")

    return book_flight, book_hotel


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


def fallback_plan(trip: Trip) -> list[Subtask]:
    """The plan that follows from the roles, for a planner that cannot make one."""
    return [
        Subtask(
            "flight",
            "flights",
            f"Book a flight from {trip.origin} to {trip.city} for {trip.traveller}.",
        ),
        Subtask(
            "hotel",
            "hotels",
            f"Book a hotel in {trip.city} for {trip.nights} nights for {trip.traveller}.",
        ),
    ]


@workflow(name="travel-booking", version="1")
async def travel_booking(ctx: Context, trip: Trip) -> dict[str, Any]:
    book_flight, book_hotel = trip_tools(trip)
    # Two turns: book, then report (the last turn offers no tools, so it must answer).
    roles = {
        "flights": Agent(
            "flights",
            "You book flights with the book_flight tool, then say what you booked.",
            model=trip.model,
            tools=[book_flight],
            max_turns=2,
        ),
        "hotels": Agent(
            "hotels",
            "You book hotels with the book_hotel tool. If no room can be booked, say so.",
            model=trip.model,
            tools=[book_hotel],
            max_turns=2,
        ),
    }
    supervisor = Supervisor(
        "travel",
        planner=trip.model,
        roles=roles,
        max_replans=1,
        fallback_plan=fallback_plan(trip),
    )
    goal = (
        f"Book a flight from {trip.origin} to {trip.city} and a hotel in {trip.city}"
        f" for {trip.nights} nights, for {trip.traveller}."
    )
    try:
        summary = (await supervisor.run(ctx, goal)).answer
    except PatternError as exc:
        # The team gave up (every hotel full, say): what it did book is undone below.
        summary = exc.message

    booked = await ctx.step(bookings_of, ctx.run_id)
    async with Saga(ctx, name="trip") as saga:
        for booking in booked:
            await saga.step(keep, booking, compensate=cancel, name=f"keep-{booking['kind']}")
        kinds = {b["kind"] for b in booked}
        if kinds != {"flight", "hotel"}:
            missing = " and ".join(sorted({"flight", "hotel"} - kinds))
            raise RuntimeError(f"no {missing} could be booked")
    outcome = saga.outcome
    return {
        "status": str(outcome.status),
        "booked": [b["ref"] for b in booked],
        "compensated": list(outcome.compensated),
        "reason": outcome.error.message if outcome.error else None,
        "summary": summary,
    }
