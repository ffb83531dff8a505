"""contract-router: one desk, three specialists, and a general desk for what fits none.

A model classifies the request (a label constrained to the routes, with a confidence) and
the router hands it to the legal, technical or scheduling handler. A label below the
confidence threshold, or an answer that names no route, goes to the general desk instead,
and the result says so. Each handler's answer is a durable step: a run resumed after a
crash or a wait replays the route from the journal without asking any model again.

    cadenza examples run contract-router
    cadenza examples run contract-router --input '{"request": "The app crashes at login"}'
"""

from __future__ import annotations

import functools
from typing import Any

from pydantic import BaseModel, Field

from cadenza import Context, workflow
from cadenza.agents import Agent
from cadenza.patterns import LlmClassifier, Router

ROUTES = {
    "legal": "contracts, terms and conditions, liability, disputes, privacy",
    "technical": "apps, accounts, bikes or docks that do not work, errors",
    "scheduling": "bookings, appointments, dates, times, rescheduling",
}
FALLBACK = "general"


class DeskRequest(BaseModel):
    request: str = "Can you help me review my contract terms?"
    model: str = "local:smollm2"
    threshold: float = Field(0.5, ge=0, le=1)  # below it, the general desk answers


@functools.cache
def desk(model: str, threshold: float) -> Router:
    """The router for one model; definitions are checked once, when first built."""
    return Router(
        name="desk",
        routes={
            "legal": "You are a careful legal assistant. In at most four sentences, say how"
            " you would help with this request and which clauses to check first:\n{request}",
            "technical": Agent(
                "technical",
                "You are a support engineer. Give the first three troubleshooting steps, in"
                " at most four sentences.",
                model=model,
            ),
            "scheduling": "You manage bookings. In at most three sentences, say what you need"
            " to schedule this request:\n{request}",
            FALLBACK: "You are a front desk. In at most three sentences, answer politely and"
            " say who will follow up:\n{request}",
        },
        classifier=LlmClassifier(model, routes=ROUTES, threshold=threshold),
        fallback=FALLBACK,
        model=model,
    )


async def handle(ctx: Context, request: DeskRequest) -> dict[str, Any]:
    """Route one request and report where it went and why."""
    routed = await desk(request.model, request.threshold).route(ctx, request.request)
    return {
        "route": routed.route,
        "label": routed.classification.label,
        "confidence": routed.classification.confidence,
        "fell_back": routed.fell_back,
        "reason": routed.reason,
        "answer": str(routed.output).strip(),
    }


@workflow(name="contract-router", version="1")
async def contract_router(ctx: Context, request: DeskRequest) -> dict[str, Any]:
    ctx.state.goal = f"route and answer: {request.request}"
    return await handle(ctx, request)
