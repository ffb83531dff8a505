"""contract-router: the classifier's label picks the handler; a low confidence or an
off-label answer goes to the general desk; replay asks no model again."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from cadenza import Context, RunStatus, workflow
from cadenza.agents import register_model
from cadenza.examples.contract_router import FALLBACK, ROUTES, DeskRequest, contract_router, handle
from cadenza.testing import TestEnvironment
from cadenza.testing.scripted_model import ScriptedModel

CONTRACT = "Can you help me review my contract terms?"


def desk_model(*labels: dict[str, Any]) -> ScriptedModel:
    """The classifier answers ``labels`` in turn; each handler answers in its own words."""
    model = ScriptedModel(name="scripted:desk", default="Restart the app, then the phone.")
    model.on("legal assistant", "Check the termination and liability clauses first.")
    model.on("schedule this request", "Which day suits you?")
    model.on("front desk", "A colleague will follow up tomorrow.")
    model.reply(*labels)
    register_model("scripted:desk", model)
    return model


async def routed(env: TestEnvironment, request: str = CONTRACT) -> dict[str, Any]:
    run = await env.run(contract_router, {"request": request, "model": "scripted:desk"})
    assert run.status == RunStatus.SUCCEEDED, run.error
    result: dict[str, Any] = await env.result(run)
    return result


@pytest.mark.parametrize(
    ("route", "answer"),
    [
        ("legal", "Check the termination and liability clauses first."),
        ("technical", "Restart the app, then the phone."),  # the Agent handler
        ("scheduling", "Which day suits you?"),
    ],
)
async def test_the_label_picks_the_handler(env: TestEnvironment, route: str, answer: str) -> None:
    model = desk_model({"route": route, "confidence": 0.92, "reason": "it says so"})
    result = await routed(env)
    assert result == {
        "route": route,
        "label": route,
        "confidence": 0.92,
        "fell_back": False,
        "reason": "it says so",
        "answer": answer,
    }
    # The label was constrained to the routes, and the request reached the classifier.
    classify = model.requests[0]
    assert classify.output_schema is not None
    assert classify.output_schema["properties"]["route"]["enum"] == list(ROUTES)
    assert CONTRACT in classify.messages[-1].content


async def test_a_label_below_the_threshold_falls_back(env: TestEnvironment) -> None:
    desk_model({"route": "legal", "confidence": 0.3})
    result = await routed(env)
    assert result["route"] == FALLBACK and result["fell_back"] is True
    assert result["label"] == "legal" and result["confidence"] == 0.3
    assert "below the threshold 0.50" in result["reason"]
    assert result["answer"] == "A colleague will follow up tomorrow."


async def test_an_answer_outside_the_routes_falls_back(env: TestEnvironment) -> None:
    # Off the label list twice (the first answer is sent back once to be repaired).
    model = desk_model(*[{"route": "cooking", "confidence": 0.99}] * 2)
    result = await routed(env)
    assert result["route"] == FALLBACK and result["fell_back"] is True
    assert result["label"] is None and result["confidence"] == 0.0
    assert "fits no route" in result["reason"] and "cooking" in result["reason"]
    assert "did not match" in model.requests[1].messages[-1].content  # the repair


@workflow(name="t-contract-router-wait")
async def route_then_wait(ctx: Context, request: DeskRequest) -> dict[str, Any]:
    answer = await handle(ctx, request)
    await ctx.wait(timedelta(hours=1))  # the resumed run replays the routing
    return answer


async def test_replay_after_a_wait_asks_no_model_again(fake_env: TestEnvironment) -> None:
    model = desk_model({"route": "legal", "confidence": 0.8})
    run = await fake_env.run(route_then_wait, {"request": CONTRACT, "model": "scripted:desk"})
    assert run.status == RunStatus.SUSPENDED
    asked = len(model.requests)
    assert asked == 2  # the classifier, then the legal handler
    await fake_env.advance(timedelta(hours=1))
    run = await fake_env.resume(run)
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert (await fake_env.result(run))["route"] == "legal"
    assert len(model.requests) == asked
    assert run.state["context"]["results"]["desk"]["status"] == "completed"
