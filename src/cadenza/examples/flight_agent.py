"""The reference agent loop: an agent books a flight, a booking fails, it re-plans.

The airline works as booking APIs do: a search lists the route's offers, cheapest first
(a durable step), and a booking names an offer. The agent books the cheapest offer, finds
it sold out (a tool failure), re-plans and books the next one. The booking tool's schema
lists the offers still open to this trip (an enum, so even a small model cannot book a
flight that does not exist); an offer the airline refused leaves it, as a tool list
changes on an MCP server. The airline keeps each trip's refusals and booking in
``$CADENZA_HOME/airline``, so a resumed run sees them, and it books a trip once.

The state document goes INITIATED → PLANNING → PLANNING_COMPLETE → TOOL_EXECUTION_PENDING
→ TOOL_EXECUTION_SUCCESS / FAILED → … → COMPLETED; read it at any time with ``cadenza runs
state RUN``. When the agent cannot finish (no flights to that city), it publishes an
``AgentError`` event, which the example's rule (``example:flight-agent:recovery``: this
workflow's agent errors only) hands to the recovery workflow.

    cadenza examples run flight-agent
    cadenza examples run flight-agent --input '{"destination": "Atlantis"}'   # → recovery
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from cadenza import Context, Rule, workflow
from cadenza.agents import Agent
from cadenza.patterns.recovery import recovery_rule
from cadenza.tools import Tool, ToolContext

from ._data import home

# The airline: flights by route, and the ones without a seat left.
FLIGHTS = {
    ("Lisbon", "Oslo"): [
        {"flight": "HC100", "departs": "07:10", "price": 89},
        {"flight": "HC220", "departs": "12:45", "price": 124},
        {"flight": "HC310", "departs": "18:30", "price": 149},
    ],
}
SOLD_OUT = {"HC100"}


class SoldOut(Exception):
    pass


class FlightRequest(BaseModel):
    passenger: str = "Ada Lovelace"
    origin: str = "Lisbon"
    destination: str = "Oslo"
    model: str = "local:smollm2"


def search_offers(origin: str, destination: str) -> dict[str, dict[str, Any]]:
    """The route's offers, cheapest first, by offer id."""
    route = FLIGHTS.get((origin.title(), destination.title()), [])
    ranked = sorted(route, key=lambda f: int(str(f["price"])))
    return {f"offer-{n}": flight for n, flight in enumerate(ranked, 1)}


def _short(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:6].upper()


def _trip_file(run_id: str) -> Path:
    return home() / "airline" / f"{run_id}.json"


def trip_record(run_id: str) -> dict[str, Any]:
    """What the airline knows of this trip: the offers it refused, the booking it made."""
    path = _trip_file(run_id)
    if not path.exists():
        return {"refused": [], "booking": None}
    record: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return record


def _save(run_id: str, record: dict[str, Any]) -> None:
    path = _trip_file(run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record), encoding="utf-8")


def booking_tool(offers: dict[str, dict[str, Any]], run_id: str) -> Tool:
    """The airline's booking tool for one trip: one of its open offers, booked once."""
    offer: dict[str, Any] = {"type": "string", "description": "The offer to book, e.g. offer-1."}

    def list_open() -> None:
        refused = set(trip_record(run_id)["refused"])
        still = [o for o in offers if o not in refused]
        if still:
            offer["enum"] = still
        else:  # nothing left to choose from: any text is accepted, and refused
            offer.pop("enum", None)

    list_open()

    async def book(arguments: dict[str, Any], ctx: ToolContext) -> dict[str, str]:
        record = trip_record(run_id)
        if record["booking"]:
            return {**record["booking"], "note": "this trip is already booked"}
        chosen = str(arguments["offer"]).strip()
        if chosen not in offers:
            raise ValueError(f"there is no {chosen}; the offers: {', '.join(offers) or 'none'}")
        flight = str(offers[chosen]["flight"])
        if flight in SOLD_OUT:
            _save(run_id, {**record, "refused": sorted({*record["refused"], chosen})})
            list_open()  # the offer leaves the tool's schema: the model re-plans without it
            raise SoldOut(f"{chosen} (flight {flight}) is sold out; choose another offer")
        # The idempotency key is stable across retries: the airline books once per key.
        booking = {
            "confirmation": f"CNF-{flight}-{_short(ctx.idempotency_key or run_id)}",
            "flight": flight,
            "passenger": str(arguments["passenger"]),
        }
        _save(run_id, {**record, "booking": booking})
        return booking

    return Tool(
        "book_flight",
        "Book a seat on a flight offer.",
        {
            "type": "object",
            "properties": {
                "offer": offer,
                "passenger": {"type": "string", "description": "The passenger's name."},
            },
            "required": ["offer", "passenger"],
            "additionalProperties": False,
        },
        book,
    )


@workflow(name="flight-agent", version="1")
async def flight_agent(ctx: Context, request: FlightRequest) -> dict[str, object]:
    offers = await ctx.step(search_offers, request.origin, request.destination, name="search")
    listing = "\n".join(
        f"- {o}: flight {f['flight']}, departs {f['departs']}, {f['price']} EUR"
        for o, f in offers.items()
    )
    agent = Agent(
        "flight-agent",
        "You book flights. Book the cheapest offer. If a booking fails, book the next"
        " cheapest offer. Finish by stating the confirmation number.",
        model=request.model,
        tools=[booking_tool(offers, ctx.run_id)],
        max_turns=5,
        max_failures=3,
    )
    result = await agent.run(
        ctx,
        f"Book the cheapest available flight from {request.origin} to"
        f" {request.destination} for {request.passenger}. The offers, cheapest first:\n"
        + (listing or "(none)"),
    )
    booked = [
        json.loads(s["result"])
        for s in ctx.state.plan
        if s["toolName"] == "book_flight" and s["status"] == "SUCCEEDED"
    ]
    return {
        "answer": result.answer,
        "turns": result.turns,
        "booked": sorted({b["flight"] for b in booked}),
        "confirmation": booked[0]["confirmation"] if booked else None,
    }


def recovery_rules() -> list[Rule]:
    """The recovery rule, narrowed to this workflow's own agent errors.

    An agent publishes ``AgentError`` from ``cadenza.agents`` with the workflow's name in
    the detail, so another workflow's agents (a user's own, say) are never sent here.
    """
    base = recovery_rule("example:flight-agent:recovery")
    pattern = {
        **base.pattern,
        "source": ["cadenza.agents"],
        "detail": {**base.pattern.get("detail", {}), "workflow": [flight_agent.name]},
    }
    return [Rule(base.name, pattern, base.target, dict(base.params))]
