"""support-tickets: three agents linked only by events and rules, one correlation id."""

from __future__ import annotations

from cadenza import RunStatus
from cadenza.agents import register_model
from cadenza.examples.support_tickets import notification_agent, support, support_agent
from cadenza.patterns.choreography import trace
from cadenza.testing import TestEnvironment
from cadenza.testing.scripted_model import ScriptedModel


async def test_a_ticket_flows_through_three_agents_by_events_alone(env: TestEnvironment) -> None:
    model = ScriptedModel(name="scripted:support")
    model.on("Summarise", "Battery drains fast.")
    model.on("technician", "Worn battery cells; replace the battery pack.")
    model.on("friendly message", "We will replace your battery pack this week.")
    register_model("scripted:support", model)
    await support.install(env.engine)

    first = await env.run(
        support_agent,
        {
            "customer": "c-7",
            "message": "Battery dies fast",
            "correlation_id": "conv-42",
            "model": "scripted:support",
        },
    )
    assert first.status == RunStatus.SUCCEEDED
    await env.resume(first)  # relay: ticket_created starts the technical agent, and so on
    for _ in range(3):
        for run in await env.engine.store.list_runs():
            if not run.status.terminal:
                await env.resume(run)

    [notified] = await env.engine.store.list_runs(workflow=notification_agent.name)
    assert notified.status == RunStatus.SUCCEEDED
    assert await env.result(notified) == {
        "customer": "c-7",
        "message": "We will replace your battery pack this week.",
    }
    hops = [(e.kind, e.name) for e in await trace(env.engine, "conv-42")]
    assert hops == [
        ("run", "support-agent"),
        ("event", "ticket_created"),
        ("run", "technical-agent"),
        ("event", "ticket_resolved"),
        ("run", "notification-agent"),
    ]
