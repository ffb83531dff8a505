"""Trip booking as a saga: reserve a flight and a hotel, ask a human to approve, and
undo the reservations (in reverse order) if the answer is no or never comes.

    cadenza examples run trip-booking
    cadenza run cadenza.examples.trip_booking:book_trip \\
        --input '{"traveller": "Ada", "city": "Porto"}'
    cadenza callback succeed <token> --payload '{"approved": true}'
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pydantic import BaseModel, Field

from cadenza import AgentStatus, CallbackTimedOut, Context, StepContext, workflow

from ._data import home


class Trip(BaseModel):
    traveller: str
    city: str
    nights: int = Field(default=2, ge=1, le=30)


class Reservation(BaseModel):
    kind: str
    reference: str
    detail: str


def _ledger() -> Path:
    """The bookings 'system' of this example: an append-only file of what was done."""
    return home() / "bookings.log"


def _record(action: str, reservation: Reservation) -> None:
    _ledger().parent.mkdir(parents=True, exist_ok=True)
    with _ledger().open("a", encoding="utf-8") as f:
        f.write(
            json.dumps(
                {"at": datetime.now(UTC).isoformat(), "action": action, **reservation.model_dump()}
            )
            + "\n"
        )


async def reserve_flight(step: StepContext, trip: Trip) -> Reservation:
    # The idempotency key is stable across retries: an airline API would dedupe on it.
    reservation = Reservation(
        kind="flight",
        reference=f"FL-{step.idempotency_key[-6:]}",
        detail=f"{trip.traveller} to {trip.city}",
    )
    _record("reserved", reservation)
    return reservation


async def reserve_hotel(step: StepContext, trip: Trip) -> Reservation:
    reservation = Reservation(
        kind="hotel",
        reference=f"HT-{step.idempotency_key[-6:]}",
        detail=f"{trip.nights} nights in {trip.city}",
    )
    _record("reserved", reservation)
    return reservation


async def cancel(reservation: Reservation) -> str:
    _record("cancelled", reservation)
    return f"cancelled {reservation.reference}"


async def confirm(reservation: Reservation) -> str:
    _record("confirmed", reservation)
    return f"confirmed {reservation.reference}"


async def notify_approver(token: str) -> None:
    """Stands in for an e-mail or chat message to the approver."""
    outbox = _ledger().with_name("notifications.log")
    with outbox.open("a", encoding="utf-8") as f:
        f.write(json.dumps({"to": "approver", "token": token}) + "\n")


@workflow(name="trip-booking", version="1")
async def book_trip(ctx: Context, trip: Trip) -> dict[str, object]:
    """Reserve, ask for approval, then confirm — or compensate."""
    ctx.state.goal = f"Book {trip.traveller}'s trip to {trip.city}"
    ctx.state.status = AgentStatus.TOOL_EXECUTION_PENDING
    done: list[Reservation] = []
    done.append(await ctx.step(reserve_flight, trip))
    done.append(await ctx.step(reserve_hotel, trip))
    ctx.state.context["results"] = {r.kind: r.reference for r in done}

    ctx.state.status = AgentStatus.WAITING_FOR_INPUT
    try:
        decision = await ctx.wait_for_callback(
            notify_approver, name="approval", timeout=timedelta(hours=24)
        )
    except CallbackTimedOut:
        decision = {"approved": False, "reason": "no answer within 24 hours"}

    if isinstance(decision, dict) and decision.get("approved"):
        for reservation in done:
            await ctx.step(confirm, reservation, name=f"confirm-{reservation.kind}")
        ctx.state.status = AgentStatus.COMPLETED
        return {"status": "confirmed", "reservations": [r.reference for r in done]}

    for reservation in reversed(done):  # compensate in reverse order
        await ctx.step(cancel, reservation, name=f"cancel-{reservation.kind}")
    ctx.state.status = AgentStatus.COMPLETED
    reason = decision.get("reason") if isinstance(decision, dict) else None
    return {"status": "cancelled", "reason": reason or "rejected"}
