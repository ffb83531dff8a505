"""Choreography: rules start workflows on events, a correlation id rides every hop, and
``trace`` puts one conversation back together."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any

import pytest

from cadenza import Context, Event, RunStatus, workflow
from cadenza.errors import InvalidEventPattern, WorkflowDefinitionError
from cadenza.events.relay import relay_outbox
from cadenza.patterns.choreography import (
    Choreography,
    Reaction,
    correlated_emit,
    correlation_id,
    trace,
)
from cadenza.testing import TestEnvironment

handled: Counter[str] = Counter()
support = Choreography()


@pytest.fixture(autouse=True)
def _clean() -> None:
    handled.clear()


async def open_ticket(ticket: dict[str, Any]) -> str:
    handled["opened"] += 1
    return f"T-{ticket['customer']}"


@workflow(name="t-chor-intake")
async def intake(ctx: Context, ticket: dict[str, Any]) -> str:
    """A: the customer's message becomes a ticket."""
    ticket_id = await ctx.step(open_ticket, ticket)
    await correlated_emit(ctx, "ticket_created", {"ticket": ticket_id}, source="support")
    return str(ticket_id)


async def resolve(ticket: str) -> str:
    handled["resolved"] += 1
    return f"{ticket}: reset the password"


@support.reacts_to({"detail-type": ["ticket_created"], "source": ["support"]})
@workflow(name="t-chor-resolver")
async def resolver(ctx: Context, detail: dict[str, Any]) -> str:
    """B: works the ticket, with no coordinator telling it to."""
    answer = await ctx.step(resolve, detail["ticket"])
    await correlated_emit(
        ctx, "ticket_resolved", {"ticket": detail["ticket"], "answer": answer}, source="support"
    )
    await ctx.wait(timedelta(seconds=0.05), name="linger")  # a suspension: B replays its emit
    return str(answer)


async def tell_customer(answer: str) -> None:
    handled["told"] += 1


@support.reacts_to({"detail-type": ["ticket_resolved"]}, name="notify-customer")
@workflow(name="t-chor-notifier")
async def notifier(ctx: Context, detail: dict[str, Any]) -> str:
    """C: tells the customer."""
    await ctx.step(tell_customer, detail["answer"])
    return await correlation_id(ctx)


async def test_a_ticket_travels_three_workflows_under_one_correlation_id(
    env: TestEnvironment,
) -> None:
    await support.install(env.engine)
    run = await env.run(intake, {"customer": "ada", "correlation_id": "conv-42"}, linger=2)
    assert await env.result(run) == "T-ada"
    await settle(env)
    [b] = await env.engine.store.list_runs(workflow="t-chor-resolver")
    [c] = await env.engine.store.list_runs(workflow="t-chor-notifier")
    assert b.status == c.status == RunStatus.SUCCEEDED
    assert await env.result(c) == "conv-42"
    assert handled == {"opened": 1, "resolved": 1, "told": 1}
    history = await env.history(b)
    assert history.count("InvocationCompleted") == 2  # B suspended once and replayed
    assert history.count("EventEmitted") == 1

    hops = await trace(env.engine, "conv-42")
    assert [(h.kind, h.name) for h in hops] == [
        ("run", "t-chor-intake"),
        ("event", "ticket_created"),
        ("run", "t-chor-resolver"),
        ("event", "ticket_resolved"),
        ("run", "t-chor-notifier"),
    ]
    assert all(
        (h.detail or {}).get("correlation_id") == "conv-42" for h in hops if h.kind == "event"
    )
    assert hops[1].run_id == run.run_id and hops[2].caused_by == hops[1].id
    assert hops[3].run_id == b.run_id and hops[4].caused_by == hops[3].id
    assert all(h.status == "SUCCEEDED" for h in hops if h.kind == "run")
    assert await trace(env.engine, "conv-other") == []


async def test_without_an_id_the_trace_id_is_the_correlation_id(env: TestEnvironment) -> None:
    await support.install(env.engine.store)
    run = await env.run(intake, {"customer": "bob"}, linger=2)
    await settle(env)
    assert run.trace_id is not None
    [c] = await env.engine.store.list_runs(workflow="t-chor-notifier")
    assert await env.result(c) == run.trace_id  # handed on by the relay, hop by hop
    names = [h.name for h in await trace(env.engine, run.trace_id)]
    assert names == [
        "t-chor-intake",
        "ticket_created",
        "t-chor-resolver",
        "ticket_resolved",
        "t-chor-notifier",
    ]


async def test_an_outside_event_starts_the_chain_and_duplicates_start_nothing(
    env: TestEnvironment,
) -> None:
    await support.install(env.engine)
    created = Event.new(
        "ticket_created", {"ticket": "T-9", "correlation_id": "mail-7"}, source="support"
    )
    await env.engine.publish([created.to_dict()])
    await env.engine.publish([created.to_dict()])  # delivered twice: deduplicated by id
    await settle(env)
    assert handled == {"resolved": 1, "told": 1}
    resolved = [
        e.event
        for e in await env.engine.store.list_events(limit=100)
        if e.event["detail-type"] == "ticket_resolved"
    ]
    assert len(resolved) == 1  # B suspended and replayed, and emitted once
    assert resolved[0]["detail"]["correlation_id"] == "mail-7"
    kinds = [(h.kind, h.name) for h in await trace(env.engine, "mail-7")]
    assert kinds == [  # the event published twice is one hop
        ("event", "ticket_created"),
        ("run", "t-chor-resolver"),
        ("event", "ticket_resolved"),
        ("run", "t-chor-notifier"),
    ]


async def settle(env: TestEnvironment) -> None:
    """Relay and run until nothing is left to do (the chain's hops are separate runs)."""
    for _ in range(20):
        await relay_outbox(env.engine)
        runs = await env.engine.store.list_runs(limit=100)
        open_runs = [r for r in runs if not r.status.terminal]
        if not open_runs and not await env.engine.store.fetch_outbox(limit=1):
            return
        for run in open_runs:
            await env.resume(run, linger=1)
    raise AssertionError("the choreography did not settle")


def test_reactions_become_start_workflow_rules() -> None:
    rules = {r.name: r for r in support.rules()}
    assert set(rules) == {"react:t-chor-resolver:ticket_created", "notify-customer"}
    rule = rules["notify-customer"]
    assert rule.target == "start_workflow" and rule.pattern == {"detail-type": ["ticket_resolved"]}
    assert rule.params == {
        "workflow": "t-chor-notifier",
        "input": "detail",
        "module": "tests.patterns.test_choreography:notifier",
    }


def test_reactions_are_checked_when_declared() -> None:
    with pytest.raises(InvalidEventPattern):
        Reaction({"detail": {"n": [{"numeric": [">>", 1]}]}}, "t-chor-notifier")
    with pytest.raises(WorkflowDefinitionError, match="share the rule name"):
        Choreography(
            [
                Reaction({"source": ["a"]}, "t-chor-notifier", name="same"),
                Reaction({"source": ["b"]}, "t-chor-resolver", name="same"),
            ]
        )
    with pytest.raises(WorkflowDefinitionError, match="above @workflow"):
        Choreography().reacts_to({"source": ["a"]})(resolve)  # type: ignore[arg-type]


async def test_install_and_uninstall(env: TestEnvironment) -> None:
    chor = Choreography()
    chor.on({"detail-type": ["x"]}, "t-chor-notifier", input="event")
    [rule] = await chor.install(env.engine)
    assert [r.name for r in await env.engine.store.list_rules()] == [rule.name]
    assert rule.params["input"] == "event"
    await chor.uninstall(env.engine)
    assert await env.engine.store.list_rules() == []
