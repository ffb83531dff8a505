"""Events: emit through the outbox, wait_for_event, and rules delivering to targets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cadenza import (
    Context,
    Event,
    EventWaitTimedOut,
    Rule,
    RunStatus,
    workflow,
)
from cadenza.errors import ConfigurationError, InvalidEventPattern
from cadenza.events.relay import relay_outbox, validate_rule
from cadenza.testing import TestEnvironment


@workflow(name="t-emitter")
async def emitter(ctx: Context, ticket: int) -> str:
    return await ctx.emit(
        "ticket_created", {"ticket": ticket, "priority": "high"}, source="support"
    )


@workflow(name="t-waiter")
async def waiter(ctx: Context, ticket: int) -> object:
    try:
        event = await ctx.wait_for_event(
            {"detail-type": ["ticket_created"], "detail": {"ticket": [ticket]}},
            timeout=timedelta(hours=1),
        )
    except EventWaitTimedOut:
        return "no event"
    return event["detail"]


async def test_emitted_events_reach_a_waiting_run(env: TestEnvironment) -> None:
    waiting = await env.run(waiter, 7)
    other = await env.run(waiter, 8)
    assert waiting.status == RunStatus.SUSPENDED
    emitting = await env.run(emitter, 7)
    event_id = await env.result(emitting)
    waiting = await env.resume(waiting)
    assert await env.result(waiting) == {"ticket": 7, "priority": "high"}
    assert (await env.engine.store.get_run(other.run_id)).status == RunStatus.SUSPENDED
    [entry] = [e for e in await env.engine.store.list_events() if e.event["id"] == event_id]
    assert entry.event["run_id"] == emitting.run_id and entry.delivered_at is not None


async def test_event_wait_times_out(fake_env: TestEnvironment) -> None:
    run = await fake_env.run(waiter, 9)
    await fake_env.advance(timedelta(hours=1))
    assert await fake_env.result(await fake_env.resume(run)) == "no event"


@workflow(name="t-on-ticket")
async def on_ticket(ctx: Context, detail: dict[str, object]) -> str:
    return f"handled {detail['ticket']}"


async def test_rules_start_workflows_once_per_event(env: TestEnvironment) -> None:
    store = env.engine.store
    await store.put_rule(
        Rule(
            "tickets",
            {"detail-type": ["ticket_created"], "detail": {"priority": [{"anything-but": "low"}]}},
            "start_workflow",
            {"workflow": "t-on-ticket"},
        )
    )
    low = Event.new("ticket_created", {"ticket": 1, "priority": "low"}, source="test")
    high = Event.new("ticket_created", {"ticket": 2, "priority": "high"}, source="test")
    await env.engine.publish([low.to_dict(), high.to_dict()])
    await env.engine.publish([high.to_dict()])  # the same event again: deduplicated
    assert await relay_outbox(env.engine) == 2
    [started] = await store.list_runs(workflow="t-on-ticket")
    assert started.idempotency_key == f"rule:tickets:{high.id}"
    assert await env.result(await env.resume(started)) == "handled 2"


@workflow(name="t-webhook")
async def webhook(ctx: Context) -> object:
    callback = await ctx.create_callback(name="payment")
    await ctx.emit("payment_requested", {"token": callback.token})
    return await callback.result()


async def test_a_rule_completes_a_callback_from_an_event(env: TestEnvironment) -> None:
    await env.engine.store.put_rule(
        Rule(
            "payments",
            {"detail-type": ["payment_settled"]},
            "complete_callback",
            {"token_path": "detail.token"},
        )
    )
    run = await env.run(webhook)
    token = await env.token(run)
    settled = Event.new("payment_settled", {"token": token, "amount": 12}, source="psp")
    await env.engine.publish([settled.to_dict()])
    run = await env.resume(run)
    assert await env.result(run) == {"token": token, "amount": 12}


def test_rules_and_patterns_are_validated_when_defined() -> None:
    with pytest.raises(InvalidEventPattern):
        validate_rule(
            Rule(
                "bad",
                {"detail": {"n": [{"numeric": [">>", 1]}]}},
                "start_workflow",
                {"workflow": "x"},
            )
        )
    with pytest.raises(ConfigurationError, match="unknown target"):
        validate_rule(Rule("bad", {"source": ["x"]}, "send_fax", {}))


async def test_wait_for_event_rejects_a_malformed_pattern_in_the_workflow(
    env: TestEnvironment,
) -> None:
    @workflow(name="t-bad-pattern")
    async def bad(ctx: Context) -> None:
        await ctx.wait_for_event({"detail": {"n": [{"prefix": 5}]}})

    run = await env.run(bad)
    assert run.status == RunStatus.FAILED
    assert run.error is not None and run.error.type == "InvalidEventPattern"


def test_envelope_time_is_utc() -> None:
    event = Event.new("x", {}, source="s", time=datetime(2026, 1, 1, tzinfo=UTC))
    assert event.to_dict()["time"].endswith("Z")


async def test_a_stored_waiter_pattern_refused_today_fails_that_wait_only(
    env: TestEnvironment,
) -> None:
    """A pattern an older cadenza accepted (equal-bound range) must not stop the relay."""
    import json
    import sqlite3

    stale = await env.run(waiter, 5)
    fresh = await env.run(waiter, 6)
    [callback] = await env.engine.store.load_callbacks(stale.run_id)
    refused = {"detail": {"ticket": [{"numeric": [">=", 5, "<=", 5]}]}}
    path = env.engine.store.url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as db:
        db.execute(
            "UPDATE callbacks SET pattern = ? WHERE callback_id = ?",
            (json.dumps(refused), callback.callback_id),
        )
    await env.run(emitter, 6)
    assert await env.result(await env.resume(fresh)) == {"ticket": 6, "priority": "high"}
    [callback] = await env.engine.store.load_callbacks(stale.run_id)
    assert callback.status == "FAILED" and "pattern is invalid" in (callback.error.message or "")
    # The waiting run learns it at once, as a wait that ended without its event.
    assert await env.result(await env.resume(stale)) == "no event"
