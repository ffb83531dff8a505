"""The reference agent loop: book a flight with two tools.

The agent searches, tries to book the cheapest flight, finds it sold out (a tool failure),
re-plans and books the next one. The state document goes INITIATED → PLANNING →
PLANNING_COMPLETE → TOOL_EXECUTION_PENDING → TOOL_EXECUTION_SUCCESS / FAILED → … →
COMPLETED; read it at any time with ``cadenza runs state RUN``. When the agent cannot
finish (no seats anywhere), it publishes an ``AgentError`` event, which the example's rule
hands to the recovery workflow.

    cadenza examples run flight-agent
    cadenza examples run flight-agent --input '{"destination": "Atlantis"}'   # → recovery
"""

from __future__ import annotations

from pydantic import BaseModel

from cadenza import Context, workflow
from cadenza.agents import Agent
from cadenza.tools import ToolContext, tool

# The airline: flights by route, and the seats left on each.
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


@tool
def search_flights(origin: str, destination: str) -> list[dict[str, object]]:
    """Flights between two cities, cheapest first.

    Args:
        origin: City of departure.
        destination: City of arrival.
    """
    flights = FLIGHTS.get((origin.title(), destination.title()), [])
    return sorted(flights, key=lambda f: int(str(f["price"])))


@tool
def book_flight(ctx: ToolContext, flight: str, passenger: str) -> dict[str, str]:
    """Book a seat on a flight.

    Args:
        flight: The flight number, e.g. HC220.
        passenger: The passenger's name.
    """
    if flight.upper() in SOLD_OUT:
        raise SoldOut(f"flight {flight} is sold out; choose another flight")
    known = {f["flight"] for route in FLIGHTS.values() for f in route}
    if flight.upper() not in known:
        raise ValueError(f"there is no flight {flight}")
    # The idempotency key is stable across retries: the airline books once per key.
    return {
        "confirmation": f"CNF-{flight.upper()}-{(ctx.idempotency_key or '')[-4:]}",
        "flight": flight.upper(),
        "passenger": passenger,
    }


class FlightRequest(BaseModel):
    passenger: str = "Ada Lovelace"
    origin: str = "Lisbon"
    destination: str = "Oslo"
    model: str = "local:smollm2"


@workflow(name="flight-agent", version="1")
async def flight_agent(ctx: Context, request: FlightRequest) -> dict[str, object]:
    agent = Agent(
        "flight-agent",
        "You book flights. First search for flights, then book the cheapest one that has"
        " seats. If a booking fails, book the next cheapest flight. Finish by stating the"
        " confirmation number.",
        model=request.model,
        tools=[search_flights, book_flight],
        max_turns=6,
        max_failures=3,
    )
    result = await agent.run(
        ctx,
        f"Book the cheapest available flight from {request.origin} to"
        f" {request.destination} for {request.passenger}.",
    )
    booked = [
        s for s in ctx.state.plan if s["toolName"] == "book_flight" and s["status"] == "SUCCEEDED"
    ]
    return {
        "answer": result.answer,
        "turns": result.turns,
        "booked": [s["parameters"].get("flight") for s in booked],
    }
