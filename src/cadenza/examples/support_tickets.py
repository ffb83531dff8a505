"""Support tickets by choreography: three agents, no coordinator.

A customer message starts the support agent, which files a ticket and emits
``ticket_created``. A rule hands that event to the technical agent, which diagnoses it and
emits ``ticket_resolved``; another rule hands that to the notification agent, which writes
to the customer. Every hop carries the conversation's correlation id, so one query shows
the whole conversation. The events carry this scenario's own ``source``, and the rules
match only that source: a ticket event that some other system publishes starts nothing.

    cadenza examples run support-tickets
    cadenza events list
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from cadenza import Context, workflow
from cadenza.agents import call_model
from cadenza.models import ModelRequest
from cadenza.patterns.choreography import Choreography, correlated_emit, correlation_id

SOURCE = "cadenza.examples.support-tickets"
support = Choreography()


class CustomerMessage(BaseModel):
    customer: str = "c-1042"
    message: str = "My bike's battery dies after ten minutes, even when it shows full."
    correlation_id: str | None = None
    model: str = "local:smollm2"


@workflow(name="support-agent", version="1")
async def support_agent(ctx: Context, message: CustomerMessage) -> dict[str, Any]:
    """Files a ticket from the customer's message."""
    summary = await call_model(
        ctx,
        message.model,
        ModelRequest.of(
            f"Summarise this customer problem in one short sentence:\n{message.message}",
            max_tokens=60,
        ),
        name="summarise",
    )
    ticket = {
        "ticket": f"T-{ctx.uuid()[:8]}",
        "customer": message.customer,
        "summary": summary.text.strip()[:300],
        "message": message.message,
        "model": message.model,
    }
    ctx.state.goal = f"file a ticket for {message.customer}"
    await correlated_emit(ctx, "ticket_created", ticket, source=SOURCE)
    return {"ticket": ticket["ticket"], "correlation_id": await correlation_id(ctx)}


@support.reacts_to(
    {"source": [SOURCE], "detail-type": ["ticket_created"]},
    name="example:support-tickets:technical",
)
@workflow(name="technical-agent", version="1")
async def technical_agent(ctx: Context, ticket: dict[str, Any]) -> dict[str, Any]:
    """Diagnoses a ticket and proposes a fix."""
    diagnosis = await call_model(
        ctx,
        ticket["model"],
        ModelRequest.of(
            "You are a bike-share technician. Give a likely cause and a fix in two sentences"
            f" for: {ticket['summary'] or ticket['message']}",
            max_tokens=120,
        ),
        name="diagnose",
    )
    resolution = {
        "ticket": ticket["ticket"],
        "customer": ticket["customer"],
        "resolution": diagnosis.text.strip()[:500],
        "model": ticket["model"],
    }
    await correlated_emit(ctx, "ticket_resolved", resolution, source=SOURCE)
    return resolution


@support.reacts_to(
    {"source": [SOURCE], "detail-type": ["ticket_resolved"]},
    name="example:support-tickets:notification",
)
@workflow(name="notification-agent", version="1")
async def notification_agent(ctx: Context, resolution: dict[str, Any]) -> dict[str, str]:
    """Writes to the customer."""
    note = await call_model(
        ctx,
        resolution["model"],
        ModelRequest.of(
            "Write a two-sentence friendly message to a customer telling them: "
            f"{resolution['resolution']}",
            max_tokens=100,
        ),
        name="compose",
    )
    message = note.text.strip()
    await ctx.step(deliver, resolution["customer"], message)
    return {"customer": resolution["customer"], "message": message}


async def deliver(customer: str, message: str) -> str:
    """Stands in for an e-mail or SMS gateway."""
    return f"sent to {customer}"
